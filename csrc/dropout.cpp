#include "dropout.h"

namespace gptfast {

void dropout_apply(const float* x, float* y, int64_t n, uint32_t threshold, float scale, uint64_t seed) {
  const uint64_t key = splitmix64(seed);
  // Chunks of 64K elements: big enough to amortize the scheduling, small
  // enough to spread a 1.5M-element activation over the threads.
  constexpr int64_t kChunk = int64_t{1} << 16;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t end = c + 1 < chunks ? (c + 1) * kChunk : n;
    for (int64_t i = c * kChunk; i < end; ++i)
      y[i] = dropout_keep(key, static_cast<uint64_t>(i), threshold) ? x[i] * scale : 0.0f;
  }
}

}  // namespace gptfast
