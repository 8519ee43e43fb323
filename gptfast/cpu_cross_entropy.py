"""Cross-entropy for CPU training, on the C++ extension (csrc/cross_entropy.h).

F.cross_entropy on the CPU takes seven passes over the (rows, vocab) logits
between its forward and backward (log_softmax's output, a zero-filled
gradient, a scatter, log_softmax's backward).  For a word-level vocabulary
that array is large (2048 rows x 20k words: 164 MB) and every pass goes to
DRAM.  Here the forward keeps one log-sum-exp per row and the backward
writes softmax minus one-hot in one pass: 1.3x (word level, 20k) to 2.4x
(char level) F.cross_entropy, forward + backward
(benchmarks/test_cpu_loss.py).  Same contract as
``F.cross_entropy(logits, targets, ignore_index=...)`` with mean reduction
(NaN when every target is ignored); bfloat16 logits (CPU autocast) are
computed in float32, as autocast runs F.cross_entropy.
"""
from __future__ import annotations

import torch

from gptfast import _backend, hashed_dropout


def applies(logits: torch.Tensor) -> bool:
    """Whether `cross_entropy` runs in C++ for these (N, V) logits: where the
    hashed dropout does (float32 or bfloat16 on the CPU, the extension
    built, not under torch.compile)."""
    return logits.dim() == 2 and logits.shape[1] > 0 and hashed_dropout.applies(logits)


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
        logits = logits.detach().contiguous()                          # (N, V) float32
        targets = targets.detach().to(torch.int64).contiguous()        # (N,)
        N = logits.shape[0]
        lse, losses = torch.empty(N), torch.empty(N)
        _backend._C.cross_entropy_forward(logits.numpy(), targets.numpy(), ignore_index, lse.numpy(), losses.numpy())
        n_valid = int((targets != ignore_index).sum())
        ctx.save_for_backward(logits, targets, lse)
        ctx.ignore_index, ctx.n_valid = ignore_index, n_valid
        return losses.sum() / n_valid                                  # mean over the counted rows

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        logits, targets, lse = ctx.saved_tensors
        grad = torch.empty_like(logits)
        scale = float(grad_loss) / ctx.n_valid if ctx.n_valid else float("nan")
        _backend._C.cross_entropy_backward(logits.numpy(), targets.numpy(), ctx.ignore_index, lse.numpy(), scale,
                                           grad.numpy())
        return grad, None, None


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean cross-entropy of logits (N, V) against targets (N,), as F.cross_entropy."""
    return _CrossEntropy.apply(logits.float(), targets, ignore_index)   # .float(): no-op for float32
