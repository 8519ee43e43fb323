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
// p 0.2), forward + backward from Python: 62 ms vs 112 ms for SDPA's math
// path (and 42 ms for its flash kernel without dropout, which is why only
// dropout brings calls here).
//
// The dropout mask is csrc/dropout.h's hash at index (bh * T + i) * T + j
// for query i and key j of (batch, head) bh: the mask of a flat (B, H, T, T)
// array; kept probabilities are scaled by 1/(1-p).
//
// Layout: q, k, v, out and their gradients are (B*H, T, D) contiguous
// float32; lse is (B*H, T).  Threads (OpenMP, sharing PyTorch's pool) take
// (batch, head) pairs.
#pragma once

#include <cstdint>

namespace gptfast {

struct AttentionProblem {
  int64_t bh = 0;          // batch x heads
  int T = 0, D = 0;        // sequence length, head size
  float scale = 1.0f;      // on q . k
  uint32_t threshold = 0;  // dropout: drop when the 32-bit draw is below it (0: keep all)
  float keep_scale = 1.0f; // 1 / (1 - p)
  uint64_t seed = 0;
};

// out (bh, T, D) and lse (bh, T) = log sum_j exp(scale q_i . k_j) over j <= i.
void attention_forward(const AttentionProblem& a, const float* q, const float* k, const float* v, float* out,
                       float* lse);

// dq, dk, dv (bh, T, D) from dout, with the forward's out and lse.
void attention_backward(const AttentionProblem& a, const float* q, const float* k, const float* v, const float* out,
                        const float* lse, const float* dout, float* dq, float* dk, float* dv);

}  // namespace gptfast
