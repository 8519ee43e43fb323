// Choosing the next token from a row of logits: the C++ twin of
// gptfast/sampling.py, operation for operation, so both pick the same token
// from the same logits and seed.
//
// All arithmetic is float64 in this fixed order (the Python docstring of
// `sample_from_logits` is the specification):
//   1. l_i = double(logits_i); NaN -> -inf
//   2. repetition penalty r != 1, for each token id already in the sequence:
//        l_i = l_i > 0 ? l_i / r : l_i * r
//   3. banned ids: l_i = -inf
//   4. temperature 0: argmax l (ties -> lowest id), done
//   5. l_i /= temperature;  m = max l;  e_i = exp(l_i - m)
//   6. neither top-k nor top-p: every id is kept, in id order, with weight
//      w_i = e_i; go to 9
//   7. S = sum e (id order); w_i = p_i = e_i / S; order = ids sorted by
//      (p descending, id ascending); top-k (0 < k < V): keep the first k
//   8. top-p (p < 1): K = sum of the kept p (in `order`); keep the shortest
//      prefix whose running sum of p_i / K reaches top_p (>=)
//   9. W = sum of the kept w (in order); target = u * W with
//      u = counter_uniform(seed, seq, step); pick the first kept id whose
//      running sum of w exceeds target (>); if rounding leaves none, the last
//      kept id with w > 0.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace gptfast {

struct SamplingParams {
  double temperature = 1.0;         // 0 = greedy
  int top_k = 0;                    // 0 (or >= vocab) = off
  double top_p = 1.0;               // >= 1 = off
  double repetition_penalty = 1.0;  // 1 = off
  std::vector<int> banned_ids;      // never chosen (masked, not resampled)

  // Throws std::invalid_argument naming the bad field.
  void validate(int vocab_size) const;
};

// Scratch space reused across calls (no allocation per token).
struct SamplerWorkspace {
  std::vector<double> logits, weights;  // weights: those of step 9 (e, or p)
  std::vector<int> order, order_tmp;
  std::vector<uint64_t> keys, keys_tmp;  // the radix sort's (see sampling.cpp)
  std::vector<int> counts;
  std::vector<std::pair<uint64_t, int>> run;
};

// `seen` (vocab_size flags, or null) marks the ids already in the sequence,
// for the repetition penalty.  Throws std::invalid_argument when every token
// is banned or -inf.
int choose_token(const float* logits, int vocab_size, const SamplingParams& params, const uint8_t* seen,
                 uint64_t seed, uint64_t seq, uint64_t step, SamplerWorkspace& ws);

}  // namespace gptfast
