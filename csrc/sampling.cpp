#include "sampling.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>

#include "rng.h"

namespace gptfast {

namespace {

// ws.order = 0..V-1 sorted by (p descending, id ascending): what std::sort
// with that comparator gives, ~5x faster at V = 20k (a word-level
// vocabulary, where the sort was 1.3 ms of every sampled token, twice the
// forward pass).  The bits of non-negative doubles order like their values,
// and complementing them turns descending into ascending: an LSD radix sort
// on the high 32 bits of ~bits(p) (sign, exponent, 20 bits of mantissa; 11
// bits a pass, stable, so equal keys keep id order; a pass whose digit is
// the same for every id is skipped), then insertion sort on the full key
// within the runs that share those bits, which are rare and short.
void sort_by_probability(const std::vector<double>& p, int V, SamplerWorkspace& ws) {
  constexpr int kBits = 11, kBuckets = 1 << kBits;
  std::vector<uint64_t>&keys = ws.keys, &keys_tmp = ws.keys_tmp;
  std::vector<int>&order = ws.order, &order_tmp = ws.order_tmp;
  keys.resize(V);
  keys_tmp.resize(V);
  order.resize(V);
  order_tmp.resize(V);
  for (int i = 0; i < V; ++i) {
    uint64_t bits;
    std::memcpy(&bits, &p[i], sizeof bits);
    keys[i] = ~bits;
    order[i] = i;
  }
  std::vector<int>& count = ws.counts;
  count.resize(kBuckets);
  for (int shift = 32; shift < 64; shift += kBits) {
    std::fill(count.begin(), count.end(), 0);
    for (int i = 0; i < V; ++i) ++count[(keys[i] >> shift) & (kBuckets - 1)];
    if (count[(keys[0] >> shift) & (kBuckets - 1)] == V) continue;  // one digit for all: order unchanged
    int start = 0;
    for (int& c : count) {
      const int n = c;
      c = start;
      start += n;
    }
    for (int i = 0; i < V; ++i) {
      const int slot = count[(keys[i] >> shift) & (kBuckets - 1)]++;
      keys_tmp[slot] = keys[i];
      order_tmp[slot] = order[i];
    }
    keys.swap(keys_tmp);
    order.swap(order_tmp);
  }
  // Runs of equal high bits, by the whole key, then id (the order stability
  // kept): insertion sort for short runs; std::sort for long ones, which a
  // near-uniform distribution (differences below 2^-20) would make O(V^2).
  std::vector<std::pair<uint64_t, int>>& run = ws.run;
  for (int begin = 0, end; begin < V; begin = end) {
    for (end = begin + 1; end < V && (keys[end] >> 32) == (keys[begin] >> 32);) ++end;
    if (end - begin > 16) {
      run.clear();
      for (int i = begin; i < end; ++i) run.emplace_back(keys[i], order[i]);
      std::sort(run.begin(), run.end());
      for (int i = begin; i < end; ++i) std::tie(keys[i], order[i]) = run[i - begin];
      continue;
    }
    for (int i = begin + 1; i < end; ++i) {
      const uint64_t key = keys[i];
      const int id = order[i];
      int j = i;
      for (; j > begin && keys[j - 1] > key; --j) {
        keys[j] = keys[j - 1];
        order[j] = order[j - 1];
      }
      keys[j] = key;
      order[j] = id;
    }
  }
}

// 9: inverse CDF over the kept ids id_at(0..kept-1), weights w (summing to
// W in that order): the first whose running sum exceeds u * W, or, if
// rounding leaves none, the last with a weight > 0.
template <class IdAt>
int draw(const double* w, int kept, IdAt id_at, double W, double u) {
  const double target = u * W;
  double cum = 0.0;
  for (int j = 0; j < kept; ++j) {
    cum += w[id_at(j)];
    if (target < cum) return id_at(j);
  }
  for (int j = kept - 1; j >= 0; --j)
    if (w[id_at(j)] > 0.0) return id_at(j);
  return id_at(0);
}

}  // namespace

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

  // 5: e_i = exp(l_i / temperature - m), and their sum in id order.
  std::vector<double>& w = ws.weights;  // the weights of step 9: e, or p = e / S
  w.resize(V);
  double m = kNegInf;
  for (int i = 0; i < V; ++i) {
    l[i] = l[i] / p.temperature;
    if (l[i] > m) m = l[i];
  }
  double S = 0.0;
  for (int i = 0; i < V; ++i) {
    w[i] = std::exp(l[i] - m);
    S += w[i];
  }
  const double u = counter_uniform(seed, seq, step);

  // 6: neither top-k nor top-p: every id, in id order, weighed by e, whose
  // sum in that order is S.  No normalization and no sort of the vocabulary
  // (which was half of a draw at V = 20k).
  if ((p.top_k == 0 || p.top_k >= V) && p.top_p >= 1.0) return draw(w.data(), V, [](int j) { return j; }, S, u);

  // 7: p = e / S, ordered by (p desc, id asc); only the first k need sorting
  // when top-k is on.
  for (int i = 0; i < V; ++i) w[i] = w[i] / S;
  std::vector<int>& order = ws.order;
  int kept = V;
  if (p.top_k > 0 && p.top_k < V) {
    kept = p.top_k;
    order.resize(V);
    for (int i = 0; i < V; ++i) order[i] = i;
    auto before = [&](int a, int b) { return w[a] > w[b] || (w[a] == w[b] && a < b); };
    std::partial_sort(order.begin(), order.begin() + kept, order.end(), before);
  } else {
    sort_by_probability(w, V, ws);
  }

  // 8: nucleus over the top-k survivors, renormalized.
  if (p.top_p < 1.0) {
    double K = 0.0;
    for (int i = 0; i < kept; ++i) K += w[order[i]];
    double cum = 0.0;
    for (int i = 0; i < kept; ++i) {
      cum += w[order[i]] / K;
      if (cum >= p.top_p) {
        kept = i + 1;
        break;
      }
    }
  }

  double W = 0.0;
  for (int i = 0; i < kept; ++i) W += w[order[i]];
  return draw(w.data(), kept, [&](int j) { return order[j]; }, W, u);
}

}  // namespace gptfast
