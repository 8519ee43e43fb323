// The hashed dropout mask of CPU training (attention and residual dropout).
//
// PyTorch draws a CPU dropout mask with bernoulli_, ~7 ns per element on our
// 2-core machine.  Here element `index` of a call with `seed` is kept when
//   (splitmix64(splitmix64(seed) + index) >> 32) >= threshold,
//   threshold = round(p * 2^32)                          (csrc/rng.h)
// and kept values are scaled by 1/(1-p): ~1 ns per element on one core,
// nothing to store, and the backward pass recomputes the same mask from the
// seed.  gptfast/hashed_dropout.py holds the mask in numpy (the tests use it).
#pragma once

#include <cmath>
#include <cstdint>

#include "rng.h"

namespace gptfast {

inline uint32_t dropout_threshold(double p) {
  const double t = std::round(p * 4294967296.0);
  return t >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<uint32_t>(t);
}

// key = splitmix64(seed), computed once per call.
inline bool dropout_keep(uint64_t key, uint64_t index, uint32_t threshold) {
  return static_cast<uint32_t>(splitmix64(key + index) >> 32) >= threshold;
}

// y[i] = keep(i) ? x[i] * scale : 0 for i < n (x may be y), on the OpenMP
// threads (PyTorch's pool) when built with OpenMP.
void dropout_apply(const float* x, float* y, int64_t n, uint32_t threshold, float scale, uint64_t seed);

}  // namespace gptfast
