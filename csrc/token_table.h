// Open-addressing hash table from token bytes to a 32-bit value: the
// vocabulary (token -> id) and the counter (token -> count) of the tokenizer.
//
// Lookups are the hot spot of word-level encoding and mostly cache misses,
// so slots are small (24 bytes) and carry the key's first 16 bytes inline:
// a token of up to 16 bytes (nearly every word) is found with one memory
// access and two 8-byte compares. Longer keys keep bytes 16.. in an arena.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace gptfast {

// The first 16 bytes of a key, zero padded, as two words.
struct KeyHead {
  uint64_t w0 = 0, w1 = 0;
};

// `limit` is the end of readable memory: reading 16 bytes at once is
// allowed when they stay below it, which avoids a variable-length copy.
inline KeyHead key_head(const uint8_t* p, size_t n, const uint8_t* limit) {
  KeyHead k;
  if (p + 16 <= limit) {
    std::memcpy(&k.w0, p, 8);
    std::memcpy(&k.w1, p + 8, 8);
    if (n < 8) {
      k.w0 &= (uint64_t{1} << (8 * n)) - 1;  // n == 0 gives 0: fine
      k.w1 = 0;
    } else if (n < 16) {
      k.w1 &= n == 8 ? 0 : (uint64_t{1} << (8 * (n - 8))) - 1;
    }
  } else {
    uint8_t buf[16] = {};
    std::memcpy(buf, p, std::min<size_t>(n, 16));
    std::memcpy(&k.w0, buf, 8);
    std::memcpy(&k.w1, buf + 8, 8);
  }
  return k;
}

// `tail` holds bytes 16.. of the key (n - 16 of them) when n > 16.
inline uint64_t hash_key(const KeyHead& k, const uint8_t* tail, size_t n) {
  uint64_t h = (k.w0 * 0x9E3779B97F4A7C15ull) ^ (k.w1 * 0xC2B2AE3D27D4EB4Full) ^ (n * 0xFF51AFD7ED558CCDull);
  for (size_t i = 16; i < n; i += 8) {
    uint64_t w = 0;
    std::memcpy(&w, tail + (i - 16), std::min<size_t>(8, n - i));
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
  }
  h ^= h >> 31;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 29;
  return h;
}

class TokenTable {
 public:
  explicit TokenTable(size_t expected = 1024) { resize_slots(capacity_for(expected)); }

  // A lookup split in two so callers can overlap the cache miss on the slot
  // with other work: prepare() hashes and prefetches, find() probes.
  struct Probe {
    KeyHead head;
    const uint8_t* key;
    size_t len;
    size_t slot;
  };

  Probe prepare(const uint8_t* p, size_t n, const uint8_t* limit) const {
    Probe q{key_head(p, n, limit), p, n, 0};
    q.slot = hash_key(q.head, p + 16, n) & mask_;
    __builtin_prefetch(&slots_[q.slot]);
    return q;
  }

  const uint32_t* find(const Probe& q) const {
    for (size_t i = q.slot;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.len == kEmpty) return nullptr;
      if (same_key(i, q.head, q.key, q.len)) return &s.value;
    }
  }

  // Pointer to the value of key p[0, n), or nullptr.
  const uint32_t* find(const uint8_t* p, size_t n, const uint8_t* limit) const {
    return find(prepare(p, n, limit));
  }

  // Value slot for key p[0, n), inserted with `initial` when absent.
  uint32_t& find_or_insert(const uint8_t* p, size_t n, const uint8_t* limit, uint32_t initial) {
    const KeyHead k = key_head(p, n, limit);
    for (size_t i = hash_key(k, p + 16, n) & mask_;; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.len == kEmpty) {
        if ((size_ + 1) * 4 > slots_.size() * 3) {  // keep the load under 3/4
          grow();
          return find_or_insert(p, n, limit, initial);
        }
        s.head = k;
        s.len = static_cast<uint32_t>(n);
        s.value = initial;
        if (n > 16) {
          tail_offset_[i] = arena_.size();
          arena_.append(reinterpret_cast<const char*>(p) + 16, n - 16);
        }
        ++size_;
        return s.value;
      }
      if (same_key(i, k, p, n)) return s.value;
    }
  }

  size_t size() const { return size_; }

  template <class F>
  void for_each(F&& f) const {  // f(std::string_view key, uint32_t value)
    std::string key;
    for (size_t i = 0; i < slots_.size(); ++i) {
      const Slot& s = slots_[i];
      if (s.len == kEmpty) continue;
      key.assign(reinterpret_cast<const char*>(&s.head), std::min<size_t>(s.len, 16));
      if (s.len > 16) key.append(arena_, tail_offset_[i], s.len - 16);
      f(std::string_view(key), s.value);
    }
  }

 private:
  static constexpr uint32_t kEmpty = 0xFFFFFFFFu;
  struct Slot {
    KeyHead head;
    uint32_t len = kEmpty;
    uint32_t value = 0;
  };

  bool same_key(size_t i, const KeyHead& k, const uint8_t* p, size_t n) const {
    const Slot& s = slots_[i];
    if (s.len != n || s.head.w0 != k.w0 || s.head.w1 != k.w1) return false;
    return n <= 16 || std::memcmp(arena_.data() + tail_offset_[i], p + 16, n - 16) == 0;
  }

  static size_t capacity_for(size_t n) {
    size_t c = 16;
    while (c * 3 < 4 * n + 4) c *= 2;
    return c;
  }

  void resize_slots(size_t capacity) {
    slots_.assign(capacity, Slot{});
    tail_offset_.assign(capacity, 0);
    mask_ = capacity - 1;
  }

  void grow() {
    std::vector<Slot> old_slots;
    std::vector<uint64_t> old_tails;
    old_slots.swap(slots_);
    old_tails.swap(tail_offset_);
    resize_slots(old_slots.size() * 2);
    for (size_t j = 0; j < old_slots.size(); ++j) {
      const Slot& s = old_slots[j];
      if (s.len == kEmpty) continue;
      const auto* tail = reinterpret_cast<const uint8_t*>(arena_.data()) + old_tails[j];
      size_t i = hash_key(s.head, tail, s.len) & mask_;
      while (slots_[i].len != kEmpty) i = (i + 1) & mask_;
      slots_[i] = s;
      tail_offset_[i] = old_tails[j];
    }
  }

  std::vector<Slot> slots_;
  std::vector<uint64_t> tail_offset_;  // per slot: arena offset of bytes 16.. of long keys
  std::string arena_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

}  // namespace gptfast
