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
    backward pass only scales them by grad_loss / n_valid.  The matmuls run
    in `matmul_dtype` (bfloat16 under CPU autocast, as the plain lm-head
    would), the loss and the accumulated gradients in float32."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias, targets: torch.Tensor, ignore_index: int,
                grad_enabled: bool, matmul_dtype: torch.dtype):
        targets = targets.detach().to(torch.int64).contiguous()
        (N, C), V = x.shape, weight.shape[0]
        bad = ((targets < 0) | (targets >= V)) & (targets != ignore_index)
        if bad.any():   # here, so the message names the row of the batch rather than of a chunk
            row = int(bad.nonzero()[0])
            raise ValueError(f"target {int(targets[row])} of row {row} is outside [0, {V})")
        rows = max(1, min(N, CHUNK_LOGITS // V))
        # needs_input_grad says True under torch.no_grad too: evaluation would form gradients for nothing.
        need = [grad_enabled and n for n in ctx.needs_input_grad[:3]]
        low = matmul_dtype != torch.float32
        with torch.autocast("cpu", enabled=False):   # every dtype below is chosen here
            xm = x.detach().to(matmul_dtype).contiguous()                  # (N, C)
            wm = weight.detach().to(matmul_dtype)                          # (V, C)
            bm = None if bias is None else bias.detach().to(matmul_dtype)  # (V,)
            logits = torch.empty(rows, V)                                  # (rows, V) float32, reused
            low_buf = torch.empty(rows, V, dtype=matmul_dtype) if low else None   # matmul in/out in 16 bits
            lse, losses = torch.empty(rows), torch.empty(N)
            dx = torch.empty(N, C) if need[0] else None                    # (N, C)
            dw = torch.zeros(V, C) if need[1] else None                    # (V, C)
            db = torch.zeros(V) if bias is not None and need[2] else None  # (V,)
            for r0 in range(0, N, rows):
                xc, tc = xm[r0:r0 + rows], targets[r0:r0 + rows]           # (n, C), (n,)
                n = xc.shape[0]
                lc = logits[:n]
                mc = low_buf[:n] if low else lc
                if bm is None:
                    torch.mm(xc, wm.t(), out=mc)
                else:
                    torch.addmm(bm, xc, wm.t(), out=mc)
                if low:
                    lc.copy_(mc)
                _backend._C.cross_entropy_forward(lc.numpy(), tc.numpy(), ignore_index, lse[:n].numpy(),
                                                  losses[r0:r0 + n].numpy())
                if not any(need):
                    continue
                _backend._C.cross_entropy_backward(lc.numpy(), tc.numpy(), ignore_index, lse[:n].numpy(), 1.0,
                                                   lc.numpy())             # in place: lc = softmax - one-hot
                if low:
                    mc.copy_(lc)                                           # the gradient in 16 bits
                if dx is not None:
                    if low:
                        dx[r0:r0 + n] = torch.mm(mc, wm)
                    else:
                        torch.mm(mc, wm, out=dx[r0:r0 + n])
                if dw is not None:
                    if low:
                        dw += torch.mm(mc.t(), xc)                         # a chunk's partial, summed in float32
                    else:
                        dw.addmm_(mc.t(), xc)
                if db is not None:
                    db += lc.sum(0)
        ctx.n_valid = int((targets != ignore_index).sum())
        ctx.save_for_backward(dx, dw, db)
        return losses.sum() / ctx.n_valid

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        dx, dw, db = ctx.saved_tensors
        scale = float(grad_loss) / ctx.n_valid if ctx.n_valid else float("nan")
        return tuple(None if g is None else g * scale for g in (dx, dw, db)) + (None, None, None, None)


def _matmul_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype


def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, bias, targets: torch.Tensor,
                         ignore_index: int = -100) -> torch.Tensor:
    """cross_entropy(x @ weight^T + bias, targets) for x (N, C), weight (V, C),
    without materializing the (N, V) logits or their gradient."""
    return _LinearCrossEntropy.apply(x, weight, bias, targets, ignore_index, torch.is_grad_enabled(),
                                     _matmul_dtype(x))


def linear_applies(x: torch.Tensor) -> bool:
    """Whether `linear_cross_entropy` can compute the lm-head loss of these
    (N, C) activations: on the CPU where the C++ loss runs, with float32 or
    bfloat16 matmuls (bfloat16 autocast included)."""
    return hashed_dropout.applies(x) and _matmul_dtype(x) in hashed_dropout.DTYPES
