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


# Rows per chunk of the fused lm-head loss: chunk_rows * vocab logits (16 MB)
# stay in cache between their matmul and the loss that reads them (2^20 to
# 2^24 measured: 2^22-2^23 fastest at 2048 x 256 -> 20k).
CHUNK_LOGITS = 1 << 22


class _LinearCrossEntropy(torch.autograd.Function):
    """mean CE(x W^T + b, targets) without the (N, V) logits: rows go through
    in chunks, and each chunk's gradient (softmax minus one-hot, written over
    its logits) goes into dx, dW and db during the forward pass, so the
    backward pass only scales them by grad_loss / n_valid."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias, targets: torch.Tensor, ignore_index: int,
                grad_enabled: bool):
        x, weight = x.detach().contiguous(), weight.detach()
        targets = targets.detach().to(torch.int64).contiguous()
        (N, C), V = x.shape, weight.shape[0]
        rows = max(1, min(N, CHUNK_LOGITS // V))
        # needs_input_grad says True under torch.no_grad too: evaluation would form gradients for nothing.
        need = [grad_enabled and n for n in ctx.needs_input_grad[:3]]
        grads = any(need)
        logits = torch.empty(rows, V)                                  # (rows, V), reused
        lse, losses = torch.empty(rows), torch.empty(N)
        dx = torch.empty(N, C) if need[0] else None                    # (N, C)
        dw = torch.zeros(V, C) if need[1] else None                    # (V, C)
        db = torch.zeros(V) if bias is not None and need[2] else None  # (V,)
        for r0 in range(0, N, rows):
            xc, tc = x[r0:r0 + rows], targets[r0:r0 + rows]            # (n, C), (n,)
            n = xc.shape[0]
            lc = logits[:n]
            if bias is None:
                torch.mm(xc, weight.t(), out=lc)
            else:
                torch.addmm(bias.detach(), xc, weight.t(), out=lc)
            _backend._C.cross_entropy_forward(lc.numpy(), tc.numpy(), ignore_index, lse[:n].numpy(),
                                              losses[r0:r0 + n].numpy())
            if not grads:
                continue
            _backend._C.cross_entropy_backward(lc.numpy(), tc.numpy(), ignore_index, lse[:n].numpy(), 1.0,
                                               lc.numpy())                # in place: lc = softmax - one-hot
            if dx is not None:
                torch.mm(lc, weight, out=dx[r0:r0 + n])
            if dw is not None:
                dw.addmm_(lc.t(), xc)
            if db is not None:
                db += lc.sum(0)
        ctx.n_valid = int((targets != ignore_index).sum())
        ctx.save_for_backward(dx, dw, db)
        return losses.sum() / ctx.n_valid

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        dx, dw, db = ctx.saved_tensors
        scale = float(grad_loss) / ctx.n_valid if ctx.n_valid else float("nan")
        return tuple(None if g is None else g * scale for g in (dx, dw, db)) + (None, None, None)


def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, bias, targets: torch.Tensor,
                         ignore_index: int = -100) -> torch.Tensor:
    """cross_entropy(x @ weight^T + bias, targets) for x (N, C), weight (V, C),
    without materializing the (N, V) logits or their gradient."""
    return _LinearCrossEntropy.apply(x, weight, bias, targets, ignore_index, torch.is_grad_enabled())


def linear_applies(x: torch.Tensor) -> bool:
    """Whether `linear_cross_entropy` should compute the lm-head loss of
    these (N, C) activations: float32 on the CPU where the C++ loss runs,
    outside autocast (under bfloat16 autocast the lm-head matmul is cheaper
    in bfloat16, through the plain lm-head and `cross_entropy`)."""
    return x.dtype == torch.float32 and hashed_dropout.applies(x) and not torch.is_autocast_enabled("cpu")
