"""Causal flash attention for training: Triton forward + backward, with dropout.

Public API
----------
``flash_attention(q, k, v, *, dropout_p=0.0, seed=None, sm_scale=None)``
    q, k, v: (B, H, T, D), any strides, float32 / float16 / bfloat16, 16 <= D <= 128.
    Returns softmax(q k^T * sm_scale + causal mask) [dropout] v, shaped (B, H, T, D),
    in the inputs' dtype.  Differentiable in q, k and v.

``attention_reference(q, k, v, sm_scale=None, dropout_mask=None, dropout_p=0.0)``
    The same attention as plain masked-softmax PyTorch math in float64: the
    ground truth the kernel is tested against.  ``attention_math`` is the same
    math in the inputs' own dtype (the "what would PyTorch get" baseline).

``dropout_mask(seed, B, H, T, p, device)``
    The (B, H, T, T) boolean keep-mask that the kernels draw for ``seed``, so a
    test can feed the very same mask to the reference.

How it works (FlashAttention-2)
-------------------------------
forward   one program per (query block, batch*head).  Key blocks stream through
          SRAM; an online softmax keeps the running row max ``m`` and row sum
          ``l``, so the (T, T) score matrix never exists in memory.  It saves the
          per-row log-sum-exp (float32, base 2, of the scaled scores) for the
          backward.
backward  P is recomputed from the LSE instead of being stored.  A preprocess
          kernel computes delta = rowsum(dO * O); one kernel per key block
          accumulates dK and dV over the query blocks below the diagonal, one
          kernel per query block accumulates dQ over the key blocks left of it.
          No atomics, so gradients are deterministic.

Dropout draws from Triton's counter-based Philox RNG: the counter of score
(bh, row, col) is ``(bh * T + row) * T + col``, a function of the element alone,
so the mask does not depend on block sizes or on which kernel draws it, and the
backward regenerates exactly the forward's mask from the seed.  Kept
probabilities are scaled by 1 / (1 - p), the softmax normaliser is computed
before dropout (as in torch's ``dropout(softmax(s))``).

Head dims that are not powers of two (e.g. 42) are padded *inside* the kernel
(BLOCK_D = next_power_of_2(D), loads and stores masked on d < D); the caller's
memory is never copied or padded.  Ragged T is masked the same way.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import triton
import triton.language as tl

from gptfast.kernels._common import _cast, _mma, autotune_enabled

try:  # the interpreter's function type: kernels are InterpretedFunction when TRITON_INTERPRET=1
    from triton.runtime.interpreter import InterpretedFunction as _InterpretedFunction
except ImportError:  # pragma: no cover - older / newer triton layouts
    _InterpretedFunction = ()

__all__ = [
    "flash_attention",
    "attention_reference",
    "attention_math",
    "dropout_mask",
    "FlashAttentionFunction",
]

_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MIN_HEAD_DIM, _MAX_HEAD_DIM = 16, 128
_MAX_GRID_Y = 65535  # CUDA limit of grid dimension 1, where batch*head lives


# ----------------------------------------------------------------------------
# Shared jit helpers
# ----------------------------------------------------------------------------
@triton.jit
def _dropout_keep(seed, bh, row, col, T, P_DROP):
    """Keep-mask (True = kept) for scores (bh, row, col); row / col broadcast.

    The Philox counter is the element's flat index in the (BH, T, T) score
    tensor, in int64 (BH * T * T passes 2**31 quickly); tl.rand splits it into
    two 32-bit counter words.
    """
    offsets = (bh * T + row.to(tl.int64)) * T + col
    return tl.rand(seed, offsets) >= P_DROP


# ----------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------
@triton.jit
def _fwd_inner(
    acc, l_i, m_i, q,  # running state: acc (BLOCK_M, BLOCK_D) f32, l_i / m_i (BLOCK_M,) f32
    k_base, v_base, stride_kt, stride_kd, stride_vt, stride_vd,
    rows, offs_d, lo, hi, T, qk_scale, seed, bh, P_DROP,
    CAUSAL_MASK: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
    IEEE: tl.constexpr, BF16_EMU: tl.constexpr,
):
    d_mask = offs_d < HEAD_DIM
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
        kv_mask = (cols < T)[:, None] & d_mask[None, :]
        cols64 = cols.to(tl.int64)
        k = tl.load(k_base + cols64[:, None] * stride_kt + offs_d[None, :] * stride_kd,
                    mask=kv_mask, other=0.0)  # (BLOCK_N, BLOCK_D)
        s = _mma(q, tl.trans(k), IEEE, BF16_EMU) * qk_scale  # (BLOCK_M, BLOCK_N), log2 units
        if CAUSAL_MASK:
            s = tl.where(cols[None, :] <= rows[:, None], s, float("-inf"))
        # Every row already has a finite max here (key 0 or the diagonal block's
        # first key is always visible), so m_new is finite and exp2 cannot NaN.
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)  # normaliser counts dropped entries too
        if HAS_DROPOUT:
            keep = _dropout_keep(seed, bh, rows[:, None], cols[None, :], T, P_DROP)
            p = tl.where(keep, p, 0.0)
        v = tl.load(v_base + cols64[:, None] * stride_vt + offs_d[None, :] * stride_vd,
                    mask=kv_mask, other=0.0)  # (BLOCK_N, BLOCK_D)
        # P is rounded to the input dtype for the tensor-core MMA, as in FA2.
        acc = acc * alpha[:, None] + _mma(_cast(p, v.dtype, BF16_EMU), v, IEEE, BF16_EMU)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit(do_not_specialize=["seed"])
def _attn_fwd_kernel(
    Q, K, V, O, LSE,  # LSE: (B*H, T) float32, base-2 log-sum-exp of the scaled scores
    seed, P_DROP, DROP_SCALE, qk_scale,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_kd,
    stride_vb, stride_vh, stride_vt, stride_vd,
    stride_ob, stride_oh, stride_ot, stride_od,
    H, T, T_BUCKET,  # T_BUCKET: next_power_of_2(T), only an autotune key
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_DROPOUT: tl.constexpr, IEEE: tl.constexpr, BF16_EMU: tl.constexpr,
):
    # Causal work grows with the query block index: launch the heaviest blocks
    # first so the tail of the grid is made of short programs.
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    q_base = Q + b * stride_qb + h * stride_qh
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    o_base = O + b * stride_ob + h * stride_oh

    start_m = pid_m * BLOCK_M
    rows = start_m + tl.arange(0, BLOCK_M)  # (BLOCK_M,)
    offs_d = tl.arange(0, BLOCK_D)  # (BLOCK_D,)
    row_mask = rows < T
    io_mask = row_mask[:, None] & (offs_d < HEAD_DIM)[None, :]
    rows64 = rows.to(tl.int64)
    q = tl.load(q_base + rows64[:, None] * stride_qt + offs_d[None, :] * stride_qd,
                mask=io_mask, other=0.0)  # (BLOCK_M, BLOCK_D)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    # Key blocks entirely left of this query block need no causal mask ...
    n_full = (start_m // BLOCK_N) * BLOCK_N
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_kd, stride_vt, stride_vd,
        rows, offs_d, 0, n_full, T, qk_scale, seed, bh, P_DROP,
        False, HAS_DROPOUT, HEAD_DIM, BLOCK_N, IEEE, BF16_EMU)
    # ... the blocks that straddle the diagonal do.
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_kd, stride_vt, stride_vd,
        rows, offs_d, n_full, tl.minimum(start_m + BLOCK_M, T), T, qk_scale, seed, bh, P_DROP,
        True, HAS_DROPOUT, HEAD_DIM, BLOCK_N, IEEE, BF16_EMU)

    out = acc / l_i[:, None]
    if HAS_DROPOUT:
        out = out * DROP_SCALE
    tl.store(o_base + rows64[:, None] * stride_ot + offs_d[None, :] * stride_od,
             _cast(out, O.dtype.element_ty, BF16_EMU), mask=io_mask)
    tl.store(LSE + bh * T + rows, m_i + tl.log2(l_i), mask=row_mask)


# ----------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------
@triton.jit
def _bwd_preprocess_kernel(
    O, DO, DELTA,  # DELTA: (B*H, T) float32 = rowsum(dO * O)
    stride_ob, stride_oh, stride_ot, stride_od,
    stride_dob, stride_doh, stride_dot, stride_dod,
    H, T,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (rows < T)[:, None] & (offs_d < HEAD_DIM)[None, :]
    rows64 = rows.to(tl.int64)
    o = tl.load(O + b * stride_ob + h * stride_oh + rows64[:, None] * stride_ot + offs_d[None, :] * stride_od,
                mask=mask, other=0.0).to(tl.float32)
    do = tl.load(DO + b * stride_dob + h * stride_doh + rows64[:, None] * stride_dot + offs_d[None, :] * stride_dod,
                 mask=mask, other=0.0).to(tl.float32)
    tl.store(DELTA + bh * T + rows, tl.sum(o * do, 1), mask=rows < T)


@triton.jit
def _bwd_dkdv_inner(
    dk, dv, k, v,  # dk, dv: (BLOCK_N, BLOCK_D) f32 accumulators; k, v: this program's key block
    q_base, do_base, stride_qt, stride_qd, stride_dot, stride_dod, LSE_BH, DELTA_BH,
    cols, offs_d, lo, hi, T, qk_scale, seed, bh, P_DROP, DROP_SCALE,
    CAUSAL_MASK: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
    IEEE: tl.constexpr, BF16_EMU: tl.constexpr,
):
    # Works on transposed tiles (keys along dim 0) so no large tile is transposed.
    d_mask = offs_d < HEAD_DIM
    for start_m in range(lo, hi, BLOCK_M):
        rows = start_m + tl.arange(0, BLOCK_M)  # (BLOCK_M,)
        row_mask = rows < T
        rows64 = rows.to(tl.int64)
        io_mask = row_mask[:, None] & d_mask[None, :]
        # Query rows past T load as q = 0, dO = 0, lse = delta = 0: every term
        # they add to dK / dV is then exactly 0 (p is finite: exp2(0 - 0) = 1).
        q = tl.load(q_base + rows64[:, None] * stride_qt + offs_d[None, :] * stride_qd,
                    mask=io_mask, other=0.0)  # (BLOCK_M, BLOCK_D)
        do = tl.load(do_base + rows64[:, None] * stride_dot + offs_d[None, :] * stride_dod,
                     mask=io_mask, other=0.0)  # (BLOCK_M, BLOCK_D)
        lse = tl.load(LSE_BH + rows, mask=row_mask, other=0.0)  # (BLOCK_M,)
        delta = tl.load(DELTA_BH + rows, mask=row_mask, other=0.0)  # (BLOCK_M,)

        sT = _mma(k, tl.trans(q), IEEE, BF16_EMU) * qk_scale  # (BLOCK_N, BLOCK_M)
        if CAUSAL_MASK:
            visible = (rows[None, :] >= cols[:, None]) & row_mask[None, :]
            sT = tl.where(visible, sT, float("-inf"))
        pT = tl.exp2(sT - lse[None, :])  # softmax probabilities, recomputed
        dpT = _mma(v, tl.trans(do), IEEE, BF16_EMU)  # (BLOCK_N, BLOCK_M) = (dO V^T)^T
        if HAS_DROPOUT:
            keepT = _dropout_keep(seed, bh, rows[None, :], cols[:, None], T, P_DROP)
            # O = (P * Z) V with Z = keep / (1 - p): dV = (P * Z)^T dO, dP = (dO V^T) * Z.
            # The 1 / (1 - p) of dV is applied once at the end.
            dv += _mma(_cast(tl.where(keepT, pT, 0.0), do.dtype, BF16_EMU), do, IEEE, BF16_EMU)
            dpT = tl.where(keepT, dpT * DROP_SCALE, 0.0)
        else:
            dv += _mma(_cast(pT, do.dtype, BF16_EMU), do, IEEE, BF16_EMU)
        # dS = P * (dP - rowsum(dP * P)); rowsum(dP * P) = rowsum(dO * O) = delta,
        # also with dropout since O already includes it.
        dsT = pT * (dpT - delta[None, :])
        dk += _mma(_cast(dsT, q.dtype, BF16_EMU), q, IEEE, BF16_EMU)
    return dk, dv


@triton.jit(do_not_specialize=["seed"])
def _attn_bwd_dkdv_kernel(
    Q, K, V, DO, DK, DV, LSE, DELTA,
    seed, P_DROP, DROP_SCALE, qk_scale, sm_scale,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_kd,
    stride_vb, stride_vh, stride_vt, stride_vd,
    stride_dob, stride_doh, stride_dot, stride_dod,
    stride_dkb, stride_dkh, stride_dkt, stride_dkd,
    stride_dvb, stride_dvh, stride_dvt, stride_dvd,
    H, T, T_BUCKET,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_DROPOUT: tl.constexpr, IEEE: tl.constexpr, BF16_EMU: tl.constexpr,
):
    pid_n = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    start_n = pid_n * BLOCK_N
    cols = start_n + tl.arange(0, BLOCK_N)  # (BLOCK_N,) key positions of this program
    offs_d = tl.arange(0, BLOCK_D)
    kv_mask = (cols < T)[:, None] & (offs_d < HEAD_DIM)[None, :]
    cols64 = cols.to(tl.int64)
    k = tl.load(K + b * stride_kb + h * stride_kh + cols64[:, None] * stride_kt + offs_d[None, :] * stride_kd,
                mask=kv_mask, other=0.0)  # (BLOCK_N, BLOCK_D)
    v = tl.load(V + b * stride_vb + h * stride_vh + cols64[:, None] * stride_vt + offs_d[None, :] * stride_vd,
                mask=kv_mask, other=0.0)  # (BLOCK_N, BLOCK_D)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)

    q_base = Q + b * stride_qb + h * stride_qh
    do_base = DO + b * stride_dob + h * stride_doh
    # Query blocks that straddle the diagonal need the causal mask; those
    # entirely below it (rows >= start_n + BLOCK_N) see every key of the block.
    m_lo = (start_n // BLOCK_M) * BLOCK_M
    m_mid = tl.minimum(((start_n + BLOCK_N + BLOCK_M - 1) // BLOCK_M) * BLOCK_M, T)
    dk, dv = _bwd_dkdv_inner(
        dk, dv, k, v, q_base, do_base, stride_qt, stride_qd, stride_dot, stride_dod,
        LSE + bh * T, DELTA + bh * T, cols, offs_d, m_lo, m_mid, T, qk_scale, seed, bh, P_DROP, DROP_SCALE,
        True, HAS_DROPOUT, HEAD_DIM, BLOCK_M, IEEE, BF16_EMU)
    dk, dv = _bwd_dkdv_inner(
        dk, dv, k, v, q_base, do_base, stride_qt, stride_qd, stride_dot, stride_dod,
        LSE + bh * T, DELTA + bh * T, cols, offs_d, m_mid, T, T, qk_scale, seed, bh, P_DROP, DROP_SCALE,
        False, HAS_DROPOUT, HEAD_DIM, BLOCK_M, IEEE, BF16_EMU)

    if HAS_DROPOUT:
        dv = dv * DROP_SCALE
    dk = dk * sm_scale  # dS was taken w.r.t. the scaled scores
    tl.store(DK + b * stride_dkb + h * stride_dkh + cols64[:, None] * stride_dkt + offs_d[None, :] * stride_dkd,
             _cast(dk, DK.dtype.element_ty, BF16_EMU), mask=kv_mask)
    tl.store(DV + b * stride_dvb + h * stride_dvh + cols64[:, None] * stride_dvt + offs_d[None, :] * stride_dvd,
             _cast(dv, DV.dtype.element_ty, BF16_EMU), mask=kv_mask)


@triton.jit
def _bwd_dq_inner(
    dq, q, do, lse, delta,  # dq (BLOCK_M, BLOCK_D) f32; q, do this program's rows; lse, delta (BLOCK_M,)
    k_base, v_base, stride_kt, stride_kd, stride_vt, stride_vd,
    rows, offs_d, lo, hi, T, qk_scale, seed, bh, P_DROP, DROP_SCALE,
    CAUSAL_MASK: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
    IEEE: tl.constexpr, BF16_EMU: tl.constexpr,
):
    d_mask = offs_d < HEAD_DIM
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        kv_mask = (cols < T)[:, None] & d_mask[None, :]
        cols64 = cols.to(tl.int64)
        k = tl.load(k_base + cols64[:, None] * stride_kt + offs_d[None, :] * stride_kd,
                    mask=kv_mask, other=0.0)  # (BLOCK_N, BLOCK_D)
        v = tl.load(v_base + cols64[:, None] * stride_vt + offs_d[None, :] * stride_vd,
                    mask=kv_mask, other=0.0)  # (BLOCK_N, BLOCK_D)
        s = _mma(q, tl.trans(k), IEEE, BF16_EMU) * qk_scale  # (BLOCK_M, BLOCK_N)
        if CAUSAL_MASK:
            s = tl.where(cols[None, :] <= rows[:, None], s, float("-inf"))
        p = tl.exp2(s - lse[:, None])
        dp = _mma(do, tl.trans(v), IEEE, BF16_EMU)  # (BLOCK_M, BLOCK_N)
        if HAS_DROPOUT:
            keep = _dropout_keep(seed, bh, rows[:, None], cols[None, :], T, P_DROP)
            dp = tl.where(keep, dp * DROP_SCALE, 0.0)
        ds = p * (dp - delta[:, None])
        dq += _mma(_cast(ds, k.dtype, BF16_EMU), k, IEEE, BF16_EMU)
    return dq


@triton.jit(do_not_specialize=["seed"])
def _attn_bwd_dq_kernel(
    Q, K, V, DO, DQ, LSE, DELTA,
    seed, P_DROP, DROP_SCALE, qk_scale, sm_scale,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_kd,
    stride_vb, stride_vh, stride_vt, stride_vd,
    stride_dob, stride_doh, stride_dot, stride_dod,
    stride_dqb, stride_dqh, stride_dqt, stride_dqd,
    H, T, T_BUCKET,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_DROPOUT: tl.constexpr, IEEE: tl.constexpr, BF16_EMU: tl.constexpr,
):
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)  # heaviest first, as in the forward
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    start_m = pid_m * BLOCK_M
    rows = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_mask = rows < T
    io_mask = row_mask[:, None] & (offs_d < HEAD_DIM)[None, :]
    rows64 = rows.to(tl.int64)
    q = tl.load(Q + b * stride_qb + h * stride_qh + rows64[:, None] * stride_qt + offs_d[None, :] * stride_qd,
                mask=io_mask, other=0.0)  # (BLOCK_M, BLOCK_D)
    do = tl.load(DO + b * stride_dob + h * stride_doh + rows64[:, None] * stride_dot + offs_d[None, :] * stride_dod,
                 mask=io_mask, other=0.0)  # (BLOCK_M, BLOCK_D)
    lse = tl.load(LSE + bh * T + rows, mask=row_mask, other=0.0)
    delta = tl.load(DELTA + bh * T + rows, mask=row_mask, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    n_full = (start_m // BLOCK_N) * BLOCK_N
    dq = _bwd_dq_inner(
        dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_kd, stride_vt, stride_vd,
        rows, offs_d, 0, n_full, T, qk_scale, seed, bh, P_DROP, DROP_SCALE,
        False, HAS_DROPOUT, HEAD_DIM, BLOCK_N, IEEE, BF16_EMU)
    dq = _bwd_dq_inner(
        dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_kd, stride_vt, stride_vd,
        rows, offs_d, n_full, tl.minimum(start_m + BLOCK_M, T), T, qk_scale, seed, bh, P_DROP, DROP_SCALE,
        True, HAS_DROPOUT, HEAD_DIM, BLOCK_N, IEEE, BF16_EMU)
    dq = dq * sm_scale
    tl.store(DQ + b * stride_dqb + h * stride_dqh + rows64[:, None] * stride_dqt + offs_d[None, :] * stride_dqd,
             _cast(dq, DQ.dtype.element_ty, BF16_EMU), mask=io_mask)


@triton.jit(do_not_specialize=["seed"])
def _dropout_mask_kernel(
    MASK, seed, P_DROP, T,  # MASK: (B*H, T, T) int8, 1 = kept
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    bh = tl.program_id(2).to(tl.int64)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    keep = _dropout_keep(seed, bh, rows[:, None], cols[None, :], T, P_DROP)
    offsets = (bh * T + rows.to(tl.int64)[:, None]) * T + cols[None, :]
    tl.store(MASK + offsets, keep.to(tl.int8), mask=(rows < T)[:, None] & (cols < T)[None, :])


# ----------------------------------------------------------------------------
# Launch configuration: autotuned on CUDA, one pinned config under pytest /
# TRITON_INTERPRET so tests are deterministic and fast.
# ----------------------------------------------------------------------------
# Triton picks interpreter or compiler when @triton.jit runs (it reads
# TRITON_INTERPRET then): for our kernels at this module's import, for
# triton's own library functions (tl.max, tl.rand, ...) at the first
# `import triton`.  If the variable changed in between, the two disagree and
# kernels would fail with an obscure error; _check_device reports it instead.
_INTERPRETED = bool(_InterpretedFunction) and isinstance(_attn_fwd_kernel, _InterpretedFunction)
_TRITON_LIB_INTERPRETED = bool(_InterpretedFunction) and isinstance(tl.rand, _InterpretedFunction)
INTERPRETER_MISMATCH = _INTERPRETED != _TRITON_LIB_INTERPRETED
_MISMATCH_MESSAGE = (
    "TRITON_INTERPRET changed between the first `import triton` and the import of gptfast.kernels "
    "(triton's own functions and these kernels disagree on interpreter mode); set it before anything "
    "imports triton (for the tests: in tests/conftest.py)")

# Pinned configs.  BLOCK_M != BLOCK_N on purpose: it exercises the diagonal
# logic where a query block straddles several key blocks (and vice versa).
# Tests may monkeypatch these dicts to check block-size independence.
PINNED_FWD = dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=2)
PINNED_BWD_DKDV = dict(BLOCK_M=32, BLOCK_N=64, num_warps=4, num_stages=1)
PINNED_BWD_DQ = dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=1)
_PREPROCESS_BLOCK_M = 64


def _autotune_enabled() -> bool:
    return autotune_enabled(_INTERPRETED)

def _configs(shapes, stages_list):
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
        for bm, bn, w in shapes
        for s in stages_list
    ]


# Keyed on the T bucket (next power of two, so a new T rarely retunes), the
# head dim and dropout on/off; the autotuner adds the tensors' dtypes itself.
_TUNE_KEY = ["T_BUCKET", "HEAD_DIM", "HAS_DROPOUT"]
if not _INTERPRETED:
    # Configs that do not fit in shared memory are skipped by the autotuner (OutOfResources).
    _attn_fwd_tuned = triton.autotune(
        _configs([(128, 64, 8), (128, 64, 4), (64, 64, 4), (64, 32, 4), (128, 128, 8), (128, 32, 4)], [2, 3, 4]),
        key=_TUNE_KEY)(_attn_fwd_kernel)
    _attn_bwd_dkdv_tuned = triton.autotune(
        _configs([(32, 64, 4), (64, 64, 4), (32, 128, 8), (64, 128, 8), (16, 64, 4), (16, 128, 4)], [1, 2, 3]),
        key=_TUNE_KEY)(_attn_bwd_dkdv_kernel)
    _attn_bwd_dq_tuned = triton.autotune(
        _configs([(64, 32, 4), (64, 64, 4), (128, 32, 8), (128, 64, 8), (64, 16, 4), (128, 16, 4)], [1, 2, 3]),
        key=_TUNE_KEY)(_attn_bwd_dq_kernel)
else:
    _attn_fwd_tuned = _attn_bwd_dkdv_tuned = _attn_bwd_dq_tuned = None


def _launch(kernel, tuned, pinned, rows_key, T, BH, args, constexprs):
    """Launch `kernel` over (cdiv(T, meta[rows_key]), B*H), autotuned or pinned."""
    def grid(meta):
        return (triton.cdiv(T, meta[rows_key]), BH)

    if tuned is not None and _autotune_enabled():
        tuned[grid](*args, **constexprs)
    else:
        kernel[grid(pinned)](*args, **constexprs, **pinned)


# ----------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------
def _check_device(device: torch.device, name: str = "flash_attention") -> None:
    if INTERPRETER_MISMATCH:
        raise RuntimeError(f"{name}: {_MISMATCH_MESSAGE}")
    if device.type == "cuda":
        if _INTERPRETED:
            raise RuntimeError(
                f"{name}: TRITON_INTERPRET=1 was set when gptfast.kernels was imported, so the kernels "
                "run on the CPU interpreter; pass CPU tensors or unset TRITON_INTERPRET")
        return
    if device.type == "cpu":
        if not _INTERPRETED:
            raise RuntimeError(
                f"{name}: got CPU tensors; the Triton kernels need CUDA tensors (or set TRITON_INTERPRET=1 "
                "before gptfast.kernels is first imported to run them on the CPU interpreter, for tests)")
        return
    raise RuntimeError(f"{name}: unsupported device {device}; expected cuda (or cpu under TRITON_INTERPRET=1)")


def _validate(q, k, v, dropout_p, seed, sm_scale) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"flash_attention: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"flash_attention: {name} must be 4-D (B, H, T, D), got shape {tuple(t.shape)}")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(
            f"flash_attention: q, k, v must have the same shape (B, H, T, D), got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"flash_attention: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.dtype not in _SUPPORTED_DTYPES:
        raise TypeError(f"flash_attention: dtype {q.dtype} not supported; use float32, float16 or bfloat16")
    if not (q.device == k.device == v.device):
        raise ValueError(f"flash_attention: q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    _check_device(q.device)
    B, H, T, D = q.shape
    if not _MIN_HEAD_DIM <= D <= _MAX_HEAD_DIM:
        raise ValueError(f"flash_attention: head dim D={D} out of the supported range {_MIN_HEAD_DIM}..{_MAX_HEAD_DIM}")
    if B < 1 or H < 1 or T < 1:
        raise ValueError(f"flash_attention: B, H and T must be >= 1, got shape {tuple(q.shape)}")
    if B * H > _MAX_GRID_Y:
        raise ValueError(f"flash_attention: B*H={B * H} exceeds {_MAX_GRID_Y} (CUDA grid limit)")
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)) or not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"flash_attention: dropout_p must be a float in [0, 1), got {dropout_p!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise ValueError(f"flash_attention: seed must be an int in [0, 2**63), got {seed!r}")
    if sm_scale is not None and (isinstance(sm_scale, bool) or not isinstance(sm_scale, (int, float))
                                 or not math.isfinite(sm_scale) or sm_scale <= 0):
        raise ValueError(f"flash_attention: sm_scale must be a positive finite float, got {sm_scale!r}")


def _strides(t: torch.Tensor):
    return tuple(t.stride())


def _kernel_flags(dtype: torch.dtype) -> dict:
    return dict(IEEE=dtype == torch.float32, BF16_EMU=_INTERPRETED and dtype == torch.bfloat16)


def _dropout_args(dropout_p: float, seed: int):
    drop_scale = 1.0 / (1.0 - dropout_p) if dropout_p > 0 else 1.0
    return seed, float(dropout_p), drop_scale


def _flash_fwd(q, k, v, sm_scale: float, dropout_p: float, seed: int):
    """-> out (B, H, T, D) in q.dtype, lse (B*H, T) float32 (base 2)."""
    B, H, T, D = q.shape
    o = torch.empty((B, H, T, D), device=q.device, dtype=q.dtype)
    lse = torch.empty((B * H, T), device=q.device, dtype=torch.float32)
    args = (
        q, k, v, o, lse,
        *_dropout_args(dropout_p, seed), sm_scale * 1.4426950408889634,  # log2(e): softmax via exp2
        *_strides(q), *_strides(k), *_strides(v), *_strides(o),
        H, T, triton.next_power_of_2(T),
    )
    constexprs = dict(HEAD_DIM=D, BLOCK_D=triton.next_power_of_2(D), HAS_DROPOUT=dropout_p > 0,
                      **_kernel_flags(q.dtype))
    _launch(_attn_fwd_kernel, _attn_fwd_tuned, PINNED_FWD, "BLOCK_M", T, B * H, args, constexprs)
    return o, lse


def _flash_bwd(do, q, k, v, o, lse, sm_scale: float, dropout_p: float, seed: int):
    B, H, T, D = q.shape
    BLOCK_D = triton.next_power_of_2(D)
    delta = torch.empty_like(lse)  # (B*H, T) float32
    _bwd_preprocess_kernel[(triton.cdiv(T, _PREPROCESS_BLOCK_M), B * H)](
        o, do, delta, *_strides(o), *_strides(do), H, T,
        HEAD_DIM=D, BLOCK_D=BLOCK_D, BLOCK_M=_PREPROCESS_BLOCK_M)

    # Gradients take the inputs' layout (a transposed view gets a transposed grad).
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    common = (*_dropout_args(dropout_p, seed), sm_scale * 1.4426950408889634, sm_scale,
              *_strides(q), *_strides(k), *_strides(v), *_strides(do))
    constexprs = dict(HEAD_DIM=D, BLOCK_D=BLOCK_D, HAS_DROPOUT=dropout_p > 0, **_kernel_flags(q.dtype))
    tail = (H, T, triton.next_power_of_2(T))
    _launch(_attn_bwd_dkdv_kernel, _attn_bwd_dkdv_tuned, PINNED_BWD_DKDV, "BLOCK_N", T, B * H,
            (q, k, v, do, dk, dv, lse, delta, *common, *_strides(dk), *_strides(dv), *tail), constexprs)
    _launch(_attn_bwd_dq_kernel, _attn_bwd_dq_tuned, PINNED_BWD_DQ, "BLOCK_M", T, B * H,
            (q, k, v, do, dq, lse, delta, *common, *_strides(dq), *tail), constexprs)
    return dq, dk, dv


class FlashAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, sm_scale: float, dropout_p: float, seed: int):
        o, lse = _flash_fwd(q, k, v, sm_scale, dropout_p, seed)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.sm_scale, ctx.dropout_p, ctx.seed = sm_scale, dropout_p, seed
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = _flash_bwd(do, q, k, v, o, lse, ctx.sm_scale, ctx.dropout_p, ctx.seed)
        return dq, dk, dv, None, None, None


def _draw_seed() -> int:
    # From torch's default (CPU) generator: torch.manual_seed makes it
    # reproducible and no GPU sync is needed.
    return int(torch.randint(0, 2**31 - 1, (1,), dtype=torch.int64).item())


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                    dropout_p: float = 0.0, seed: Optional[int] = None,
                    sm_scale: Optional[float] = None) -> torch.Tensor:
    """Causal attention softmax(q k^T * sm_scale, causal) [dropout] v.

    q, k, v: (B, H, T, D) with 16 <= D <= 128, same dtype (float32, float16 or
    bfloat16) and device, any strides.  sm_scale defaults to 1 / sqrt(D).
    dropout_p drops attention probabilities (kept ones scaled by 1 / (1 - p))
    with a mask fully determined by `seed` (drawn from torch's generator when
    None).  Returns (B, H, T, D) in the inputs' dtype.
    """
    _validate(q, k, v, dropout_p, seed, sm_scale)
    if sm_scale is None:
        sm_scale = 1.0 / math.sqrt(q.shape[-1])
    dropout_p = float(dropout_p)
    if dropout_p > 0 and seed is None:
        seed = _draw_seed()
    return FlashAttentionFunction.apply(q, k, v, float(sm_scale), dropout_p, 0 if seed is None else int(seed))


def dropout_mask(seed: int, B: int, H: int, T: int, p: float, device) -> torch.Tensor:
    """The (B, H, T, T) bool keep-mask (True = kept) that flash_attention(...,
    dropout_p=p, seed=seed) applies to the attention probabilities."""
    device = torch.device(device)
    _check_device(device, "dropout_mask")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout_mask: p must be in [0, 1), got {p!r}")
    if min(B, H, T) < 1 or not 0 <= int(seed) < 2**63:
        raise ValueError(f"dropout_mask: need B, H, T >= 1 and 0 <= seed < 2**63, got B={B} H={H} T={T} seed={seed}")
    mask = torch.empty((B * H, T, T), device=device, dtype=torch.int8)
    BM = BN = 64
    _dropout_mask_kernel[(triton.cdiv(T, BM), triton.cdiv(T, BN), B * H)](
        mask, int(seed), float(p), T, BLOCK_M=BM, BLOCK_N=BN)
    return mask.view(B, H, T, T).bool()


# ----------------------------------------------------------------------------
# Reference (plain PyTorch): the ground truth of the tests
# ----------------------------------------------------------------------------
def attention_math(q, k, v, sm_scale: Optional[float] = None, dropout_mask: Optional[torch.Tensor] = None,
                   dropout_p: float = 0.0) -> torch.Tensor:
    """Causal masked-softmax attention in the inputs' own dtype (differentiable).

    dropout_mask: (B, H, T, T) bool keep-mask; kept probabilities are scaled by
    1 / (1 - dropout_p).
    """
    T, D = q.shape[-2], q.shape[-1]
    if sm_scale is None:
        sm_scale = 1.0 / math.sqrt(D)
    s = (q @ k.transpose(-2, -1)) * sm_scale  # (B, H, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    s = s.masked_fill(~causal, float("-inf"))
    p = torch.softmax(s, dim=-1)
    if dropout_mask is not None:
        p = p * dropout_mask.to(p.dtype) / (1.0 - dropout_p)
    return p @ v  # (B, H, T, D)


def attention_reference(q, k, v, sm_scale: Optional[float] = None, dropout_mask: Optional[torch.Tensor] = None,
                        dropout_p: float = 0.0) -> torch.Tensor:
    """`attention_math` in float64 (the inputs are upcast; gradients flow back
    to them).  Returns float64."""
    return attention_math(q.double(), k.double(), v.double(), sm_scale, dropout_mask, dropout_p)
