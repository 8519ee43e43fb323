// Cross-entropy over the rows of (N, V) float32 logits, for CPU training.
//
// F.cross_entropy on the CPU runs log_softmax (writes N x V), nll_loss, and
// in the backward pass a zero-filled N x V gradient, a scatter and
// log_softmax's backward (reads two N x V arrays, writes one): seven passes
// over an array that for a word-level vocabulary (the chat preset, V ~ 20k,
// 2048 rows: 164 MB) lives in DRAM.  Here the forward pass reads the logits
// once per row (max, then the sum of exponentials from L2) and keeps only
// the log-sum-exp per row; the backward pass reads the logits again and
// writes the gradient, softmax minus one-hot, in one pass.  Rows are shared
// out to PyTorch's OpenMP threads.  Forward + backward on our 2-core VM
// (benchmarks/test_cpu_loss.py): 2.4x F.cross_entropy at 4096 x 92 (char
// level), 1.3x at 2048 x 20k, where both mostly wait on the page faults of
// the fresh 164 MB arrays; the chat preset's step with a 20k vocabulary
// went from 604 to 566 ms.
#pragma once

#include <cstdint>

namespace gptfast {

// lse[i] = log sum_j exp(x[i, j]); loss[i] = lse[i] - x[i, targets[i]], or 0
// (and lse 0) for rows whose target is `ignore`.  Targets must be in [0, V)
// or `ignore` (checked by the caller).
void cross_entropy_forward(const float* x, int64_t N, int64_t V, const int64_t* targets, int64_t ignore, float* lse,
                           float* loss);

// dx[i, j] = scale * (exp(x[i, j] - lse[i]) - [j == targets[i]]); zero rows
// where the target is `ignore`.
void cross_entropy_backward(const float* x, int64_t N, int64_t V, const int64_t* targets, int64_t ignore,
                            const float* lse, float scale, float* dx);

}  // namespace gptfast
