"""Causal attention with dropout for CPU training, on the C++ extension.

PyTorch's CPU flash attention takes no dropout, so with dropout SDPA falls
back to its math path: the B x H x T x T probabilities go through memory
several times and the mask is drawn with bernoulli_.  `csrc/cpu_attention.h`
takes four query rows at a time through scores, softmax, mask and values in
registers, and its backward pass derives the probabilities from the saved
log-sum-exp; the mask is a hash of (seed, batch*head, query, key), so it is
never stored either.  3.4x faster than SDPA's math path on the quijote
preset's attention, forward and backward (benchmarks/test_cpu_dropout.py).

Each call takes a fresh seed from torch's default generator (see
gptfast/hashed_dropout.py, whose mask this is).  `reference_keep_mask` is the
mask in numpy; the tests check the kernel against the reference attention
under that mask.
"""
from __future__ import annotations

import numpy as np
import torch

from gptfast import _backend, hashed_dropout


def applies(q: torch.Tensor, dropout_p: float, mask) -> bool:
    """Whether `attention` should run this call: training-time dropout on
    float32 or bfloat16 CPU tensors, causal (no explicit mask), outside
    torch.compile."""
    return dropout_p > 0.0 and mask is None and hashed_dropout.applies(q)


def _heads_out(B: int, H: int, T: int, D: int) -> torch.Tensor:
    """A new (B, H, T, D) tensor laid out as (B, T, H, D): what the model turns
    into (B, T, C) next, and what autograd turns back into the qkv layout,
    both without a copy."""
    return torch.empty(B, T, H, D).transpose(1, 2)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()   # a strided view, no copy


class _Attention(torch.autograd.Function):
    # q, k, v stay the model's strided views (slices of one qkv projection):
    # the kernel reads and writes (B, H, T, D) with any strides, so neither
    # direction copies a tensor into another layout.
    @staticmethod
    def forward(ctx, q, k, v, p: float, seed: int):
        q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
        B, H, T, D = q.shape
        out = _heads_out(B, H, T, D)
        lse = torch.empty(B * H, T)
        scale = D ** -0.5
        _backend._C.attention_forward(_np(q), _np(k), _np(v), _np(out), lse.numpy(), scale, p, seed)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.p, ctx.seed, ctx.scale = p, seed, scale
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        if dout.stride(-1) != 1:
            dout = dout.contiguous()
        dq, dk, dv = (_heads_out(*q.shape) for _ in range(3))
        _backend._C.attention_backward(_np(q), _np(k), _np(v), _np(out), lse.numpy(), _np(dout),
                                       _np(dq), _np(dk), _np(dv), ctx.scale, ctx.p, ctx.seed)
        return dq, dk, dv, None, None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float,
              seed: int | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(D), causal) with dropout p, then @ v: q, k, v (B, H, T, D) -> (B, H, T, D).
    bfloat16 inputs (CPU autocast) are computed in float32, as autocast
    computes a softmax, and the output is cast back."""
    out = _Attention.apply(q.float(), k.float(), v.float(), dropout_p,   # .float(): no-op for float32
                           hashed_dropout.draw_seed() if seed is None else seed)
    return out.to(q.dtype)


def reference_keep_mask(bh: int, T: int, p: float, seed: int) -> np.ndarray:
    """keep[bh, i, j] as csrc/cpu_attention.h defines it: the hashed mask of
    a flat (bh, T, T) array (bool)."""
    return hashed_dropout.reference_keep_mask(bh * T * T, p, seed).reshape(bh, T, T)
