#include "cpu_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "rng.h"

namespace gptfast {

uint32_t dropout_threshold(double p) {
  const double t = std::round(p * 4294967296.0);
  return t >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<uint32_t>(t);
}

namespace {

// exp(x) for x <= 0 within ~2 ulp (Cephes' expf polynomial after x = n ln2
// + r), written as plain float code so that loops over it vectorize.
inline float exp_nonpositive(float x) {
  x = std::max(x, -87.0f);
  const float n = std::nearbyint(x * 1.44269504088896341f);
  float r = std::fma(n, -0.693359375f, x);
  r = std::fma(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  const float y = std::fma(p, r * r, r) + 1.0f;
  const int32_t e = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &e, 4);
  return y * scale;
}

// Row i of one (batch, head): scores s[j] = scale * q_i . k_j for j <= i,
// from kt = K transposed (D, T), so the inner loop runs along j.
inline void row_scores(const float* qi, const float* kt, int T, int D, int n, float scale, float* s) {
  std::fill(s, s + n, 0.0f);
  for (int d = 0; d < D; ++d) {
    const float qd = qi[d] * scale;
    const float* kd = kt + static_cast<size_t>(d) * T;
    for (int j = 0; j < n; ++j) s[j] = std::fma(qd, kd[j], s[j]);
  }
}

// The keep-scale of each key j < n of row i: 0 (dropped) or 1/(1-p).
inline void row_mask(const AttentionProblem& a, int64_t bh, int i, int n, uint64_t key, float* z) {
  if (a.threshold == 0) {
    std::fill(z, z + n, a.keep_scale);
    return;
  }
  const uint64_t base = (static_cast<uint64_t>(bh) * a.T + i) * a.T;
  for (int j = 0; j < n; ++j)
    z[j] = static_cast<uint32_t>(splitmix64(key + base + j) >> 32) >= a.threshold ? a.keep_scale : 0.0f;
}

void transpose(const float* x, int T, int D, float* xt) {  // x (T, D) -> xt (D, T)
  for (int t = 0; t < T; ++t)
    for (int d = 0; d < D; ++d) xt[static_cast<size_t>(d) * T + t] = x[static_cast<size_t>(t) * D + d];
}

}  // namespace

void attention_forward(const AttentionProblem& a, const float* q, const float* k, const float* v, float* out,
                       float* lse) {
  const int T = a.T, D = a.D;
  const uint64_t key = splitmix64(a.seed);
#pragma omp parallel
  {
    std::vector<float> kt(static_cast<size_t>(D) * T), s(T), z(T);
#pragma omp for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < a.bh; ++bh) {
      const size_t off = static_cast<size_t>(bh) * T * D;
      transpose(k + off, T, D, kt.data());
      for (int i = 0; i < T; ++i) {
        const int n = i + 1;  // causal: keys 0..i
        const float* qi = q + off + static_cast<size_t>(i) * D;
        row_scores(qi, kt.data(), T, D, n, a.scale, s.data());
        float mx = -std::numeric_limits<float>::infinity();
        for (int j = 0; j < n; ++j) mx = std::max(mx, s[j]);
        for (int j = 0; j < n; ++j) s[j] = exp_nonpositive(s[j] - mx);  // vectorized: no sum in this loop
        float sum = 0.0f;
        for (int j = 0; j < n; ++j) sum += s[j];
        row_mask(a, bh, i, n, key, z.data());
        float* oi = out + off + static_cast<size_t>(i) * D;
        std::fill(oi, oi + D, 0.0f);
        const float inv = 1.0f / sum;
        for (int j = 0; j < n; ++j) {
          const float w = s[j] * inv * z[j];  // dropped probability, scaled
          if (w == 0.0f) continue;
          const float* vj = v + off + static_cast<size_t>(j) * D;
          for (int d = 0; d < D; ++d) oi[d] = std::fma(w, vj[d], oi[d]);
        }
        lse[static_cast<size_t>(bh) * T + i] = mx + std::log(sum);
      }
    }
  }
}

void attention_backward(const AttentionProblem& a, const float* q, const float* k, const float* v, const float* out,
                        const float* lse, const float* dout, float* dq, float* dk, float* dv) {
  const int T = a.T, D = a.D;
  const uint64_t key = splitmix64(a.seed);
#pragma omp parallel
  {
    std::vector<float> kt(static_cast<size_t>(D) * T), vt(static_cast<size_t>(D) * T), s(T), dp(T), z(T);
#pragma omp for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < a.bh; ++bh) {
      const size_t off = static_cast<size_t>(bh) * T * D;
      transpose(k + off, T, D, kt.data());
      transpose(v + off, T, D, vt.data());
      std::fill(dq + off, dq + off + static_cast<size_t>(T) * D, 0.0f);
      std::fill(dk + off, dk + off + static_cast<size_t>(T) * D, 0.0f);
      std::fill(dv + off, dv + off + static_cast<size_t>(T) * D, 0.0f);
      for (int i = 0; i < T; ++i) {
        const int n = i + 1;
        const size_t row = off + static_cast<size_t>(i) * D;
        const float* qi = q + row;
        const float* doi = dout + row;
        // P (the softmax, before dropout) from the saved log-sum-exp.
        row_scores(qi, kt.data(), T, D, n, a.scale, s.data());
        const float l = lse[static_cast<size_t>(bh) * T + i];
        for (int j = 0; j < n; ++j) s[j] = exp_nonpositive(s[j] - l);
        // dp[j] = dout_i . v_j: the gradient of the dropped, scaled probability.
        row_scores(doi, vt.data(), T, D, n, 1.0f, dp.data());
        row_mask(a, bh, i, n, key, z.data());
        // delta = sum_j P_ij z_ij dp_ij = dout_i . out_i
        float delta = 0.0f;
        for (int d = 0; d < D; ++d) delta = std::fma(doi[d], out[row + d], delta);
        float* dqi = dq + row;
        for (int j = 0; j < n; ++j) {
          const float pz = s[j] * z[j];
          const float ds = s[j] * (dp[j] * z[j] - delta) * a.scale;  // d(score) with the scale folded in
          const size_t rj = off + static_cast<size_t>(j) * D;
          if (pz != 0.0f)
            for (int d = 0; d < D; ++d) dv[rj + d] = std::fma(pz, doi[d], dv[rj + d]);
          for (int d = 0; d < D; ++d) {
            dqi[d] = std::fma(ds, k[rj + d], dqi[d]);
            dk[rj + d] = std::fma(ds, qi[d], dk[rj + d]);
          }
        }
      }
    }
  }
}

}  // namespace gptfast
