// The sampler's random numbers: a counter-based generator, so a draw depends
// only on (seed, sequence index, step) and never on how many draws came
// before it, how the batch is made up, or which thread asks.
//
//   splitmix64(x):  x += 0x9E3779B97F4A7C15
//                   z = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
//                   z = (z ^ (z >> 27)) * 0x94D049BB133111EB
//                   return z ^ (z >> 31)                    (all mod 2^64)
//   key    = splitmix64(splitmix64(splitmix64(seed) ^ seq) ^ step)
//   u      = (key >> 11) * 2^-53                            in [0, 1), 53 bits
//
// gptfast/sampling.py implements exactly this in Python (tests compare them).
#pragma once

#include <cstdint>

namespace gptfast {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  uint64_t z = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// One uniform double in [0, 1) for token `step` of sequence `seq`.
inline double counter_uniform(uint64_t seed, uint64_t seq, uint64_t step) {
  const uint64_t key = splitmix64(splitmix64(splitmix64(seed) ^ seq) ^ step);
  return static_cast<double>(key >> 11) * 0x1.0p-53;  // exact: 53-bit integer times a power of two
}

}  // namespace gptfast
