// UTF-8 decoding for the scanner. Input comes from CPython's own UTF-8
// encoder (PyUnicode_AsUTF8AndSize), so it is always well formed and the
// decoder needs no validation.
#pragma once
#include <cstddef>
#include <cstdint>

namespace gptfast {

// Decode the code point starting at s[i]; stores its byte length in *len.
inline uint32_t decode_utf8(const uint8_t* s, size_t i, int* len) {
  const uint8_t b0 = s[i];
  if (b0 < 0x80) {
    *len = 1;
    return b0;
  }
  if (b0 < 0xE0) {
    *len = 2;
    return ((b0 & 0x1Fu) << 6) | (s[i + 1] & 0x3Fu);
  }
  if (b0 < 0xF0) {
    *len = 3;
    return ((b0 & 0x0Fu) << 12) | ((s[i + 1] & 0x3Fu) << 6) | (s[i + 2] & 0x3Fu);
  }
  *len = 4;
  return ((b0 & 0x07u) << 18) | ((s[i + 1] & 0x3Fu) << 12) | ((s[i + 2] & 0x3Fu) << 6) |
         (s[i + 3] & 0x3Fu);
}

// Number of code points in s[0, n): counts the bytes that start one.
inline size_t count_codepoints(const uint8_t* s, size_t n) {
  size_t count = 0;
  for (size_t i = 0; i < n; ++i) count += (s[i] & 0xC0) != 0x80;
  return count;
}

}  // namespace gptfast
