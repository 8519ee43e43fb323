"""Helpers shared by the Triton kernels (one op per file; these are not ops).

`_mma` and `_cast` are called from inside the kernels (they work around the
Triton interpreter's bfloat16 gaps); `autotune_enabled` decides, on the
host, between autotuning and the one pinned config used under pytest.
"""
from __future__ import annotations

import os

import triton
import triton.language as tl

AUTOTUNE_ENV = "GPTFAST_AUTOTUNE"


@triton.jit
def _mma(a, b, IEEE: tl.constexpr, BF16_EMU: tl.constexpr):
    """a @ b with float32 accumulation.

    IEEE: float32 operands use full-precision FMA instead of TF32 tensor cores
    (TF32 has a 10-bit mantissa, too coarse for the 1e-4 float32 contract).
    BF16_EMU: set only under TRITON_INTERPRET for bfloat16 inputs, where the
    triton 3.9 interpreter's dot multiplies the raw uint16 bit patterns
    (triton-lang/triton#11584; the interpreter does not support bf16 math, so
    these kernels never do arithmetic on bf16 values outside _mma / _cast).
    Upcasting bf16 to fp32 is exact, so this computes what a bf16 tensor-core
    MMA with fp32 accumulation computes.
    """
    if BF16_EMU:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    if IEEE:
        c = tl.dot(a, b, input_precision="ieee")
    else:
        c = tl.dot(a, b)
    return c


@triton.jit
def _cast(x, DTYPE: tl.constexpr, BF16_EMU: tl.constexpr):
    """x.to(DTYPE) rounding to nearest-even, as the GPU does.

    The triton 3.9 interpreter truncates float32 -> bfloat16 (round toward
    zero), which doubles the rounding error; under BF16_EMU the rounding is
    done here on the bits (no NaN / overflow handling needed: finite values)
    so the interpreter tests measure the GPU's numerics.  No-op on the GPU.
    """
    if BF16_EMU:
        if DTYPE == tl.bfloat16:
            bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
            bits = (bits + (((bits >> 16) & 1) + 0x7FFF)) & 0xFFFF0000
            x = bits.to(tl.float32, bitcast=True)
    return x.to(DTYPE)


def autotune_enabled(interpreted: bool) -> bool:
    """Autotune on real GPUs, except under pytest (pinned config) unless
    GPTFAST_AUTOTUNE=1 asks for it (benchmarks do); GPTFAST_AUTOTUNE=0 disables it."""
    if interpreted:
        return False
    flag = os.environ.get(AUTOTUNE_ENV)
    if flag is not None:
        return flag not in ("", "0")
    return "PYTEST_CURRENT_TEST" not in os.environ
