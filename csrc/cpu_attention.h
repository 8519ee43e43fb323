// Causal self-attention for CPU training with attention dropout, fused.
//
// PyTorch's CPU scaled_dot_product_attention has a flash kernel, but it
// takes no dropout: with dropout it falls back to its math path, which
// writes the B x H x T x T probabilities several times and draws the mask
// with bernoulli_ (~7 ns per element).  On the seed recipe (p = 0.2, T =
// 256) that path was ~45% of a training step.  Here four query rows at a
// time get their scores over the keys they see, the softmax, the mask and
// the weighted sum of values, so nothing T x T ever reaches memory.  The
// backward pass (FlashAttention-2's order: key blocks of 32 outside) derives
// the probabilities from the saved log-sum-exp and the mask from the seed.
// Measured on the quijote preset's shapes (16 x 6 heads, T 256, head 64,
// p 0.2), forward + backward, 2-core AVX-512 Xeon: 3.4x SDPA's math path and
// 0.9x its flash kernel without dropout, which is why only dropout brings
// calls here (benchmarks/test_cpu_dropout.py).
//
// The dropout mask is csrc/dropout.h's hash at index (bh * T + i) * T + j
// for query i and key j of (batch, head) bh: the mask of a flat (B, H, T, T)
// array; kept probabilities are scaled by 1/(1-p).
//
// Layout: q, k, v, out and their gradients are (B, H, T, D) float32 with any
// strides but a contiguous last axis: the model's q, k, v are views into
// one (B, T, 3C) projection and its output is wanted as (B, T, H, D), and
// reading and writing them in place saves six copies per layer.  lse is
// (B*H, T) contiguous.  Threads (OpenMP, sharing PyTorch's pool) take
// (batch, head) pairs.
#pragma once

#include <cstdint>

namespace gptfast {

// A strided (B, H, T, D) tensor; strides in elements.
template <class Pointer>
struct HeadsOf {
  Pointer data = nullptr;
  int64_t sb = 0, sh = 0, st = 0;
  Pointer row(int64_t b, int64_t h, int64_t t) const { return data + b * sb + h * sh + t * st; }
};
using Heads = HeadsOf<const float*>;
using OutHeads = HeadsOf<float*>;

struct AttentionProblem {
  int64_t B = 0, H = 0;    // batch, heads
  int T = 0, D = 0;        // sequence length, head size
  float scale = 1.0f;      // on q . k
  uint32_t threshold = 0;  // dropout: drop when the 32-bit draw is below it (0: keep all)
  float keep_scale = 1.0f; // 1 / (1 - p)
  uint64_t seed = 0;
};

// out and lse (B*H, T) = log sum_j exp(scale q_i . k_j) over j <= i.
void attention_forward(const AttentionProblem& a, Heads q, Heads k, Heads v, OutHeads out, float* lse);

// dq, dk, dv from dout, with the forward's out and lse.
void attention_backward(const AttentionProblem& a, Heads q, Heads k, Heads v, Heads out, const float* lse,
                        Heads dout, OutHeads dq, OutHeads dk, OutHeads dv);

}  // namespace gptfast
