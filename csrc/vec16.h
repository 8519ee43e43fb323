// 16 float lanes for the CPU training kernels (attention, cross-entropy):
// one AVX-512 register, two AVX2 registers, or plain floats, plus the
// row reductions and the exp they share.  Header-only: everything inlines
// into the loops that use it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>

#include "simd.h"

namespace gptfast {

// a * b + c, fused where the target has an FMA instruction; elsewhere
// std::fma is a library call (~50x slower kernels in a portable x86 build).
inline float madd(float a, float b, float c) {
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

// exp(x) for x <= 0 within ~2 ulp (Cephes' expf polynomial after x = n ln2
// + r), written as plain float code so that loops over it vectorize.
inline float exp_nonpositive(float x) {
  x = std::max(x, -87.0f);
  const float n = std::nearbyint(x * 1.44269504088896341f);
  float r = madd(n, -0.693359375f, x);
  r = madd(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = madd(p, r, 1.3981999507e-3f);
  p = madd(p, r, 8.3334519073e-3f);
  p = madd(p, r, 4.1665795894e-2f);
  p = madd(p, r, 1.6666665459e-1f);
  p = madd(p, r, 5.0000001201e-1f);
  const float y = madd(p, r * r, r) + 1.0f;
  const int32_t e = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &e, 4);
  return y * scale;
}

// V16: one AVX-512 register, two AVX2 registers, or 16 plain floats.
#if GPTFAST_AVX512
struct V16 {
  __m512 v;
};
inline V16 zero16() { return {_mm512_setzero_ps()}; }
inline V16 load16(const float* p) { return {_mm512_loadu_ps(p)}; }
inline void store16(float* p, V16 x) { _mm512_storeu_ps(p, x.v); }
inline V16 fma16(float a, V16 b, V16 c) { return {_mm512_fmadd_ps(_mm512_set1_ps(a), b.v, c.v)}; }
inline V16 fill16(float a) { return {_mm512_set1_ps(a)}; }
inline V16 max16(V16 a, V16 b) { return {_mm512_max_ps(a.v, b.v)}; }
inline V16 add16(V16 a, V16 b) { return {_mm512_add_ps(a.v, b.v)}; }
inline V16 mul_add16(V16 a, V16 b, V16 c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
inline float reduce_max16(V16 a) { return _mm512_reduce_max_ps(a.v); }
inline float reduce_add16(V16 a) { return _mm512_reduce_add_ps(a.v); }
#elif GPTFAST_SIMD
struct V16 {
  __m256 lo, hi;
};
inline V16 zero16() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
inline V16 load16(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
inline void store16(float* p, V16 x) {
  _mm256_storeu_ps(p, x.lo);
  _mm256_storeu_ps(p + 8, x.hi);
}
inline V16 fma16(float a, V16 b, V16 c) {
  const __m256 av = _mm256_set1_ps(a);
  return {_mm256_fmadd_ps(av, b.lo, c.lo), _mm256_fmadd_ps(av, b.hi, c.hi)};
}
inline V16 fill16(float a) { return {_mm256_set1_ps(a), _mm256_set1_ps(a)}; }
inline V16 max16(V16 a, V16 b) { return {_mm256_max_ps(a.lo, b.lo), _mm256_max_ps(a.hi, b.hi)}; }
inline V16 add16(V16 a, V16 b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
inline V16 mul_add16(V16 a, V16 b, V16 c) { return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)}; }
inline float reduce_max16(V16 a) {
  float x[16];
  store16(x, a);
  return *std::max_element(x, x + 16);
}
inline float reduce_add16(V16 a) {
  float x[16];
  store16(x, a);
  return std::accumulate(x, x + 16, 0.0f);
}
#else
struct V16 {
  float x[16];
};
inline V16 zero16() { return {}; }
inline V16 load16(const float* p) {
  V16 r;
  std::copy(p, p + 16, r.x);
  return r;
}
inline void store16(float* p, V16 x) { std::copy(x.x, x.x + 16, p); }
inline V16 fma16(float a, V16 b, V16 c) {
  for (int i = 0; i < 16; ++i) c.x[i] = madd(a, b.x[i], c.x[i]);
  return c;
}
inline V16 fill16(float a) {
  V16 r;
  std::fill(r.x, r.x + 16, a);
  return r;
}
inline V16 max16(V16 a, V16 b) {
  for (int i = 0; i < 16; ++i) a.x[i] = std::max(a.x[i], b.x[i]);
  return a;
}
inline V16 add16(V16 a, V16 b) {
  for (int i = 0; i < 16; ++i) a.x[i] += b.x[i];
  return a;
}
inline V16 mul_add16(V16 a, V16 b, V16 c) {
  for (int i = 0; i < 16; ++i) c.x[i] = madd(a.x[i], b.x[i], c.x[i]);
  return c;
}
inline float reduce_max16(V16 a) { return *std::max_element(a.x, a.x + 16); }
inline float reduce_add16(V16 a) { return std::accumulate(a.x, a.x + 16, 0.0f); }
#endif

// Reductions over a row, 16 lanes at a time: written as plain loops they
// run one element per FP latency (~4 cycles), since the compiler may not
// reorder float max and sum.
inline float row_max(const float* x, int n) {
  V16 m = fill16(-std::numeric_limits<float>::infinity());
  int j = 0;
  for (; j + 16 <= n; j += 16) m = max16(m, load16(x + j));
  float r = reduce_max16(m);
  for (; j < n; ++j) r = std::max(r, x[j]);
  return r;
}

inline float row_sum(const float* x, int n) {
  V16 s = zero16();
  int j = 0;
  for (; j + 16 <= n; j += 16) s = add16(s, load16(x + j));
  float r = reduce_add16(s);
  for (; j < n; ++j) r += x[j];
  return r;
}

inline float dot(const float* a, const float* b, int n) {
  V16 s = zero16();
  int j = 0;
  for (; j + 16 <= n; j += 16) s = mul_add16(load16(a + j), load16(b + j), s);
  float r = reduce_add16(s);
  for (; j < n; ++j) r = madd(a[j], b[j], r);
  return r;
}

}  // namespace gptfast
