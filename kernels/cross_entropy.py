"""Fused cross-entropy over the vocabulary: Triton forward and backward.

Public API
----------
``cross_entropy(logits, targets, ignore_index=-1, reduction="mean", inplace_grad=False)``
    logits: (N, V), any strides, float32 / float16 / bfloat16; targets: (N,)
    int64 / int32 in [0, V) or ``ignore_index``.  reduction "mean" (over the
    rows whose target is not ignore_index), "sum" or "none" (per-row losses,
    0 on ignored rows).  Same semantics as ``F.cross_entropy`` except that the
    loss is always float32 (as under autocast, which runs cross_entropy in
    float32); all math is float32.  Differentiable in logits.  A target
    outside [0, V) that is not ignore_index gives a NaN loss and NaN gradient
    row (torch raises, which would cost a host sync here).

``linear_cross_entropy(x, weight, targets, bias=None, ignore_index=-1, reduction="mean", chunk=None)``
    cross_entropy(x @ weight.T + bias, targets) without the (N, V) logits ever
    existing at once: rows are processed ``chunk`` at a time (the lm-head
    pattern).  x: (N, D), weight: (V, D).  reduction "mean" or "sum".

``cross_entropy_reference(logits, targets, ignore_index, reduction)``
    F.cross_entropy in the logits' dtype (float64 in, float64 out): the tests' ground truth.

How it works
------------
forward   one program per block of BLOCK_N rows streams the vocabulary in
          BLOCK_V chunks keeping a running max m and a running sum
          d = sum exp(x - m) per row (online log-sum-exp), so the softmax never
          exists in memory.  loss = lse - x[target], lse = m + log d.  Saves
          lse (float32, one per row).
backward  default: the gradient is recomputed from the saved logits and lse
          into a new buffer of logits' shape and dtype:
              dlogits = (exp(x - lse) - onehot(target)) * grad_out * scale
          with scale = 1 / n_valid for "mean" and 1 otherwise; ignored rows
          get exactly 0.  Traffic: forward reads the logits once, the backward
          reads them once and writes the gradient once (2 reads + 1 write,
          torch's log_softmax + nll path does more), no host sync anywhere
          (n_valid stays a device tensor).
inplace_grad=True (opt-in, Liger-Kernel style): when logits require grad, the
          forward makes a second pass that writes (softmax - onehot) * scale
          *into the logits tensor itself*; the backward multiplies it by
          grad_out in place (one more pass, no sync) and returns that very
          buffer as the gradient.  Saves one (N, V) buffer of peak memory at
          the price of one extra read + write.  The logits' contents are
          destroyed: use it only when nothing else needs them (true for
          ``logits = lm_head(h)``: the matmul saves h and W, not its output).
          The logits' autograd version counter is bumped, so an op that did
          save them raises "modified by an inplace operation" in backward
          instead of silently computing a wrong gradient.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from gptfast.kernels._common import _cast, autotune_enabled

try:  # the interpreter's function type: kernels are InterpretedFunction when TRITON_INTERPRET=1
    from triton.runtime.interpreter import InterpretedFunction as _InterpretedFunction
except ImportError:  # pragma: no cover - other triton layouts
    _InterpretedFunction = ()

__all__ = ["cross_entropy", "linear_cross_entropy", "cross_entropy_reference", "CrossEntropyFunction"]

_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_REDUCTIONS = ("mean", "sum", "none")
_MAX_GRID = 2**31 - 1


# ----------------------------------------------------------------------------
# jit helpers
# ----------------------------------------------------------------------------
@triton.jit
def _write_grad(
    LOGITS, GRAD, stride_ln, stride_lv, stride_gn, stride_gv,
    rows64, row_mask, valid, bad, tgt, lse, scale,  # (BLOCK_N,) each; scale f32 per row
    V, BLOCK_V: tl.constexpr, BF16_EMU: tl.constexpr,
):
    """GRAD[rows] = (softmax(LOGITS[rows]) - onehot(tgt)) * scale, 0 on ignored
    rows, NaN on rows with an out-of-range target.
    GRAD may be LOGITS itself: each block is read before it is overwritten."""
    for start in range(0, V, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)  # (BLOCK_V,)
        col_mask = cols < V
        cols64 = cols.to(tl.int64)[None, :]
        x = tl.load(LOGITS + rows64[:, None] * stride_ln + cols64 * stride_lv,
                    mask=valid[:, None] & col_mask[None, :], other=0.0).to(tl.float32)
        p = tl.exp(x - lse[:, None])  # (BLOCK_N, BLOCK_V) softmax, recomputed
        g = tl.where(cols[None, :] == tgt[:, None], p - 1.0, p) * scale[:, None]
        g = tl.where(valid[:, None], g, tl.where(bad[:, None], float("nan"), 0.0))
        tl.store(GRAD + rows64[:, None] * stride_gn + cols64 * stride_gv,
                 _cast(g, GRAD.dtype.element_ty, BF16_EMU), mask=row_mask[:, None] & col_mask[None, :])


@triton.jit
def _load_targets(TARGETS, stride_t, rows, n_rows, V, ignore_index):
    """-> rows64, row_mask, tgt (int64), valid (row exists, target in [0, V)),
    bad (row exists, target neither ignore_index nor in [0, V))."""
    row_mask = rows < n_rows
    rows64 = rows.to(tl.int64)
    tgt = tl.load(TARGETS + rows64 * stride_t, mask=row_mask, other=ignore_index).to(tl.int64)
    used = row_mask & (tgt != ignore_index)
    in_range = (tgt >= 0) & (tgt < V)
    # torch raises on a bad target; raising here would need a host sync, so a
    # bad row gets a NaN loss and NaN gradient instead (loud, sync-free), and
    # no load ever goes out of bounds.  TRITON_DEBUG=1 also asserts on the GPU.
    tl.device_assert(~used | in_range, "cross_entropy: target out of range [0, V)")
    return rows64, row_mask, tgt, used & in_range, used & ~in_range


# ----------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------
@triton.jit
def _ce_fwd_kernel(
    LOGITS, TARGETS, LOSS, LSE, SCALE,  # LOGITS: (N, V); TARGETS: (N,); LOSS, LSE: (N,) f32; SCALE: (1,) f32
    stride_ln, stride_lv, stride_t,
    n_rows, V, ignore_index,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr,
    WRITE_GRAD: tl.constexpr, BF16_EMU: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
    rows64, row_mask, tgt, valid, bad = _load_targets(TARGETS, stride_t, rows, n_rows, V, ignore_index)
    row_ptr = LOGITS + rows64[:, None] * stride_ln  # (BLOCK_N, 1)

    # Online log-sum-exp over the vocabulary.  Ignored rows load nothing (masked).
    m = tl.full([BLOCK_N], float("-inf"), dtype=tl.float32)  # running max
    d = tl.zeros([BLOCK_N], dtype=tl.float32)  # running sum of exp(x - m)
    for start in range(0, V, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        x = tl.load(row_ptr + cols.to(tl.int64)[None, :] * stride_lv,
                    mask=valid[:, None] & (cols < V)[None, :], other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, axis=1))
        # A row that has seen only -inf so far (ignored, or -inf logits) keeps
        # m_new = -inf; shift by 0 there so no (-inf) - (-inf) = NaN appears.
        m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        d = d * tl.exp(m - m_shift) + tl.sum(tl.exp(x - m_shift[:, None]), axis=1)
        m = m_new
    lse = tl.where(valid, m + tl.log(tl.where(valid, d, 1.0)), 0.0)  # d = 0 on ignored rows

    x_tgt = tl.load(LOGITS + rows64 * stride_ln + tgt * stride_lv, mask=valid, other=0.0).to(tl.float32)
    loss = tl.where(valid, lse - x_tgt, 0.0)
    tl.store(LOSS + rows, tl.where(bad, float("nan"), loss), mask=row_mask)
    tl.store(LSE + rows, lse, mask=row_mask)

    if WRITE_GRAD:  # inplace_grad: the gradient (without grad_out) replaces the logits
        scale = tl.zeros([BLOCK_N], dtype=tl.float32) + tl.load(SCALE)
        _write_grad(LOGITS, LOGITS, stride_ln, stride_lv, stride_ln, stride_lv,
                    rows64, row_mask, valid, bad, tgt, lse, scale, V, BLOCK_V, BF16_EMU)


# ----------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------
@triton.jit
def _ce_bwd_kernel(
    LOGITS, TARGETS, LSE, SCALE, GRAD_OUT, GRAD,  # GRAD_OUT: (1,) or (N,); GRAD: (N, V)
    stride_ln, stride_lv, stride_t, stride_go, stride_gn, stride_gv,
    n_rows, V, ignore_index,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BF16_EMU: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rows64, row_mask, tgt, valid, bad = _load_targets(TARGETS, stride_t, rows, n_rows, V, ignore_index)
    lse = tl.load(LSE + rows, mask=row_mask, other=0.0)
    # stride_go = 0 broadcasts a scalar grad_out ("mean" / "sum").
    go = tl.load(GRAD_OUT + rows64 * stride_go, mask=row_mask, other=0.0).to(tl.float32)
    scale = go * tl.load(SCALE)
    _write_grad(LOGITS, GRAD, stride_ln, stride_lv, stride_gn, stride_gv,
                rows64, row_mask, valid, bad, tgt, lse, scale, V, BLOCK_V, BF16_EMU)


@triton.jit
def _scale_rows_kernel(
    GRAD, GRAD_OUT,  # GRAD: (N, V) scaled in place by GRAD_OUT (1,) or (N,), in float32
    stride_gn, stride_gv, stride_go, n_rows, V,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BF16_EMU: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < n_rows
    rows64 = rows.to(tl.int64)
    go = tl.load(GRAD_OUT + rows64 * stride_go, mask=row_mask, other=0.0).to(tl.float32)
    for start in range(0, V, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        mask = row_mask[:, None] & (cols < V)[None, :]
        ptr = GRAD + rows64[:, None] * stride_gn + cols.to(tl.int64)[None, :] * stride_gv
        g = tl.load(ptr, mask=mask, other=0.0).to(tl.float32) * go[:, None]
        tl.store(ptr, _cast(g, GRAD.dtype.element_ty, BF16_EMU), mask=mask)


# ----------------------------------------------------------------------------
# Launch configuration: autotuned on CUDA, one pinned rule under pytest /
# TRITON_INTERPRET (deterministic and fast).
# ----------------------------------------------------------------------------
_INTERPRETED = bool(_InterpretedFunction) and isinstance(_ce_fwd_kernel, _InterpretedFunction)

# Pinned: BLOCK_V = min(next_pow2(V), PINNED_MAX_BLOCK_V); rows per program so
# the tile stays <= PINNED_TILE.  Tests may monkeypatch these.
PINNED_MAX_BLOCK_V = 1024
PINNED_TILE = 16384  # few, large programs: the interpreter's cost is per program and per block
PINNED_WARPS = 8


def _autotune_enabled() -> bool:
    return autotune_enabled(_INTERPRETED)

def _pinned_config(V: int) -> dict:
    block_v = min(triton.next_power_of_2(V), PINNED_MAX_BLOCK_V)
    return dict(BLOCK_V=block_v, BLOCK_N=max(1, min(16, PINNED_TILE // block_v)), num_warps=PINNED_WARPS)


def _tuned_configs():
    # Wide vocabularies: one row per program, blocks of 1k..8k.  Small (char-level)
    # vocabularies fit one block: batch several rows per program instead.
    cfgs = [triton.Config({"BLOCK_N": 1, "BLOCK_V": bv}, num_warps=w)
            for bv in (1024, 2048, 4096, 8192) for w in (4, 8, 16)]
    cfgs += [triton.Config({"BLOCK_N": bn, "BLOCK_V": bv}, num_warps=w)
             for bv in (64, 128, 256, 512) for bn in (4, 8, 16, 32) for w in (2, 4, 8)]
    return cfgs


def prune_configs(configs, named_args, **kwargs):
    """Keep configs that fit V: a block at most next_pow2(V) wide (no lanes that
    are always masked), and several rows per program only when one block holds
    the whole row (else one row per program streams the vocabulary).  Keeps
    at least the narrowest config."""
    V = named_args["V"]
    v_pow2 = triton.next_power_of_2(V)
    kept = []
    for c in configs:
        bn, bv = c.kwargs["BLOCK_N"], c.kwargs["BLOCK_V"]
        if v_pow2 <= 512:  # the row fits one small block: multi-row tiles, exact width
            ok = bv == v_pow2
        else:
            ok = bn == 1 and bv <= v_pow2
        if ok:
            kept.append(c)
    return kept or [min(configs, key=lambda c: c.kwargs["BLOCK_N"] * c.kwargs["BLOCK_V"])]


if not _INTERPRETED:
    _TUNE = dict(key=["V"], prune_configs_by={"early_config_prune": prune_configs})
    # The in-place forward overwrites LOGITS: restore them between benchmark runs.
    _ce_fwd_tuned = triton.autotune(_tuned_configs(), restore_value=["LOGITS"], **_TUNE)(_ce_fwd_kernel)
    _ce_bwd_tuned = triton.autotune(_tuned_configs(), **_TUNE)(_ce_bwd_kernel)
    _scale_rows_tuned = triton.autotune(_tuned_configs(), restore_value=["GRAD"], **_TUNE)(_scale_rows_kernel)
else:
    _ce_fwd_tuned = _ce_bwd_tuned = _scale_rows_tuned = None


def _launch(kernel, tuned, n_rows: int, V: int, args, constexprs) -> None:
    if tuned is not None and _autotune_enabled():
        tuned[lambda meta: (triton.cdiv(n_rows, meta["BLOCK_N"]),)](*args, **constexprs)
    else:
        cfg = _pinned_config(V)
        kernel[(triton.cdiv(n_rows, cfg["BLOCK_N"]),)](*args, **constexprs, **cfg)


# ----------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------
def _check_device(device: torch.device, name: str) -> None:
    if device.type == "cuda":
        if _INTERPRETED:
            raise RuntimeError(f"{name}: TRITON_INTERPRET=1 was set when gptfast.kernels was imported, so the "
                               "kernels run on the CPU interpreter; pass CPU tensors or unset TRITON_INTERPRET")
        return
    if device.type == "cpu" and _INTERPRETED:
        return
    raise RuntimeError(f"{name}: got {device} tensors; the Triton kernels need CUDA tensors (or CPU tensors "
                       "with TRITON_INTERPRET=1 set before gptfast.kernels is imported, for tests)")


def _validate(logits, targets, ignore_index, reduction, name="cross_entropy") -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError(f"{name}: logits must be a 2-D tensor (N, V), got "
                         f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}")
    if logits.dtype not in _SUPPORTED_DTYPES:
        raise TypeError(f"{name}: logits dtype {logits.dtype} not supported; use float32, float16 or bfloat16")
    _validate_targets(targets, logits.shape[0], logits.device, ignore_index, reduction, name)
    if logits.shape[1] < 1:
        raise ValueError(f"{name}: the vocabulary dimension V must be >= 1")
    _check_device(logits.device, name)


def _validate_targets(targets, n_rows, device, ignore_index, reduction, name) -> None:
    if not isinstance(targets, torch.Tensor) or targets.dim() != 1 or targets.shape[0] != n_rows:
        raise ValueError(f"{name}: targets must be a 1-D tensor of {n_rows} class indices, got "
                         f"{tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__}")
    if targets.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name}: targets must be int64 or int32, got {targets.dtype}")
    if targets.device != device:
        raise ValueError(f"{name}: targets on {targets.device}, logits on {device}")
    if not 1 <= n_rows <= _MAX_GRID:
        raise ValueError(f"{name}: need 1..{_MAX_GRID} rows, got {n_rows}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"{name}: ignore_index must be an int, got {ignore_index!r}")


def _flags(dtype: torch.dtype) -> dict:
    return dict(BF16_EMU=_INTERPRETED and dtype == torch.bfloat16)


def _scale_tensor(targets, ignore_index: int, reduction: str):
    """-> (scale, n_valid): scale (1,) float32 on the device, the gradient's
    1 / max(n_valid, 1) for "mean" and 1 otherwise; n_valid, a float32 device
    scalar for "mean" (None otherwise).  No host sync.  With no valid row the
    "mean" loss is 0 / 0 = NaN (as torch) and every gradient row is ignored, hence 0."""
    if reduction == "mean":
        n_valid = (targets != ignore_index).sum().to(torch.float32)
        return (1.0 / n_valid.clamp(min=1.0)).reshape(1), n_valid
    return torch.ones(1, device=targets.device, dtype=torch.float32), None


def _ce_fwd(logits, targets, scale, ignore_index: int, write_grad: bool):
    """-> per-row loss (N,) f32 (0 on ignored rows), lse (N,) f32.  With
    write_grad, logits are overwritten by (softmax - onehot) * scale."""
    n_rows, V = logits.shape
    loss = torch.empty(n_rows, device=logits.device, dtype=torch.float32)
    lse = torch.empty(n_rows, device=logits.device, dtype=torch.float32)
    args = (logits, targets, loss, lse, scale, *logits.stride(), targets.stride(0), n_rows, V, ignore_index)
    _launch(_ce_fwd_kernel, _ce_fwd_tuned, n_rows, V, args,
            dict(WRITE_GRAD=write_grad, **_flags(logits.dtype)))
    return loss, lse


def _ce_bwd(logits, targets, lse, scale, grad_out, ignore_index: int):
    """-> dlogits with logits' shape, dtype (and strides, when dense)."""
    n_rows, V = logits.shape
    grad = torch.empty_like(logits)
    go_stride = 0 if grad_out.numel() == 1 else grad_out.stride(0)  # 0: broadcast a scalar
    args = (logits, targets, lse, scale, grad_out, grad,
            *logits.stride(), targets.stride(0), go_stride, *grad.stride(), n_rows, V, ignore_index)
    _launch(_ce_bwd_kernel, _ce_bwd_tuned, n_rows, V, args, _flags(logits.dtype))
    return grad


def _scale_rows_(grad, grad_out) -> None:
    n_rows, V = grad.shape
    go_stride = 0 if grad_out.numel() == 1 else grad_out.stride(0)  # 0: broadcast a scalar
    args = (grad, grad_out, *grad.stride(), go_stride, n_rows, V)
    _launch(_scale_rows_kernel, _scale_rows_tuned, n_rows, V, args, _flags(grad.dtype))


def _reduce(loss_rows, n_valid, reduction: str):
    if reduction == "none":
        return loss_rows
    total = loss_rows.sum()  # fixed-order torch reduction: deterministic
    return total / n_valid if reduction == "mean" else total


class CrossEntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, ignore_index: int, reduction: str, inplace_grad: bool):
        scale, n_valid = _scale_tensor(targets, ignore_index, reduction)
        # (the caller already required grad mode on: needs_input_grad ignores no_grad)
        write_grad = inplace_grad and ctx.needs_input_grad[0]
        loss_rows, lse = _ce_fwd(logits, targets, scale, ignore_index, write_grad)
        ctx.inplace = write_grad
        ctx.ignore_index = ignore_index
        if write_grad:
            # The kernel wrote behind autograd's back: make the write visible so
            # any other op that saved these logits fails loudly in its backward.
            torch.autograd.graph.increment_version(logits)
            ctx.save_for_backward(logits.detach())  # now holds the unscaled gradient
        else:
            ctx.save_for_backward(logits, targets, lse, scale)
        return _reduce(loss_rows, n_valid, reduction)

    @staticmethod
    def backward(ctx, grad_out):
        grad_out = grad_out.reshape(-1) if grad_out.dim() else grad_out.reshape(1)  # (1,) or (N,)
        if ctx.inplace:
            (grad,) = ctx.saved_tensors
            _scale_rows_(grad, grad_out)
        else:
            logits, targets, lse, scale = ctx.saved_tensors
            grad = _ce_bwd(logits, targets, lse, scale, grad_out, ctx.ignore_index)
        return grad, None, None, None, None


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -1,
                  reduction: str = "mean", inplace_grad: bool = False) -> torch.Tensor:
    """Cross-entropy of logits (N, V) against class indices targets (N,);
    float32 loss (scalar, or (N,) for reduction="none").  See the module docstring
    for `inplace_grad` (opt-in: the logits are overwritten by their gradient)."""
    _validate(logits, targets, ignore_index, reduction)
    inplace_grad = bool(inplace_grad) and logits.requires_grad and torch.is_grad_enabled()
    if inplace_grad and logits.is_leaf:
        raise ValueError("cross_entropy: inplace_grad=True would overwrite a leaf tensor that requires grad "
                         "(a parameter or an input); pass the logits produced by the model instead")
    return CrossEntropyFunction.apply(logits, targets, int(ignore_index), reduction, inplace_grad)


def cross_entropy_reference(logits, targets, ignore_index: int = -1, reduction: str = "mean"):
    """F.cross_entropy in the logits' own dtype (float64 in -> float64 out)."""
    return F.cross_entropy(logits, targets.long(), ignore_index=ignore_index, reduction=reduction)


# ----------------------------------------------------------------------------
# Fused linear + cross-entropy (chunked over rows)
# ----------------------------------------------------------------------------
def _default_chunk(n_rows: int, V: int, D: int) -> int:
    """Rows per chunk so that a chunk of logits is about the size of x (N, D)
    (Liger-Kernel's rule), a power of two."""
    inc = max(1, math.ceil(V / D))
    return triton.next_power_of_2(max(1, math.ceil(n_rows / inc)))


class LinearCrossEntropyFunction(torch.autograd.Function):
    """Forward computes the loss *and* the gradients chunk by chunk (the chunk's
    logits are turned into their gradient in place, then consumed by two
    matmuls), because the logits cannot be kept for a backward.  The backward
    only scales the stored gradients by grad_out."""

    @staticmethod
    def forward(ctx, x, weight, bias, targets, ignore_index: int, reduction: str, chunk: int, grad_enabled: bool):
        n_rows, D = x.shape
        V = weight.shape[0]
        scale, n_valid = _scale_tensor(targets, ignore_index, reduction)
        # needs_input_grad follows requires_grad even under no_grad: also ask grad mode.
        need_x, need_w, need_b = (grad_enabled and n for n in ctx.needs_input_grad[:3])
        need_grad = need_x or need_w or need_b
        grad_x = torch.empty_like(x) if need_x else None
        # Weight / bias gradients accumulate over chunks in float32.
        grad_w = torch.zeros(weight.shape, device=x.device, dtype=torch.float32) if need_w else None
        grad_b = torch.zeros(V, device=x.device, dtype=torch.float32) if need_b else None
        loss_rows = torch.empty(n_rows, device=x.device, dtype=torch.float32)
        for start in range(0, n_rows, chunk):
            stop = min(start + chunk, n_rows)
            xc = x[start:stop]  # (C, D)
            logits = xc @ weight.t()  # (C, V) in x's dtype: the only logits alive
            if bias is not None:
                logits += bias
            loss_c, _ = _ce_fwd(logits, targets[start:stop], scale, ignore_index, need_grad)
            loss_rows[start:stop] = loss_c
            if need_grad:  # logits now hold dlogits = (softmax - onehot) * scale
                if need_x:
                    torch.mm(logits, weight, out=grad_x[start:stop])  # (C, V) @ (V, D)
                if need_w:
                    grad_w += (logits.t() @ xc).float()  # (V, C) @ (C, D)
                if need_b:
                    grad_b += logits.float().sum(0)
        ctx.save_for_backward(grad_x, grad_w, grad_b)
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        return _reduce(loss_rows, n_valid, reduction)

    @staticmethod
    def backward(ctx, grad_out):
        grad_x, grad_w, grad_b = ctx.saved_tensors
        w_dtype, b_dtype = ctx.dtypes
        # Scalar loss: grad_out scales (N, D) and (V, D) tensors, not the logits.
        dx = grad_x * grad_out.to(torch.float32) if grad_x is not None else None
        dw = (grad_w * grad_out).to(w_dtype) if grad_w is not None else None
        db = (grad_b * grad_out).to(b_dtype) if grad_b is not None else None
        return (dx.to(grad_x.dtype) if dx is not None else None, dw, db, None, None, None, None, None)


def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         bias: Optional[torch.Tensor] = None, ignore_index: int = -1,
                         reduction: str = "mean", chunk: Optional[int] = None) -> torch.Tensor:
    """cross_entropy(x @ weight.T + bias, targets) without materialising the
    (N, V) logits: at most (chunk, V) exist at a time.  x: (N, D), weight: (V, D),
    bias: (V,) or None; reduction "mean" or "sum".  Float32 loss.  The gradients
    are computed during the forward (so a forward under no_grad / without
    requires_grad skips that work)."""
    name = "linear_cross_entropy"
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"{name}: x must be a 2-D tensor (N, D)")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"{name}: weight must be (V, D) with D = {x.shape[1]}, got "
                         f"{tuple(weight.shape) if isinstance(weight, torch.Tensor) else weight!r}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"{name}: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    for t_name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if t is not None and t.dtype not in _SUPPORTED_DTYPES:
            raise TypeError(f"{name}: {t_name} dtype {t.dtype} not supported")
        if t is not None and t.device != x.device:
            raise ValueError(f"{name}: {t_name} on {t.device}, x on {x.device}")
    if weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        raise TypeError(f"{name}: x, weight and bias must share a dtype, got {x.dtype}, {weight.dtype}"
                        f"{', ' + str(bias.dtype) if bias is not None else ''}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"{name}: reduction must be 'mean' or 'sum', got {reduction!r}")
    _validate_targets(targets, x.shape[0], x.device, ignore_index, reduction, name)
    _check_device(x.device, name)
    if chunk is None:
        chunk = _default_chunk(x.shape[0], weight.shape[0], x.shape[1])
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"{name}: chunk must be a positive int, got {chunk!r}")
    return LinearCrossEntropyFunction.apply(x, weight, bias, targets, int(ignore_index), reduction, chunk,
                                            torch.is_grad_enabled())
