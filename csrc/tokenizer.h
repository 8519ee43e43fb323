// The tokenizer core: a scanner that runs the tokenizer program compiled by
// gptfast/token_program.py (literal alternatives and repeated character
// classes, first match wins, as Python's `re` does), a vocabulary lookup and
// a counter. Long texts are cut at separator bytes and scanned in parallel.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "token_table.h"

namespace gptfast {

// Category bits; must match gptfast/token_program.py.
enum Category : uint32_t {
  kCatWord = 1,
  kCatDigit = 2,
  kCatSpace = 4,
  kCatNotWord = 8,
  kCatNotDigit = 16,
  kCatNotSpace = 32,
  kCatAnyButNewline = 64,
  kCatAny = 128,
};

// \w \d \s flags of a code point, exactly as Python's `re` classifies it.
uint8_t unicode_flags(uint32_t cp);

struct CharClass {
  bool negate = false;
  uint32_t categories = 0;
  std::vector<std::pair<uint32_t, uint32_t>> ranges;  // inclusive

  void finalize();  // fills the ASCII table; call after setting the fields
  bool matches(uint32_t cp) const { return cp < 128 ? ascii[cp] : matches_slow(cp); }
  bool matches_slow(uint32_t cp) const;

  // Membership of each byte value as a lone ASCII char; 0 for bytes >= 0x80,
  // which start multi-byte characters and take the slow test.
  uint8_t ascii[256] = {};
};

struct Branch {
  bool literal = false;
  std::string text;  // literal branches: the UTF-8 bytes to match
  CharClass cls;     // class branches
  int min_repeat = 1;
  int max_repeat = 1;  // -1: unlimited
};

struct EncodeResult {
  size_t count = 0;         // ids written
  int64_t unknown_at = -1;  // byte offset of the first token missing from the vocab
};

class Scanner {
 public:
  Scanner(std::vector<Branch> branches, const std::string& separators);

  void set_vocab(const std::vector<std::string>& tokens, int32_t unk_id);

  // Writes the ids of the tokens of s[0, n) to out, which must hold n ids
  // (a token is at least one byte). Stops at the first unknown token when
  // the vocabulary has no <UNK> (unk_id < 0) and reports where it is.
  // Id is uint16_t (vocabularies up to 65536) or int32_t.
  template <class Id>
  EncodeResult encode(const uint8_t* s, size_t n, int threads, Id* out) const;
  TokenTable count(const uint8_t* s, size_t n, int threads) const;
  std::vector<std::pair<size_t, size_t>> split(const uint8_t* s, size_t n) const;

 private:
  // End of the token starting at byte i, or i when nothing matches there.
  size_t match_at(const uint8_t* s, size_t i, size_t n) const;
  // End of the run of `br` whose first code point (len0 bytes) matched at i.
  size_t extend_run(const Branch& br, const uint8_t* s, size_t i, int len0, size_t n) const;
  template <class F>
  void scan(const uint8_t* s, size_t begin, size_t end, F&& on_token) const;
  // Id of token s[begin, end), -1 when absent; `limit` ends readable memory.
  int32_t lookup(const uint8_t* s, size_t begin, size_t end, const uint8_t* limit) const;
  template <class Id>
  EncodeResult encode_range(const uint8_t* s, size_t begin, size_t end, const uint8_t* limit, Id* out) const;
  template <class Id>
  EncodeResult encode_chars(const uint8_t* s, size_t begin, size_t end, const uint8_t* limit, Id* out) const;
  // Byte offsets [0, c1, ..., n) cutting s at separators into <= parts pieces.
  std::vector<size_t> chunk_bounds(const uint8_t* s, size_t n, int parts) const;

  std::vector<Branch> branches_;
  bool separator_[256] = {};
  bool literal_first_[256] = {};  // some literal branch starts with this byte
  bool ascii_dead_[128] = {};     // no branch can start at this ASCII char
  // For an ASCII char that starts no literal: the first class branch that
  // matches it when that branch cannot fail (min_repeat 1), else -1.
  int16_t ascii_sure_branch_[128] = {};
  // Char level: the id of each ASCII char that starts no literal, else -1
  // (filled by set_vocab) - the hot loop of char-level encoding.
  int32_t ascii_char_ids_[256] = {};
  // Char level, an ASCII byte that starts a special token: its own id, and
  // the first 8 bytes of the (at most kPrefixes) specials starting with it.
  // The hot loop sends it to the special-token test only when the next 8
  // bytes agree with one of them ("d" starts "don Quijote"; "de", "dos" and
  // "don " + anything but "Quij" cannot be that special).
  static constexpr int kPrefixes = 2;
  struct LiteralPrefixes {
    int n = 0;                     // > kPrefixes: too many, always test
    uint64_t bytes[kPrefixes] = {};
    uint64_t mask[kPrefixes] = {};  // 0xFF where the special has a byte
  };
  int32_t literal_first_ids_[128] = {};
  LiteralPrefixes literal_prefixes_[128];
  // Same for two-byte characters (U+0080..U+07FF: Latin accents, Greek,
  // Cyrillic...), indexed by code point, so accented text stays in the loop.
  std::vector<int32_t> two_byte_char_ids_ = std::vector<int32_t>(0x800, -1);
  // Char-level programs (literals, then one single "any character" class)
  // take a dedicated loop with direct code point lookups.
  bool char_level_ = false;

  TokenTable vocab_;
  std::vector<int32_t> codepoint_ids_;  // single-code-point tokens, -1 when absent
  int32_t unk_id_ = -1;
};

}  // namespace gptfast
