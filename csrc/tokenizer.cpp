#include "tokenizer.h"

#include <algorithm>
#include <cstring>
#include <system_error>
#include <thread>

#include "unicode_tables.h"  // generated at build time by gen_unicode_tables.py
#include "utf8.h"

#if defined(__GNUC__)
#define GPTFAST_HOT_INLINE __attribute__((always_inline)) inline
#else
#define GPTFAST_HOT_INLINE inline
#endif

namespace gptfast {

uint8_t unicode_flags(uint32_t cp) {
  if (cp > 0x10FFFF) return 0;
  using namespace unicode_tables;
  const uint32_t block = kStage1[cp >> kBlockShift];
  return kStage2[(block << kBlockShift) | (cp & ((1u << kBlockShift) - 1))];
}

bool CharClass::matches_slow(uint32_t cp) const {
  bool hit = false;
  for (const auto& r : ranges) hit |= (r.first <= cp && cp <= r.second);
  if (!hit && categories) {
    const uint8_t f = unicode_flags(cp);
    using namespace unicode_tables;
    hit = ((categories & kCatWord) && (f & kWord)) || ((categories & kCatDigit) && (f & kDigit)) ||
          ((categories & kCatSpace) && (f & kSpace)) ||
          ((categories & kCatNotWord) && !(f & kWord)) ||
          ((categories & kCatNotDigit) && !(f & kDigit)) ||
          ((categories & kCatNotSpace) && !(f & kSpace)) ||
          ((categories & kCatAnyButNewline) && cp != '\n') || (categories & kCatAny);
  }
  return hit != negate;
}

void CharClass::finalize() {
  for (uint32_t c = 0; c < 128; ++c) ascii[c] = matches_slow(c) ? 1 : 0;
}

Scanner::Scanner(std::vector<Branch> branches, const std::string& separators)
    : branches_(std::move(branches)) {
  for (unsigned char c : separators) separator_[c] = true;
  for (Branch& b : branches_) {
    if (b.literal) {
      literal_first_[static_cast<uint8_t>(b.text[0])] = true;
    } else {
      b.cls.finalize();
    }
  }
  for (uint32_t c = 0; c < 128; ++c) {
    bool dead = !literal_first_[c];
    for (const Branch& b : branches_) dead = dead && (b.literal || !b.cls.ascii[c]);
    ascii_dead_[c] = dead;
    ascii_sure_branch_[c] = -1;
    for (size_t b = 0; b < branches_.size() && !literal_first_[c]; ++b) {
      if (branches_[b].literal || !branches_[b].cls.ascii[c]) continue;
      if (branches_[b].min_repeat == 1) ascii_sure_branch_[c] = static_cast<int16_t>(b);
      break;
    }
  }
  const Branch& last = branches_.back();
  char_level_ = !last.literal && last.cls.categories == kCatAny && !last.cls.negate &&
                last.cls.ranges.empty() && last.max_repeat == 1;
  for (size_t i = 0; i + 1 < branches_.size(); ++i) char_level_ = char_level_ && branches_[i].literal;
}

void Scanner::set_vocab(const std::vector<std::string>& tokens, int32_t unk_id) {
  vocab_ = TokenTable(tokens.size());
  codepoint_ids_.clear();
  unk_id_ = unk_id;
  for (size_t id = 0; id < tokens.size(); ++id) {
    const auto* p = reinterpret_cast<const uint8_t*>(tokens[id].data());
    const size_t n = tokens[id].size();
    int len = 0;
    const uint32_t cp = n ? decode_utf8(p, 0, &len) : 0;
    if (n && static_cast<size_t>(len) == n) {
      if (cp >= codepoint_ids_.size()) codepoint_ids_.resize(cp + 1, -1);
      codepoint_ids_[cp] = static_cast<int32_t>(id);
    } else {
      vocab_.find_or_insert(p, n, p + n, static_cast<uint32_t>(id));
    }
  }
  for (uint32_t c = 0; c < 256; ++c) {
    const bool plain = c < 128 && !literal_first_[c] && c < codepoint_ids_.size();
    ascii_char_ids_[c] = plain ? codepoint_ids_[c] : -1;
  }
  for (uint32_t c = 0; c < 128; ++c) {
    literal_first_ids_[c] = literal_first_[c] && c < codepoint_ids_.size() ? codepoint_ids_[c] : -1;
    literal_prefixes_[c] = LiteralPrefixes{};
  }
  for (size_t l = 0; l + 1 < branches_.size(); ++l) {
    const std::string& t = branches_[l].text;
    const uint8_t first = static_cast<uint8_t>(t[0]);
    if (first >= 128) continue;
    LiteralPrefixes& p = literal_prefixes_[first];
    if (p.n++ >= kPrefixes) continue;
    // Both words are laid out as the bytes in memory (memcpy), so comparing
    // them with 8 bytes of text loaded the same way needs no byte order.
    const size_t m = std::min<size_t>(8, t.size());
    uint8_t ones[8] = {};
    std::fill(ones, ones + m, 0xFF);
    std::memcpy(&p.bytes[p.n - 1], t.data(), m);
    std::memcpy(&p.mask[p.n - 1], ones, 8);
  }
  for (uint32_t cp = 0x80; cp < 0x800; ++cp) {
    const uint8_t lead = static_cast<uint8_t>(0xC0 | (cp >> 6));
    const bool plain = !literal_first_[lead] && cp < codepoint_ids_.size();
    two_byte_char_ids_[cp] = plain ? codepoint_ids_[cp] : -1;
  }
}

// Short literals: an inline byte loop beats a call to memcmp.
static inline bool starts_with(const uint8_t* s, size_t avail, const std::string& lit) {
  if (avail < lit.size()) return false;
  for (size_t k = 0; k < lit.size(); ++k)
    if (s[k] != static_cast<uint8_t>(lit[k])) return false;
  return true;
}

// Inlined into the scan loop: it runs once per token.
GPTFAST_HOT_INLINE size_t Scanner::extend_run(const Branch& br, const uint8_t* s, size_t i, int len0, size_t n) const {
  size_t j = i + len0;
  if (br.max_repeat == 1) return j;
  if (br.max_repeat < 0 && br.min_repeat <= 1) {  // "+": no counting needed
    for (;;) {
      // Eight bytes per step, branch-free: a byte-at-a-time loop pays one
      // branch misprediction per token at the end of every word.
      while (j + 8 <= n) {
        uint32_t members = 0;
        for (int k = 0; k < 8; ++k) members |= uint32_t{br.cls.ascii[s[j + k]]} << k;
        if (members != 0xFF) {
          j += __builtin_ctz(~members);
          break;
        }
        j += 8;
      }
      if (j + 8 > n) {  // the last few bytes of the text
        while (j < n && br.cls.ascii[s[j]]) ++j;
      }
      if (j >= n || s[j] < 0x80) return j;  // stopped at an ASCII non-member
      int len = 0;  // a multi-byte character: the full Unicode test
      if (!br.cls.matches(decode_utf8(s, j, &len))) return j;
      j += len;
    }
  }
  const size_t max = br.max_repeat < 0 ? SIZE_MAX : static_cast<size_t>(br.max_repeat);
  size_t count = 1;
  while (j < n && count < max) {
    int len = 1;
    const uint32_t cp = s[j] < 0x80 ? s[j] : decode_utf8(s, j, &len);
    if (!br.cls.matches(cp)) break;
    j += len;
    ++count;
  }
  return count >= static_cast<size_t>(br.min_repeat) ? j : i;
}

GPTFAST_HOT_INLINE size_t Scanner::match_at(const uint8_t* s, size_t i, size_t n) const {
  const uint8_t b0 = s[i];
  if (b0 < 0x80) {
    if (ascii_dead_[b0]) return i;
    const int sure = ascii_sure_branch_[b0];
    if (sure >= 0) return extend_run(branches_[sure], s, i, 1, n);
  }
  int len0 = 1;
  const uint32_t cp0 = b0 < 0x80 ? b0 : decode_utf8(s, i, &len0);
  for (const Branch& br : branches_) {
    if (br.literal) {
      if (literal_first_[b0] && starts_with(s + i, n - i, br.text)) return i + br.text.size();
      continue;
    }
    if (!br.cls.matches(cp0)) continue;
    const size_t j = extend_run(br, s, i, len0, n);
    if (j != i) return j;
  }
  return i;
}

template <class F>
void Scanner::scan(const uint8_t* s, size_t begin, size_t end, F&& on_token) const {
  size_t i = begin;
  while (i < end) {
    while (s[i] < 0x80 && ascii_dead_[s[i]]) {  // whitespace between tokens
      if (++i == end) return;
    }
    const size_t j = match_at(s, i, end);
    if (j == i) {  // no alternative matches: skip one character, as re does
      const uint8_t b = s[i];
      i += b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
      continue;
    }
    if (!on_token(i, j)) return;
    i = j;
  }
}

int32_t Scanner::lookup(const uint8_t* s, size_t begin, size_t end, const uint8_t* limit) const {
  const size_t n = end - begin;
  const uint8_t b0 = s[begin];
  const size_t first_len = b0 < 0x80 ? 1 : b0 < 0xE0 ? 2 : b0 < 0xF0 ? 3 : 4;
  if (first_len == n) {  // a single code point: direct table
    int len = 0;
    const uint32_t cp = n == 1 ? b0 : decode_utf8(s, begin, &len);
    return cp < codepoint_ids_.size() ? codepoint_ids_[cp] : -1;
  }
  const uint32_t* id = vocab_.find(s + begin, n, limit);
  return id ? static_cast<int32_t>(*id) : -1;
}

template <class Id>
EncodeResult Scanner::encode_range(const uint8_t* s, size_t begin, size_t end, const uint8_t* limit,
                                   Id* out) const {
  // Software pipelining: a token's hash slot is prefetched when it is
  // scanned and probed only after the next token has been scanned, so the
  // scan hides the cache miss of the lookup (vocabularies of 10k+ words
  // do not fit in L2).
  EncodeResult r;
  struct Pending {
    size_t at;                // byte offset of the token
    int32_t id;               // resolved id, or kProbe
    TokenTable::Probe probe;  // valid when id == kProbe
  };
  constexpr int32_t kProbe = -2, kNone = -3;
  Pending pending{0, kNone, {}};
  auto resolve = [&](const Pending& p) {
    int32_t id = p.id;
    if (id == kProbe) {
      const uint32_t* v = vocab_.find(p.probe);
      id = v ? static_cast<int32_t>(*v) : -1;
    }
    if (id < 0) id = unk_id_;
    if (id < 0) {
      r.unknown_at = static_cast<int64_t>(p.at);
      return false;
    }
    out[r.count++] = static_cast<Id>(id);
    return true;
  };
  scan(s, begin, end, [&](size_t a, size_t b) {
    Pending next{a, kProbe, {}};
    const uint8_t b0 = s[a];
    const size_t first_len = b0 < 0x80 ? 1 : b0 < 0xE0 ? 2 : b0 < 0xF0 ? 3 : 4;
    if (first_len == b - a) {  // one code point: direct table, nothing to hide
      int len = 0;
      const uint32_t cp = first_len == 1 ? b0 : decode_utf8(s, a, &len);
      next.id = cp < codepoint_ids_.size() ? codepoint_ids_[cp] : -1;
    } else {
      next.probe = vocab_.prepare(s + a, b - a, limit);
    }
    if (pending.id != kNone && !resolve(pending)) return false;
    pending = next;
    return true;
  });
  if (pending.id != kNone && r.unknown_at < 0) resolve(pending);
  return r;
}

template <class Id>
EncodeResult Scanner::encode_chars(const uint8_t* s, size_t begin, size_t end, const uint8_t* limit,
                                   Id* out) const {
  EncodeResult r;
  size_t k = 0;
  const int32_t* cp_ids = codepoint_ids_.data();
  const size_t n_cp = codepoint_ids_.size();
  const size_t n_literals = branches_.size() - 1;
  size_t i = begin;
  while (i < end) {
    // Hot loop: one- and two-byte characters that start no special token
    // and are in the vocabulary; anything else takes the general path below.
    while (i < end) {
      const uint8_t b = s[i];
      int32_t id;
      if (b < 0x80) {
        if ((id = ascii_char_ids_[b]) < 0) {
          // A byte that starts a special: the general path only when the
          // next 8 bytes could be one (near a chunk's end, always).
          if ((id = literal_first_ids_[b]) < 0 || i + 8 > end) break;
          const LiteralPrefixes& p = literal_prefixes_[b];
          if (p.n > kPrefixes) break;
          uint64_t w;
          std::memcpy(&w, s + i, 8);
          bool maybe = false;
          for (int q = 0; q < p.n; ++q) maybe |= ((w ^ p.bytes[q]) & p.mask[q]) == 0;
          if (maybe) break;
        }
        ++i;
      } else if ((b & 0xE0) == 0xC0 && i + 1 < end) {
        if ((id = two_byte_char_ids_[((b & 0x1Fu) << 6) | (s[i + 1] & 0x3Fu)]) < 0) break;
        i += 2;
      } else {
        break;
      }
      out[k++] = static_cast<Id>(id);
    }
    if (i >= end) break;
    const uint8_t b0 = s[i];
    if (literal_first_[b0]) {  // specials first, in list order
      size_t matched = 0;
      for (size_t l = 0; l < n_literals && !matched; ++l) {
        const std::string& t = branches_[l].text;
        if (starts_with(s + i, end - i, t)) matched = t.size();
      }
      if (matched) {
        const int32_t id = lookup(s, i, i + matched, limit);
        if (id < 0 && unk_id_ < 0) {
          r.unknown_at = static_cast<int64_t>(i);
          break;
        }
        out[k++] = static_cast<Id>(id < 0 ? unk_id_ : id);
        i += matched;
        continue;
      }
    }
    int len = 1;
    const uint32_t cp = b0 < 0x80 ? b0 : decode_utf8(s, i, &len);
    int32_t id = cp < n_cp ? cp_ids[cp] : -1;
    if (id < 0) id = unk_id_;
    if (id < 0) {
      r.unknown_at = static_cast<int64_t>(i);
      break;
    }
    out[k++] = static_cast<Id>(id);
    i += len;
  }
  r.count = k;
  return r;
}

std::vector<size_t> Scanner::chunk_bounds(const uint8_t* s, size_t n, int parts) const {
  std::vector<size_t> bounds{0};
  // Small inputs are not worth a thread; without separators no cut is safe.
  constexpr size_t kMinChunk = 1 << 20;
  bool any_separator = false;
  for (bool b : separator_) any_separator |= b;
  if (parts > 1 && any_separator && n >= 2 * kMinChunk) {
    parts = static_cast<int>(std::min<size_t>(parts, n / kMinChunk));
    for (int k = 1; k < parts; ++k) {
      size_t cut = std::max(bounds.back(), n / parts * k);
      while (cut < n && !separator_[s[cut]]) ++cut;
      if (cut + 1 >= n) break;
      bounds.push_back(cut + 1);  // right after the separator
    }
  }
  bounds.push_back(n);
  return bounds;
}

template <class Work>
static void run_parallel(size_t parts, Work&& work) {
  if (parts == 1) {
    work(0);
    return;
  }
  std::vector<std::thread> pool;
  size_t started = 1;  // parts 1..started-1 run on their own threads
  try {
    for (; started < parts; ++started) pool.emplace_back(work, started);
  } catch (const std::system_error&) {
    // The system refused a thread: this one runs the parts left (same result).
  }
  work(0);
  for (size_t p = started; p < parts; ++p) work(p);
  for (auto& t : pool) t.join();
}

template <class Id>
EncodeResult Scanner::encode(const uint8_t* s, size_t n, int threads, Id* out) const {
  const std::vector<size_t> bounds = chunk_bounds(s, n, threads);
  const size_t parts = bounds.size() - 1;
  std::vector<EncodeResult> results(parts);
  // Part p writes from out + bounds[p]: a part of b bytes has at most b
  // tokens, so the parts never overlap; they are compacted afterwards.
  run_parallel(parts, [&](size_t p) {
    Id* dst = out + bounds[p];
    results[p] = char_level_ ? encode_chars(s, bounds[p], bounds[p + 1], s + n, dst)
                             : encode_range(s, bounds[p], bounds[p + 1], s + n, dst);
  });
  EncodeResult total = results[0];
  for (size_t p = 1; p < parts && total.unknown_at < 0; ++p) {
    std::memmove(out + total.count, out + bounds[p], results[p].count * sizeof(Id));
    total.count += results[p].count;
    total.unknown_at = results[p].unknown_at;
  }
  return total;
}

template EncodeResult Scanner::encode<uint16_t>(const uint8_t*, size_t, int, uint16_t*) const;
template EncodeResult Scanner::encode<int32_t>(const uint8_t*, size_t, int, int32_t*) const;

TokenTable Scanner::count(const uint8_t* s, size_t n, int threads) const {
  const std::vector<size_t> bounds = chunk_bounds(s, n, threads);
  const size_t parts = bounds.size() - 1;
  std::vector<TokenTable> tables(parts);
  run_parallel(parts, [&](size_t p) {
    TokenTable& t = tables[p];
    scan(s, bounds[p], bounds[p + 1], [&](size_t a, size_t b) {
      ++t.find_or_insert(s + a, b - a, s + n, 0);
      return true;
    });
  });
  for (size_t p = 1; p < parts; ++p) {
    tables[p].for_each([&](std::string_view key, uint32_t c) {
      const auto* k = reinterpret_cast<const uint8_t*>(key.data());
      tables[0].find_or_insert(k, key.size(), k + key.size(), 0) += c;
    });
  }
  return std::move(tables[0]);
}

std::vector<std::pair<size_t, size_t>> Scanner::split(const uint8_t* s, size_t n) const {
  std::vector<std::pair<size_t, size_t>> spans;
  scan(s, 0, n, [&](size_t a, size_t b) {
    spans.emplace_back(a, b);
    return true;
  });
  return spans;
}

}  // namespace gptfast
