"""Dropout for CPU training with a hashed mask (csrc/dropout.h).

PyTorch draws a CPU dropout mask with ``bernoulli_``, ~7 ns per element on
our 2-core machine.  Here element i of a call is kept when a hash of
(seed, i) clears a threshold: a few times faster on PyTorch's own OpenMP
threads, and nothing is stored, since the backward pass rebuilds the mask
from the seed.  Each call takes a fresh seed from torch's default
generator, so torch.manual_seed repeats a run and a checkpoint's saved RNG
state resumes it exactly.  Elsewhere (CUDA, 16-bit tensors, no extension,
torch.compile) `Dropout` is nn.Dropout.

`reference_keep_mask` computes the mask in numpy; the tests hold the C++
(this dropout and the attention kernel's) to it.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gptfast import _backend
from gptfast.sampling import splitmix64

SEED_BITS = 62   # seeds drawn from torch's generator: [0, 2^62)


# bfloat16 is what CPU autocast (--dtype bfloat16) hands over: it is masked
# in float32 and cast back, since the C++ works on float32 arrays.
DTYPES = (torch.float32, torch.bfloat16)


def applies(x: torch.Tensor) -> bool:
    """Whether the hashed C++ dropout runs for `x`: float32 or bfloat16 on
    the CPU, the extension built, not under torch.compile."""
    return (x.device.type == "cpu" and x.dtype in DTYPES and not torch.compiler.is_compiling()
            and _backend.extension() is not None)


def draw_seed() -> int:
    return int(torch.randint(0, 2**SEED_BITS, (1,)))


class _HashedDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
        x = x.detach().contiguous()
        y = torch.empty_like(x)
        _backend._C.dropout(x.view(-1).numpy(), y.view(-1).numpy(), p, seed)
        ctx.p, ctx.seed = p, seed
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.detach().contiguous()
        out = torch.empty_like(grad)
        _backend._C.dropout(grad.view(-1).numpy(), out.view(-1).numpy(), ctx.p, ctx.seed)   # the same mask
        return out, None, None


def dropout(x: torch.Tensor, p: float, training: bool = True, seed: int | None = None) -> torch.Tensor:
    """F.dropout's contract (zero with probability p, scale the rest by
    1 / (1 - p)) with the hashed mask where `applies`."""
    if not training or p == 0.0:
        return x
    if not applies(x) or not 0.0 < p < 1.0:
        return F.dropout(x, p, True)
    y = _HashedDropout.apply(x.float(), p, draw_seed() if seed is None else seed)
    return y.to(x.dtype)   # no-ops for float32


class Dropout(nn.Dropout):
    """nn.Dropout (same p, repr and empty state dict) running `dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


# ------------------------------------------------------------------ reference
_U64 = np.uint64


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """csrc/rng.h's splitmix64 on uint64 arrays (arithmetic mod 2^64): the
    vector twin of gptfast.sampling.splitmix64."""
    x = x + _U64(0x9E3779B97F4A7C15)
    z = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


def reference_keep_mask(n: int, p: float, seed: int) -> np.ndarray:
    """keep[i] for i < n as csrc/dropout.h defines it (bool, (n,))."""
    key = _U64(splitmix64(seed))   # the sampler's scalar splitmix64
    with np.errstate(over="ignore"):
        h = _splitmix64(key + np.arange(n, dtype=_U64))
    # std::round's halves go away from zero; Python's round() would go to even.
    threshold = min(math.floor(p * 2**32 + 0.5), 2**32 - 1)
    return h >> _U64(32) >= threshold
