#include "cpu_attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "dropout.h"
#include "rng.h"
#include "simd.h"
#include "vec16.h"

namespace gptfast {

namespace {

// Register blocks: kR rows x kJ columns, kR * kJ / 16 accumulators of 16
// lanes: 8 independent FMA chains keep both FMA ports busy.  With 16 vector
// registers (AVX2, where 16 lanes take two), 4 x 32 would spill: 4 x 16.
// Operands are copied into zero-padded buffers first, so no block has a tail.
constexpr int kR = 4;  // 8 rows on AVX-512 measured within noise of 4
constexpr int kJ = GPTFAST_AVX512 ? 32 : 16, kV = kJ;
constexpr int kVecs = kJ / 16;  // 16-lane vectors per block row
static_assert(kJ % kR == 0, "the backward takes a key block's keys kR at a time");

inline int round_up(int x, int m) { return (x + m - 1) / m * m; }

// out (rows_pad, ld) = rows 0..T-1 of head (b, h) of x, zero-padded after T and D.
void pad_rows(const Heads& x, int64_t b, int64_t h, int T, int D, int ld, float* out, int rows_pad) {
  std::fill(out, out + static_cast<size_t>(rows_pad) * ld, 0.0f);
  for (int t = 0; t < T; ++t) std::copy(x.row(b, h, t), x.row(b, h, t) + D, out + static_cast<size_t>(t) * ld);
}

#if GPTFAST_SIMD
// out rows 0..7 (stride ld_out) = the 8 x 8 block at `in` (stride ld_in), transposed.
inline void transpose8x8(const float* in, size_t ld_in, float* out, size_t ld_out) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(in + i * ld_in);
  for (int i = 0; i < 8; i += 2) {  // interleave row pairs: (a0 b0 a1 b1 | a4 b4 a5 b5), ...
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {  // then pairs of pairs: columns of four rows per 128-bit lane
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {  // and the two 128-bit halves: rows 0-3 with rows 4-7
    _mm256_storeu_ps(out + i * ld_out, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(out + (i + 4) * ld_out, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}
#endif

// xt (D, ld) = head (b, h) of x transposed, zero after column T.  In 8 x 8
// tiles where the machine has AVX: element by element, the transposes of K
// (and V in the backward) took ~15% of the kernels.
void pad_transpose(const Heads& x, int64_t b, int64_t h, int T, int D, int ld, float* xt) {
  std::fill(xt, xt + static_cast<size_t>(D) * ld, 0.0f);
  int t0 = 0, d_tiled = 0;
#if GPTFAST_SIMD
  d_tiled = D / 8 * 8;
  if (x.st > 0)  // rows are evenly spaced: tile them
    for (; t0 + 8 <= T; t0 += 8)
      for (int d = 0; d < d_tiled; d += 8)
        transpose8x8(x.row(b, h, t0) + d, static_cast<size_t>(x.st), xt + static_cast<size_t>(d) * ld + t0, ld);
#endif
  for (int t = 0; t < T; ++t) {
    const float* r = x.row(b, h, t);
    for (int d = t < t0 ? d_tiled : 0; d < D; ++d) xt[static_cast<size_t>(d) * ld + t] = r[d];
  }
}

// C (kR, kJ) = [C +] A (kR, K) B (K, kJ): rows of A, B and C at strides lda,
// ldb and ldc.  kR * kVecs accumulators stay in registers across K; each
// output is one fma chain over k = 0..K-1 in order.
template <bool Accumulate>
inline void block_gemm(const float* A, int lda, const float* B, int ldb, int K, float* C, int ldc) {
  V16 acc[kR][kVecs];
  for (int r = 0; r < kR; ++r)
    for (int c = 0; c < kVecs; ++c)
      acc[r][c] = Accumulate ? load16(C + static_cast<size_t>(r) * ldc + 16 * c) : zero16();
  for (int k = 0; k < K; ++k) {
    const float* bk = B + static_cast<size_t>(k) * ldb;
    V16 bv[kVecs];
    for (int c = 0; c < kVecs; ++c) bv[c] = load16(bk + 16 * c);
    for (int r = 0; r < kR; ++r) {
      const float x = A[static_cast<size_t>(r) * lda + k];
      for (int c = 0; c < kVecs; ++c) acc[r][c] = fma16(x, bv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < kR; ++r)
    for (int c = 0; c < kVecs; ++c) store16(C + static_cast<size_t>(r) * ldc + 16 * c, acc[r][c]);
}

// dots (kR, kJ) = sum_{d < D} a[r * lda + d] * bt[d * ldb + j0 + j]: kR rows
// of a against kJ columns of bt (a block of q k^T, or of dout v^T).
inline void block_dots(const float* a, int lda, const float* bt, int ldb, int j0, int D, float* dots) {
  block_gemm<false>(a, lda, bt + j0, ldb, D, dots, kJ);
}

// y[r * ldy + d0 ..+kV] += sum_{j < n} w[r * ldw + j] * b[j * ldb + d0 ..+kV]
// for r < kR: weights times rows of b (probabilities times values, score
// gradients times keys or queries).
inline void block_axpy(const float* w, int ldw, const float* b, int ldb, int n, int d0, float* y, int ldy) {
  static_assert(kV == kJ, "one register block serves both");
  block_gemm<true>(w, ldw, b + d0, ldb, n, y + d0, ldy);
}

// 0 (dropped) or 1/(1-p) for key j of query i of (batch, head) bh.
inline float keep_scale(const AttentionProblem& a, uint64_t key, int64_t bh, int i, int j) {
  if (a.threshold == 0) return a.keep_scale;
  const uint64_t index = (static_cast<uint64_t>(bh) * a.T + i) * a.T + j;
  return dropout_keep(key, index, a.threshold) ? a.keep_scale : 0.0f;
}

}  // namespace

void attention_forward(const AttentionProblem& a, Heads q, Heads k, Heads v, OutHeads out, float* lse) {
  const int T = a.T, D = a.D, Tk = round_up(T, kJ), Tq = round_up(T, kR), Dp = round_up(D, kV);
  const uint64_t key = splitmix64(a.seed);
#pragma omp parallel
  {
    std::vector<float> kt(static_cast<size_t>(D) * Tk), qp(static_cast<size_t>(Tq) * D), vp(static_cast<size_t>(Tk) * Dp);
    std::vector<float> w(static_cast<size_t>(kR) * Tk), o(static_cast<size_t>(kR) * Dp);
#pragma omp for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < a.B * a.H; ++bh) {
      const int64_t b = bh / a.H, h = bh % a.H;
      pad_transpose(k, b, h, T, D, Tk, kt.data());
      pad_rows(q, b, h, T, D, D, qp.data(), Tq);
      pad_rows(v, b, h, T, D, Dp, vp.data(), Tk);
      for (int i0 = 0; i0 < T; i0 += kR) {
        const int nk = round_up(std::min(T, i0 + kR), kJ);  // keys the block's last row may see, padded
        // w (kR, nk): the scores, then each row's dropped, normalized probabilities.
        float dots[kR * kJ];
        for (int j0 = 0; j0 < nk; j0 += kJ) {
          block_dots(qp.data() + static_cast<size_t>(i0) * D, D, kt.data(), Tk, j0, D, dots);
          for (int r = 0; r < kR; ++r)
            for (int jj = 0; jj < kJ; ++jj) w[static_cast<size_t>(r) * Tk + j0 + jj] = dots[r * kJ + jj] * a.scale;
        }
        for (int r = 0; r < kR; ++r) {
          float* wr = w.data() + static_cast<size_t>(r) * Tk;
          const int i = i0 + r, n = std::min(i + 1, T);  // causal: keys 0..i (none for padding rows)
          if (i >= T) {
            std::fill(wr, wr + nk, 0.0f);
            continue;
          }
          const float mx = row_max(wr, n);
          for (int j = 0; j < n; ++j) wr[j] = exp_nonpositive(wr[j] - mx);  // vectorized: no sum in this loop
          const float sum = row_sum(wr, n);
          const float inv = 1.0f / sum;
          for (int j = 0; j < n; ++j) wr[j] *= inv * keep_scale(a, key, bh, i, j);
          std::fill(wr + n, wr + nk, 0.0f);
          lse[static_cast<size_t>(bh) * T + i] = mx + std::log(sum);
        }
        std::fill(o.begin(), o.end(), 0.0f);
        for (int d0 = 0; d0 < Dp; d0 += kV) block_axpy(w.data(), Tk, vp.data(), Dp, nk, d0, o.data(), Dp);
        for (int r = 0; r < kR && i0 + r < T; ++r)
          std::copy(o.data() + static_cast<size_t>(r) * Dp, o.data() + static_cast<size_t>(r) * Dp + D,
                    out.row(b, h, i0 + r));
      }
    }
  }
}

void attention_backward(const AttentionProblem& a, Heads q, Heads k, Heads v, Heads out, const float* lse,
                        Heads dout, OutHeads dq, OutHeads dk, OutHeads dv) {
  const int T = a.T, D = a.D, Tk = round_up(T, kJ), Tq = round_up(T, kR), Dp = round_up(D, kV);
  const uint64_t key = splitmix64(a.seed);
#pragma omp parallel
  {
    std::vector<float> kt(static_cast<size_t>(D) * Tk), vt(static_cast<size_t>(D) * Tk);
    std::vector<float> qp(static_cast<size_t>(Tq) * Dp), dop(static_cast<size_t>(Tq) * Dp), kp(static_cast<size_t>(Tk) * Dp);
    std::vector<float> dqp(static_cast<size_t>(Tq) * Dp), dkp(static_cast<size_t>(Tk) * Dp), dvp(static_cast<size_t>(Tk) * Dp);
    std::vector<float> delta(Tq);
    // One key block's strips over the query rows: dropped probabilities and
    // score gradients, transposed (kJ, Tq) for dv and dk, and ds (Tq, kJ) for dq.
    std::vector<float> pzt(static_cast<size_t>(kJ) * Tq), dst(static_cast<size_t>(kJ) * Tq), ds(static_cast<size_t>(Tq) * kJ);
#pragma omp for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < a.B * a.H; ++bh) {
      const int64_t b = bh / a.H, h = bh % a.H;
      pad_transpose(k, b, h, T, D, Tk, kt.data());
      pad_transpose(v, b, h, T, D, Tk, vt.data());
      pad_rows(q, b, h, T, D, Dp, qp.data(), Tq);
      pad_rows(dout, b, h, T, D, Dp, dop.data(), Tq);
      pad_rows(k, b, h, T, D, Dp, kp.data(), Tk);
      std::fill(dqp.begin(), dqp.end(), 0.0f);
      std::fill(dkp.begin(), dkp.end(), 0.0f);
      std::fill(dvp.begin(), dvp.end(), 0.0f);
      // delta_i = sum_j P_ij z_ij dp_ij = dout_i . out_i
      for (int i = 0; i < T; ++i) delta[i] = dot(dout.row(b, h, i), out.row(b, h, i), D);
      for (int j0 = 0; j0 < T; j0 += kJ) {
        const int first = j0 / kR * kR;  // the first query block that sees a key of this block (i >= j0)
        for (int i0 = first; i0 < T; i0 += kR) {
          float s[kR * kJ], dp[kR * kJ];
          block_dots(qp.data() + static_cast<size_t>(i0) * Dp, Dp, kt.data(), Tk, j0, D, s);
          block_dots(dop.data() + static_cast<size_t>(i0) * Dp, Dp, vt.data(), Tk, j0, D, dp);
          for (int r = 0; r < kR; ++r) {
            const int i = i0 + r;
            // Keys j0 + jj < j0 + n_valid are visible to row i (none for padding rows).
            const int n_valid = i < T ? std::min(kJ, i - j0 + 1) : 0;
            const float l = i < T ? lse[static_cast<size_t>(bh) * T + i] : 0.0f;
            const float di = delta[i];
            // Loops without branches or strided stores, so they vectorize.
            float pz[kJ], g[kJ], z[kJ];
            for (int jj = 0; jj < kJ; ++jj) z[jj] = keep_scale(a, key, bh, i, j0 + jj);
            for (int jj = 0; jj < kJ; ++jj) {
              const float p = exp_nonpositive(s[r * kJ + jj] * a.scale - l);  // the softmax, before dropout
              pz[jj] = p * z[jj];
              g[jj] = p * (dp[r * kJ + jj] * z[jj] - di) * a.scale;  // d(q.k): softmax backward, scale folded in
            }
            for (int jj = n_valid; jj < kJ; ++jj) pz[jj] = g[jj] = 0.0f;
            std::copy(g, g + kJ, ds.data() + static_cast<size_t>(i) * kJ);
            for (int jj = 0; jj < kJ; ++jj) {
              pzt[static_cast<size_t>(jj) * Tq + i] = pz[jj];
              dst[static_cast<size_t>(jj) * Tq + i] = g[jj];
            }
          }
        }
        // dv_j += sum_i pz_ij dout_i and dk_j += sum_i ds_ij q_i, kR keys at a time;
        // then dq_i += sum_j ds_ij k_j, kR queries at a time.
        const int n = Tq - first;
        for (int jj = 0; jj < kJ; jj += kR)
          for (int d0 = 0; d0 < Dp; d0 += kV) {
            const size_t w0 = static_cast<size_t>(jj) * Tq + first;
            block_axpy(pzt.data() + w0, Tq, dop.data() + static_cast<size_t>(first) * Dp, Dp, n, d0,
                       dvp.data() + static_cast<size_t>(j0 + jj) * Dp, Dp);
            block_axpy(dst.data() + w0, Tq, qp.data() + static_cast<size_t>(first) * Dp, Dp, n, d0,
                       dkp.data() + static_cast<size_t>(j0 + jj) * Dp, Dp);
          }
        for (int i0 = first; i0 < T; i0 += kR)
          for (int d0 = 0; d0 < Dp; d0 += kV)
            block_axpy(ds.data() + static_cast<size_t>(i0) * kJ, kJ, kp.data() + static_cast<size_t>(j0) * Dp, Dp, kJ, d0,
                       dqp.data() + static_cast<size_t>(i0) * Dp, Dp);
      }
      for (int t = 0; t < T; ++t) {
        const size_t prow = static_cast<size_t>(t) * Dp;
        std::copy(dqp.data() + prow, dqp.data() + prow + D, dq.row(b, h, t));
        std::copy(dkp.data() + prow, dkp.data() + prow + D, dk.row(b, h, t));
        std::copy(dvp.data() + prow, dvp.data() + prow + D, dv.row(b, h, t));
      }
    }
  }
}

}  // namespace gptfast
