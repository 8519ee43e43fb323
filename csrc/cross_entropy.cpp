#include "cross_entropy.h"

#include <cmath>
#include <vector>

#include "vec16.h"

namespace gptfast {

void cross_entropy_forward(const float* x, int64_t N, int64_t V, const int64_t* targets, int64_t ignore, float* lse,
                           float* loss) {
#pragma omp parallel if (N > 1)
  {
    std::vector<float> e(static_cast<size_t>(V));  // one row's exponentials: stays in L2 for the sum
#pragma omp for schedule(static)
    for (int64_t i = 0; i < N; ++i) {
      if (targets[i] == ignore) {
        lse[i] = loss[i] = 0.0f;
        continue;
      }
      const float* row = x + i * V;
      const int n = static_cast<int>(V);
      const float m = row_max(row, n);
      for (int j = 0; j < n; ++j) e[j] = exp_nonpositive(row[j] - m);  // vectorized: no reduction here
      lse[i] = m + std::log(row_sum(e.data(), n));
      loss[i] = lse[i] - row[targets[i]];
    }
  }
}

void cross_entropy_backward(const float* x, int64_t N, int64_t V, const int64_t* targets, int64_t ignore,
                            const float* lse, float scale, float* dx) {
#pragma omp parallel for schedule(static) if (N > 1)
  for (int64_t i = 0; i < N; ++i) {
    float* out = dx + i * V;
    if (targets[i] == ignore) {
      std::fill(out, out + V, 0.0f);
      continue;
    }
    const float* row = x + i * V;
    const float l = lse[i];
    for (int64_t j = 0; j < V; ++j) out[j] = scale * exp_nonpositive(row[j] - l);  // x - lse <= 0
    out[targets[i]] -= scale;
  }
}

}  // namespace gptfast
