"""Fused LayerNorm (+ optional residual add): Triton forward and backward.

Public API
----------
``layer_norm(x, weight, bias=None, eps=1e-5, residual=None)``
    x: (..., N), any strides, float32 / float16 / bfloat16, N <= 16384.
    weight: (N,), bias: (N,) or None (any float dtype; their grads come back in it).
    Without residual returns y = (x - mean) / sqrt(var + eps) * weight + bias.
    With residual (same shape as x) returns ``(y, h)`` with h = x + residual and
    y = LayerNorm(h): the pre-LN block pattern ``h = h + f(h); y = ln(h)`` in
    one pass over memory; h is returned because the block carries it forward.
    y and h take the dtype torch's ``x + residual`` would (``torch.result_type``),
    i.e. x's dtype when they match.  Differentiable in x, residual, weight, bias.

``FusedLayerNorm(n, bias=True, eps=1e-5)``
    nn.Module drop-in for ``nn.LayerNorm(n, bias=bias, eps=eps)``: the same
    parameter names (``weight``, ``bias``), so state dicts load either way.
    ``forward(x, residual=None)``.  Falls back to torch (warning once) where the
    kernels cannot run (CPU tensors without TRITON_INTERPRET) or when
    GPTFAST_REFERENCE=1 forces the reference.

``layer_norm_reference(x, weight, bias, eps, residual)``
    The same op as plain PyTorch (float64 when given float64): the tests' ground truth.

How it works
------------
forward   one program per block of BLOCK_M rows; a row fits in one BLOCK_N =
          next_power_of_2(N) tile (masked past N), so mean and variance are two
          exact passes over registers, in float32 whatever the input dtype.
          h = x + residual is summed in float32, stored once (rounded to its
          dtype) and normalised from the float32 value.  Saves mean and rstd
          (float32, one per row) for the backward.
backward  with xhat = (h - mean) * rstd and g = weight * dy (per row):
              dh = rstd * (g - xhat * mean(g * xhat) - mean(g)) + dh_out
          where dh_out is the gradient of the returned h (the residual stream).
          dx = d(residual) = dh.  dweight = sum_rows(dy * xhat), dbias =
          sum_rows(dy): a fixed number G of programs each stride over row
          blocks and write one float32 partial row; torch sums the (G, N)
          partials.  No atomics, so gradients are bit-reproducible.
          xhat is recomputed from the stored h (rounded to h's dtype) and the
          float32 statistics; the difference is below one ulp of h's dtype.
"""
from __future__ import annotations

import os
import warnings
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from gptfast.kernels._common import _cast, autotune_enabled
from torch import nn

try:  # the interpreter's function type: kernels are InterpretedFunction when TRITON_INTERPRET=1
    from triton.runtime.interpreter import InterpretedFunction as _InterpretedFunction
except ImportError:  # pragma: no cover - other triton layouts
    _InterpretedFunction = ()

__all__ = ["layer_norm", "layer_norm_reference", "FusedLayerNorm", "LayerNormFunction"]

_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# One row lives in one tile; past this the registers spill (use nn.LayerNorm).
MAX_N = 16384


# ----------------------------------------------------------------------------
# jit helpers
# ----------------------------------------------------------------------------
# ----------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------
@triton.jit
def _ln_fwd_kernel(
    X, R, W, B, Y, H, MEAN, RSTD,  # X, R, Y, H: (M, N); W, B: (N,) contiguous; MEAN, RSTD: (M,) f32
    stride_xm, stride_xn, stride_rm, stride_rn,
    stride_ym, stride_yn, stride_hm, stride_hn,
    M, N, eps,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr, HAS_BIAS: tl.constexpr, BF16_EMU: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,)
    cols = tl.arange(0, BLOCK_N)  # (BLOCK_N,)
    row_mask = rows < M
    col_mask = cols < N
    mask = row_mask[:, None] & col_mask[None, :]
    rows64 = rows.to(tl.int64)[:, None]  # M * stride passes 2**31 for big activations

    x = tl.load(X + rows64 * stride_xm + cols[None, :] * stride_xn, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        r = tl.load(R + rows64 * stride_rm + cols[None, :] * stride_rn, mask=mask, other=0.0).to(tl.float32)
        x = x + r
        tl.store(H + rows64 * stride_hm + cols[None, :] * stride_hn,
                 _cast(x, H.dtype.element_ty, BF16_EMU), mask=mask)

    # Two-pass statistics over the register tile: exact, no E[x^2] - E[x]^2 cancellation.
    mean = tl.sum(x, axis=1) / N  # (BLOCK_M,); masked lanes loaded as 0
    xc = tl.where(mask, x - mean[:, None], 0.0)
    var = tl.sum(xc * xc, axis=1) / N  # biased, as nn.LayerNorm
    rstd = tl.rsqrt(var + eps)
    tl.store(MEAN + rows, mean, mask=row_mask)
    tl.store(RSTD + rows, rstd, mask=row_mask)

    w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)
    y = xc * rstd[:, None] * w[None, :]
    if HAS_BIAS:
        y += tl.load(B + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    tl.store(Y + rows64 * stride_ym + cols[None, :] * stride_yn,
             _cast(y, Y.dtype.element_ty, BF16_EMU), mask=mask)


# ----------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------
@triton.jit
def _ln_bwd_kernel(
    DY, DH_OUT, H, W, MEAN, RSTD,  # DY, DH_OUT, H: (M, N); W: (N,); MEAN, RSTD: (M,) f32
    DX, DR, DW_PART, DB_PART,  # DX, DR: (M, N); DW_PART, DB_PART: (G, N) f32, row = program
    stride_dym, stride_dyn, stride_dhm, stride_dhn, stride_hm, stride_hn,
    stride_dxm, stride_dxn, stride_drm, stride_drn,
    M, N,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_DH: tl.constexpr, HAS_DR: tl.constexpr, HAS_BIAS: tl.constexpr, BF16_EMU: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    col_mask = cols < N
    w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)  # (BLOCK_N,)
    # Per-program partial sums for dweight / dbias, reduced over rows at the end.
    dw_acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    db_acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)

    n_blocks = tl.cdiv(M, BLOCK_M)
    for blk in range(pid, n_blocks, tl.num_programs(0)):  # grid-stride over row blocks
        rows = blk * BLOCK_M + tl.arange(0, BLOCK_M)
        row_mask = rows < M
        mask = row_mask[:, None] & col_mask[None, :]
        rows64 = rows.to(tl.int64)[:, None]
        h = tl.load(H + rows64 * stride_hm + cols[None, :] * stride_hn, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows64 * stride_dym + cols[None, :] * stride_dyn, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(MEAN + rows, mask=row_mask, other=0.0)
        rstd = tl.load(RSTD + rows, mask=row_mask, other=0.0)

        # Masked lanes: h = dy = 0 and xhat forced to 0, so they add nothing to the sums.
        xhat = tl.where(mask, (h - mean[:, None]) * rstd[:, None], 0.0)
        g = dy * w[None, :]
        c1 = tl.sum(g * xhat, axis=1) / N  # (BLOCK_M,)
        c2 = tl.sum(g, axis=1) / N
        dx = (g - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
        if HAS_DH:  # the returned h also feeds the rest of the network
            dx += tl.load(DH_OUT + rows64 * stride_dhm + cols[None, :] * stride_dhn,
                          mask=mask, other=0.0).to(tl.float32)
        tl.store(DX + rows64 * stride_dxm + cols[None, :] * stride_dxn,
                 _cast(dx, DX.dtype.element_ty, BF16_EMU), mask=mask)
        if HAS_DR:  # residual of another dtype gets its own buffer (same values)
            tl.store(DR + rows64 * stride_drm + cols[None, :] * stride_drn,
                     _cast(dx, DR.dtype.element_ty, BF16_EMU), mask=mask)
        dw_acc += dy * xhat
        if HAS_BIAS:
            db_acc += dy

    part = pid.to(tl.int64) * N + cols
    tl.store(DW_PART + part, tl.sum(dw_acc, axis=0), mask=col_mask)
    if HAS_BIAS:
        tl.store(DB_PART + part, tl.sum(db_acc, axis=0), mask=col_mask)


# ----------------------------------------------------------------------------
# Launch configuration: autotuned on CUDA, one pinned config under pytest /
# TRITON_INTERPRET (deterministic and fast).
# ----------------------------------------------------------------------------
_INTERPRETED = bool(_InterpretedFunction) and isinstance(_ln_fwd_kernel, _InterpretedFunction)

# Pinned: BLOCK_M rows per tile, capped so the tile stays <= PINNED_TILE elements.
# Tests may monkeypatch these to check block-size independence.
PINNED_FWD = dict(BLOCK_M=16, num_warps=4)
PINNED_BWD = dict(BLOCK_M=8, num_warps=4)
PINNED_TILE = 8192
# Programs of the backward on the interpreter: few, so each strides over several
# row blocks (exercises the grid-stride loop and the partial reduction).
INTERPRET_BWD_PROGRAMS = 3


def _autotune_enabled() -> bool:
    return autotune_enabled(_INTERPRETED)

def _prune_tile(configs, named_args, **kwargs):
    """Keep configs whose (BLOCK_M, BLOCK_N) tile is 512..16384 elements (small
    rows batch several per program, wide rows get one); never returns empty."""
    block_n = kwargs.get("BLOCK_N", named_args.get("BLOCK_N"))
    kept = [c for c in configs if 512 <= c.kwargs["BLOCK_M"] * block_n <= 16384
            or (c.kwargs["BLOCK_M"] == 1 and block_n > 16384)]
    kept = kept or [min(configs, key=lambda c: c.kwargs["BLOCK_M"])]
    # Many warps only pay for wide tiles: drop 16 warps on tiles under 8192 elements.
    wide = [c for c in kept if c.num_warps < 16 or c.kwargs["BLOCK_M"] * block_n >= 8192]
    return wide or kept


def _tuned_configs():
    return [triton.Config({"BLOCK_M": bm}, num_warps=w)
            for bm in (1, 2, 4, 8, 16, 32) for w in (2, 4, 8, 16)]


# Keyed on the row width (the autotuner adds the tensors' dtypes to the key).
if not _INTERPRETED:
    _ln_fwd_tuned = triton.autotune(_tuned_configs(), key=["N"],
                                    prune_configs_by={"early_config_prune": _prune_tile})(_ln_fwd_kernel)
    _ln_bwd_tuned = triton.autotune(_tuned_configs(), key=["N"],
                                    prune_configs_by={"early_config_prune": _prune_tile})(_ln_bwd_kernel)
else:
    _ln_fwd_tuned = _ln_bwd_tuned = None


def _pinned(pinned: dict, block_n: int) -> dict:
    cfg = dict(pinned)
    cfg["BLOCK_M"] = max(1, min(cfg["BLOCK_M"], PINNED_TILE // block_n))
    return cfg


def _bwd_num_programs(M: int, device: torch.device) -> int:
    """G, the number of backward programs (= rows of the partial dW / dB buffers).
    Fixed before launch, independent of BLOCK_M: programs without a row block write zeros."""
    if _INTERPRETED:
        return max(1, min(M, INTERPRET_BWD_PROGRAMS))
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(M, 2 * sms))


# ----------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------
def _kernels_can_run(device: torch.device) -> bool:
    return (device.type == "cuda" and not _INTERPRETED) or (device.type == "cpu" and _INTERPRETED)


def _check_device(device: torch.device) -> None:
    if _kernels_can_run(device):
        return
    if device.type == "cuda":
        raise RuntimeError("layer_norm: TRITON_INTERPRET=1 was set when gptfast.kernels was imported, so the "
                           "kernels run on the CPU interpreter; pass CPU tensors or unset TRITON_INTERPRET")
    raise RuntimeError(f"layer_norm: got {device} tensors; the Triton kernels need CUDA tensors (or CPU tensors "
                       "with TRITON_INTERPRET=1 set before gptfast.kernels is imported, for tests)")


def _validate(x, weight, bias, eps, residual) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise ValueError("layer_norm: x must be a tensor of shape (..., N)")
    N = x.shape[-1]
    for name, t in (("x", x), ("weight", weight), ("bias", bias), ("residual", residual)):
        if t is None:
            continue
        if t.dtype not in _SUPPORTED_DTYPES:
            raise TypeError(f"layer_norm: {name} dtype {t.dtype} not supported; use float32, float16 or bfloat16")
        if t.device != x.device:
            raise ValueError(f"layer_norm: {name} is on {t.device}, x on {x.device}")
    if weight is None or weight.shape != (N,):
        raise ValueError(f"layer_norm: weight must have shape ({N},), got "
                         f"{None if weight is None else tuple(weight.shape)}")
    if bias is not None and bias.shape != (N,):
        raise ValueError(f"layer_norm: bias must have shape ({N},), got {tuple(bias.shape)}")
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"layer_norm: residual shape {tuple(residual.shape)} != x shape {tuple(x.shape)}")
    if not 1 <= N <= MAX_N:
        raise ValueError(f"layer_norm: row width N={N} outside 1..{MAX_N} (one row per tile); use nn.LayerNorm")
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ValueError(f"layer_norm: eps must be a positive float, got {eps!r}")
    _check_device(x.device)


def _flags(*dtypes) -> dict:
    return dict(BF16_EMU=_INTERPRETED and torch.bfloat16 in dtypes)


def _ln_fwd(x2, r2, weight, bias, eps: float, out_dtype: torch.dtype):
    """x2, r2: (M, N) -> y (M, N), h (M, N) or None, mean (M,) f32, rstd (M,) f32."""
    M, N = x2.shape
    y = torch.empty((M, N), device=x2.device, dtype=out_dtype)
    h = torch.empty((M, N), device=x2.device, dtype=out_dtype) if r2 is not None else None
    mean = torch.empty(M, device=x2.device, dtype=torch.float32)
    rstd = torch.empty(M, device=x2.device, dtype=torch.float32)
    BLOCK_N = triton.next_power_of_2(N)
    r_ = r2 if r2 is not None else x2  # dummy pointer, never read when HAS_RESIDUAL=False
    h_ = h if h is not None else y
    b_ = bias if bias is not None else weight
    args = (x2, r_, weight, b_, y, h_, mean, rstd,
            *x2.stride(), *r_.stride(), *y.stride(), *h_.stride(), M, N, float(eps))
    constexprs = dict(BLOCK_N=BLOCK_N, HAS_RESIDUAL=r2 is not None, HAS_BIAS=bias is not None,
                      **_flags(out_dtype))
    if _ln_fwd_tuned is not None and _autotune_enabled():
        _ln_fwd_tuned[lambda meta: (triton.cdiv(M, meta["BLOCK_M"]),)](*args, **constexprs)
    else:
        cfg = _pinned(PINNED_FWD, BLOCK_N)
        _ln_fwd_kernel[(triton.cdiv(M, cfg["BLOCK_M"]),)](*args, **constexprs, **cfg)
    return y, h, mean, rstd


def _ln_bwd(dy2, dh2, h2, weight, mean, rstd, has_bias: bool, x_dtype, r_dtype):
    """-> dx (M, N) in x_dtype, dr (M, N) in r_dtype or None, dw (N,) f32, db (N,) f32 or None."""
    M, N = h2.shape
    dev = h2.device
    dx = torch.empty((M, N), device=dev, dtype=x_dtype)
    dr = torch.empty((M, N), device=dev, dtype=r_dtype) if r_dtype not in (None, x_dtype) else None
    G = _bwd_num_programs(M, dev)
    dw_part = torch.empty((G, N), device=dev, dtype=torch.float32)
    db_part = torch.empty((G, N), device=dev, dtype=torch.float32) if has_bias else dw_part
    dh_ = dh2 if dh2 is not None else dy2  # dummy pointers when absent
    dr_ = dr if dr is not None else dx
    BLOCK_N = triton.next_power_of_2(N)
    args = (dy2, dh_, h2, weight, mean, rstd, dx, dr_, dw_part, db_part,
            *dy2.stride(), *dh_.stride(), *h2.stride(), *dx.stride(), *dr_.stride(), M, N)
    constexprs = dict(BLOCK_N=BLOCK_N, HAS_DH=dh2 is not None, HAS_DR=dr is not None, HAS_BIAS=has_bias,
                      **_flags(x_dtype, r_dtype))
    if _ln_bwd_tuned is not None and _autotune_enabled():
        _ln_bwd_tuned[(G,)](*args, **constexprs)
    else:
        _ln_bwd_kernel[(G,)](*args, **constexprs, **_pinned(PINNED_BWD, BLOCK_N))
    # (G, N) -> (N,): a fixed-order torch reduction, deterministic.
    return dx, dr, dw_part.sum(0), (db_part.sum(0) if has_bias else None)


class LayerNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, residual, eps: float):
        shape = x.shape
        N = shape[-1]
        out_dtype = torch.result_type(x, residual) if residual is not None else x.dtype
        x2 = x.reshape(-1, N)  # a view when x's rows are evenly strided, else a copy
        r2 = residual.reshape(-1, N) if residual is not None else None
        w = weight.contiguous()
        b = bias.contiguous() if bias is not None else None
        y, h, mean, rstd = _ln_fwd(x2, r2, w, b, eps, out_dtype)
        # The backward needs the normalised input: h with a residual, else x itself.
        ctx.save_for_backward(h if h is not None else x2, w, mean, rstd)
        ctx.has_bias = bias is not None
        ctx.shape = shape
        ctx.dtypes = (x.dtype, residual.dtype if residual is not None else None, weight.dtype,
                      bias.dtype if bias is not None else None)
        # Undefined output grads stay None (y unused, or h unused): no zero tensors to read.
        ctx.set_materialize_grads(False)
        if h is None:
            return y.view(shape)
        return y.view(shape), h.view(shape)

    @staticmethod
    def backward(ctx, dy, dh=None):
        h2, w, mean, rstd = ctx.saved_tensors
        x_dtype, r_dtype, w_dtype, b_dtype = ctx.dtypes
        N = h2.shape[-1]
        if dy is None:  # only h was used downstream: LayerNorm contributes nothing
            if dh is None:
                return None, None, None, None, None
            return (dh.to(x_dtype), None, None, dh.to(r_dtype) if r_dtype is not None else None, None)
        dy2 = dy.reshape(-1, N)
        dh2 = dh.reshape(-1, N) if dh is not None else None
        dx, dr, dw, db = _ln_bwd(dy2, dh2, h2, w, mean, rstd, ctx.has_bias, x_dtype, r_dtype)
        dx = dx.view(ctx.shape)
        dres = None
        if r_dtype is not None:
            dres = dr.view(ctx.shape) if dr is not None else dx  # d(residual) = dx: same values
        return (dx, dw.to(w_dtype), db.to(b_dtype) if db is not None else None, dres, None)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, eps: float = 1e-5,
               residual: Optional[torch.Tensor] = None
               ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """LayerNorm over the last dim of x (..., N); with `residual`, returns
    (LayerNorm(x + residual), x + residual).  See the module docstring."""
    _validate(x, weight, bias, eps, residual)
    return LayerNormFunction.apply(x, weight, bias, residual, float(eps))


def layer_norm_reference(x, weight, bias=None, eps: float = 1e-5, residual=None):
    """The same op in plain PyTorch, in the inputs' dtype (float64 in, float64 out)."""
    h = x + residual if residual is not None else x
    y = F.layer_norm(h, (h.shape[-1],), weight.to(h.dtype), bias.to(h.dtype) if bias is not None else None, eps)
    return (y, h) if residual is not None else y


# ----------------------------------------------------------------------------
# nn.Module drop-in
# ----------------------------------------------------------------------------
_fallback_warned = False


def _use_reference(device: torch.device) -> bool:
    """True where the kernels cannot run (warns once) or GPTFAST_REFERENCE=1."""
    global _fallback_warned
    if os.environ.get("GPTFAST_REFERENCE", "") not in ("", "0"):
        return True
    if _kernels_can_run(device):
        return False
    if not _fallback_warned:
        _fallback_warned = True
        warnings.warn(f"FusedLayerNorm: the Triton kernels cannot run on {device} tensors; "
                      "using torch's layer_norm", RuntimeWarning, stacklevel=3)
    return True


class FusedLayerNorm(nn.Module):
    """Drop-in for ``nn.LayerNorm(n, eps=eps, bias=bias)`` with an optional fused
    residual add: ``forward(x)`` -> y, ``forward(x, residual)`` -> (y, x + residual).
    Parameters ``weight`` (N,) and ``bias`` (N,) or None, as nn.LayerNorm names them."""

    def __init__(self, n: int, bias: bool = True, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.normalized_shape = (int(n),)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n, device=device, dtype=dtype))
        if bias:
            self.bias = nn.Parameter(torch.zeros(n, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None):
        if _use_reference(x.device):
            return layer_norm_reference(x, self.weight, self.bias, self.eps, residual)
        return layer_norm(x, self.weight, self.bias, self.eps, residual)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, bias={self.bias is not None}"
