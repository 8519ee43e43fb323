#include "sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "rng.h"

namespace gptfast {

void SamplingParams::validate(int vocab_size) const {
  if (!(temperature >= 0.0) || std::isinf(temperature))
    throw std::invalid_argument("temperature must be a finite number >= 0, got " + std::to_string(temperature));
  if (top_k < 0) throw std::invalid_argument("top_k must be >= 0 (0 = off), got " + std::to_string(top_k));
  if (!(top_p > 0.0)) throw std::invalid_argument("top_p must be in (0, 1], got " + std::to_string(top_p));
  if (!(repetition_penalty > 0.0) || std::isinf(repetition_penalty))
    throw std::invalid_argument("repetition_penalty must be a finite number > 0, got " +
                                std::to_string(repetition_penalty));
  for (int id : banned_ids)
    if (id < 0 || id >= vocab_size)
      throw std::invalid_argument("banned id " + std::to_string(id) + " is outside the vocabulary 0.." +
                                  std::to_string(vocab_size - 1));
}

int choose_token(const float* logits, int V, const SamplingParams& p, const uint8_t* seen, uint64_t seed,
                 uint64_t seq, uint64_t step, SamplerWorkspace& ws) {
  constexpr double kNegInf = -std::numeric_limits<double>::infinity();
  std::vector<double>& l = ws.logits;
  l.resize(V);
  // 1-3: logits, penalty, bans.
  for (int i = 0; i < V; ++i) l[i] = std::isnan(logits[i]) ? kNegInf : static_cast<double>(logits[i]);
  if (seen && p.repetition_penalty != 1.0)
    for (int i = 0; i < V; ++i)
      if (seen[i]) l[i] = l[i] > 0.0 ? l[i] / p.repetition_penalty : l[i] * p.repetition_penalty;
  for (int id : p.banned_ids) l[id] = kNegInf;

  // 4: greedy.  Strict > keeps the lowest id among equal maxima.
  int best = -1;
  for (int i = 0; i < V; ++i)
    if (l[i] != kNegInf && (best < 0 || l[i] > l[best])) best = i;
  if (best < 0) throw std::invalid_argument("every token is banned or has logit -inf: nothing to sample");
  if (p.temperature == 0.0) return best;

  // 5: softmax with max subtraction, summed in id order.
  std::vector<double>& pr = ws.probs;
  pr.resize(V);
  double m = kNegInf;
  for (int i = 0; i < V; ++i) {
    l[i] = l[i] / p.temperature;
    if (l[i] > m) m = l[i];
  }
  double S = 0.0;
  for (int i = 0; i < V; ++i) {
    pr[i] = std::exp(l[i] - m);
    S += pr[i];
  }
  for (int i = 0; i < V; ++i) pr[i] = pr[i] / S;

  // 6-7: order by (p desc, id asc); only the first k need sorting when top-k is on.
  std::vector<int>& order = ws.order;
  order.resize(V);
  for (int i = 0; i < V; ++i) order[i] = i;
  auto before = [&](int a, int b) { return pr[a] > pr[b] || (pr[a] == pr[b] && a < b); };
  int kept = V;
  if (p.top_k > 0 && p.top_k < V) {
    kept = p.top_k;
    std::partial_sort(order.begin(), order.begin() + kept, order.end(), before);
  } else {
    std::sort(order.begin(), order.end(), before);
  }

  // 8: nucleus over the top-k survivors, renormalized.
  if (p.top_p < 1.0) {
    double K = 0.0;
    for (int i = 0; i < kept; ++i) K += pr[order[i]];
    double cum = 0.0;
    for (int i = 0; i < kept; ++i) {
      cum += pr[order[i]] / K;
      if (cum >= p.top_p) {
        kept = i + 1;
        break;
      }
    }
  }

  // 9: inverse CDF over the kept ids (renormalized by scaling the target).
  double T = 0.0;
  for (int i = 0; i < kept; ++i) T += pr[order[i]];
  const double target = counter_uniform(seed, seq, step) * T;
  double cum = 0.0;
  for (int i = 0; i < kept; ++i) {
    cum += pr[order[i]];
    if (target < cum) return order[i];
  }
  for (int i = kept - 1; i >= 0; --i)
    if (pr[order[i]] > 0.0) return order[i];
  return order[0];
}

}  // namespace gptfast
