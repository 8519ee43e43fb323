#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "storage.h"

namespace gptfast {

#if GPTFAST_SIMD
namespace {

// Every score is reduced by the same tree, ((l0 + l1) + (l2 + l3)) +
// ((l4 + l5) + (l6 + l7)) over its 8 lanes, alone or 8 at a time (transposing
// hadds that amortize the shuffles over 8 keys).
inline float hsum1(__m256 v) {
  const __m256 t = _mm256_hadd_ps(v, v);  // l01 l23 . . | l45 l67 . .
  const __m256 u = _mm256_hadd_ps(t, t);  // l0123 . . . | l4567 . . .
  return _mm_cvtss_f32(_mm_add_ss(_mm256_castps256_ps128(u), _mm256_extractf128_ps(u, 1)));
}

inline __m256 hsum8(const __m256* v) {
  const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// exp(x) for x <= 0 (scores minus their max), within ~2 ulp: x = n ln2 + r
// (Cody-Waite split of ln2), exp(r) by Cephes' expf polynomial, times 2^n.
// Arguments below -87 give exp(-87) ~ 1e-38 instead of smaller values:
// nothing next to the maximum's exp(0) = 1.
inline __m256 exp_nonpositive(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  const __m256 y = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

template <auto Hint = _MM_HINT_T0, class E>  // (Hint: an enum in GCC, an int in Clang)
inline void prefetch_row(const E* row, int hs) {
  for (size_t b = 0; b < hs * sizeof(E); b += 64) _mm_prefetch(reinterpret_cast<const char*>(row) + b, Hint);
}

// s[i] = scale * q . K[i] for i < T.  A head's keys are a short stream (32 KB
// at T = 128) that the hardware prefetcher barely ramps up on, so keys are
// prefetched 16 rows ahead, and V's rows alongside, so they arrive while the
// scores are computed instead of after (~1.4x at batch 8 from DRAM).  V goes
// to L2 only: it is read after the scores, and the few misses a core tracks
// into L1 are left to K (~7% less attention time at batch 8 on an AVX-512
// EPYC, over six interleaved runs of each).  Without Prefetch (a prefill,
// whose rows are in the cache), the prefetches are left out: they were a
// load per 64 bytes, and a quarter of a prefill's attention time.
template <WeightType KV, bool Prefetch>
void scores(const float* q, const Elem<KV>* K, const Elem<KV>* V, int T, int hs, float scale, float* s) {
  const int hs8 = hs & ~7;
  int i = 0;
  for (; i + 8 <= T; i += 8) {  // 8 keys at a time: 8 independent FMA chains
    if constexpr (Prefetch) {
      for (int c = 0; c < 8; ++c) prefetch_row<_MM_HINT_T1>(V + static_cast<size_t>(i + c) * hs, hs);
      for (int c = 16; c < 24 && i + c < T; ++c) prefetch_row(K + static_cast<size_t>(i + c) * hs, hs);
    }
    __m256 acc[8];
    for (int c = 0; c < 8; ++c) acc[c] = _mm256_setzero_ps();
    for (int d = 0; d < hs8; d += 8) {
      const __m256 qv = _mm256_loadu_ps(q + d);
      for (int c = 0; c < 8; ++c)
        acc[c] = _mm256_fmadd_ps(qv, load8<KV>(K + static_cast<size_t>(i + c) * hs + d), acc[c]);
    }
    alignas(32) float sums[8];
    _mm256_store_ps(sums, hsum8(acc));
    for (int c = 0; c < 8; ++c) {
      const Elem<KV>* k = K + static_cast<size_t>(i + c) * hs;
      for (int d = hs8; d < hs; ++d) sums[c] = std::fma(q[d], to_float<KV>(k[d]), sums[c]);
      s[i + c] = sums[c] * scale;
    }
  }
  for (; i < T; ++i) {
    if constexpr (Prefetch) prefetch_row(V + static_cast<size_t>(i) * hs, hs);
    const Elem<KV>* k = K + static_cast<size_t>(i) * hs;
    __m256 acc = _mm256_setzero_ps();
    for (int d = 0; d < hs8; d += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), load8<KV>(k + d), acc);
    float sum = hsum1(acc);
    for (int d = hs8; d < hs; ++d) sum = std::fma(q[d], to_float<KV>(k[d]), sum);
    s[i] = sum * scale;
  }
}

// s[i] = exp(s[i] - max s); returns their sum (8 lanes, then the tail in order).
float softmax_numerators(float* s, int T) {
  __m256 mv = _mm256_set1_ps(-INFINITY);
  int i = 0;
  for (; i + 8 <= T; i += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(s + i));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, mv);
  float m = *std::max_element(lanes, lanes + 8);
  for (; i < T; ++i) m = std::max(m, s[i]);
  const __m256 m8 = _mm256_set1_ps(m);
  __m256 acc = _mm256_setzero_ps();
  for (i = 0; i + 8 <= T; i += 8) {
    const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(s + i), m8));
    _mm256_storeu_ps(s + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  float sum = hsum1(acc);
  if (i < T) {  // the tail through the same vector code, padded
    alignas(32) float tail[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    std::copy(s + i, s + T, tail);
    _mm256_store_ps(tail, exp_nonpositive(_mm256_sub_ps(_mm256_load_ps(tail), m8)));
    for (int j = 0; i + j < T; ++j) {
      s[i + j] = tail[j];
      sum += tail[j];
    }
  }
  return sum;
}

// out[d..d + 8R) += sum_i p[i] * V[i, d..d + 8R), the 8R dims held in R
// registers across all positions.
template <WeightType KV, int R>
void accumulate_block(const float* p, const Elem<KV>* V, int T, int hs, int d, float* out) {
  __m256 acc[R];
  for (int c = 0; c < R; ++c) acc[c] = _mm256_loadu_ps(out + d + 8 * c);
  for (int i = 0; i < T; ++i) {
    const __m256 pi = _mm256_set1_ps(p[i]);
    const Elem<KV>* v = V + static_cast<size_t>(i) * hs + d;
    for (int c = 0; c < R; ++c) acc[c] = _mm256_fmadd_ps(pi, load8<KV>(v + 8 * c), acc[c]);
  }
  for (int c = 0; c < R; ++c) _mm256_storeu_ps(out + d + 8 * c, acc[c]);
}

// out[d] += sum_i p[i] * V[i, d], over i in order: from out = 0, the
// values of T positions; called again with the next positions, it goes on
// with the same chain of fmas.  64 dims at a time where they fit: 8
// independent chains keep both FMA pipes busy (a prefill reads V from L2),
// and V's rows are read in one pass instead of one per 32 dims.
template <WeightType KV>
void accumulate_values(const float* p, const Elem<KV>* V, int T, int hs, float* out) {
  int d = 0;
  for (; d + 64 <= hs; d += 64) accumulate_block<KV, 8>(p, V, T, hs, d, out);
  for (; d + 32 <= hs; d += 32) accumulate_block<KV, 4>(p, V, T, hs, d, out);
  for (; d + 8 <= hs; d += 8) accumulate_block<KV, 1>(p, V, T, hs, d, out);
  for (; d < hs; ++d) {
    float acc = out[d];
    for (int i = 0; i < T; ++i) acc = std::fma(p[i], to_float<KV>(V[static_cast<size_t>(i) * hs + d]), acc);
    out[d] = acc;
  }
}

// Positions 0..P-1 from (K0, V0), P..T-1 from (K, V).  A score does not
// depend on the keys beside it (the same reduction alone or 8 at a time),
// and the values go on with the same chains, so where the rows are split
// changes no bit.
template <WeightType KV, bool Prefetch>
void attend_t(const float* q, const Elem<KV>* K0, const Elem<KV>* V0, int P, const Elem<KV>* K, const Elem<KV>* V,
              int T, int hs, float scale, float* s, float* out) {
  const size_t tail = static_cast<size_t>(P) * hs;
  scores<KV, Prefetch>(q, K0, V0, P, hs, scale, s);
  scores<KV, Prefetch>(q, K + tail, V + tail, T - P, hs, scale, s + P);
  const float inv = 1.0f / softmax_numerators(s, T);
  std::fill(out, out + hs, 0.0f);
  accumulate_values<KV>(s, V0, P, hs, out);
  accumulate_values<KV>(s + P, V + tail, T - P, hs, out);
  for (int d = 0; d < hs; ++d) out[d] *= inv;
}

}  // namespace

#else  // portable fallback

namespace {

template <WeightType KV, bool>
void attend_t(const float* q, const Elem<KV>* K0, const Elem<KV>* V0, int P, const Elem<KV>* K, const Elem<KV>* V,
              int T, int hs, float scale, float* s, float* out) {
  auto row = [&](const Elem<KV>* shared, const Elem<KV>* own, int i) {  // position i of K or V
    return (i < P ? shared : own) + static_cast<size_t>(i) * hs;
  };
  float m = -INFINITY;
  for (int i = 0; i < T; ++i) {
    const Elem<KV>* k = row(K0, K, i);
    float dot = 0.0f;
    for (int d = 0; d < hs; ++d) dot += q[d] * to_float<KV>(k[d]);
    s[i] = dot * scale;
    m = std::max(m, s[i]);
  }
  float sum = 0.0f;
  for (int i = 0; i < T; ++i) {
    s[i] = std::exp(s[i] - m);
    sum += s[i];
  }
  std::fill(out, out + hs, 0.0f);
  for (int i = 0; i < T; ++i)
    for (int d = 0; d < hs; ++d) out[d] += s[i] * to_float<KV>(row(V0, V, i)[d]);
  const float inv = 1.0f / sum;
  for (int d = 0; d < hs; ++d) out[d] *= inv;
}

}  // namespace

#endif

void attend(const CachedKV& kv, const float* q, int hs, float scale, float* scratch, float* out) {
  with_storage_type(kv.type, [&](auto type) {
    constexpr WeightType KV = decltype(type)::value;
    using E = Elem<KV>;
    const int P = kv.shared_K ? kv.shared : 0;
    const E *K = static_cast<const E*>(kv.K), *V = static_cast<const E*>(kv.V);
    const E* K0 = P ? static_cast<const E*>(kv.shared_K) : K;
    const E* V0 = P ? static_cast<const E*>(kv.shared_V) : V;
    auto run = kv.cold ? attend_t<KV, true> : attend_t<KV, false>;
    run(q, K0, V0, P, K, V, kv.T, hs, scale, scratch, out);
  });
}

}  // namespace gptfast
