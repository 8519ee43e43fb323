"""Decoding attention over a KV cache (flash-decoding / split-K), forward only.

Public API
----------
``decode_attention(q, k_cache, v_cache, cache_len, *, sm_scale=None, num_splits=None)``
    q: (B, H, Tq, D), a few new query positions (Tq small: 1 for plain decoding,
    a handful for speculative / chunked decoding).  k_cache, v_cache:
    (B, H, L_max, D), of which the first ``cache_len`` positions are valid;
    ``cache_len`` is an int or a per-batch integer tensor of shape (B,).  Query i
    sits at absolute position cache_len - Tq + i (its own key/value is already
    in the cache) and attends causally to keys at positions <= its own.
    Returns (B, H, Tq, D) in q's dtype.

``decode_attention_reference(q, k_cache, v_cache, cache_len, sm_scale=None)``
    The same in float64 with plain PyTorch, the tests' ground truth.

Why split-K: with Tq ~ 1 there is one tiny query block per (batch, head), so a
kernel that walks the whole cache in one program leaves most SMs idle when
B*H is small and the cache long.  The cache is cut into ``num_splits`` chunks
of SPLIT_SIZE keys, one program per (batch*head, chunk), each writing a
partial (max, sum, unnormalised acc) in float32; a second small kernel merges
the partials with the usual log-sum-exp rescaling.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
import triton
import triton.language as tl

from gptfast.kernels._common import _cast, _mma, autotune_enabled

try:
    from triton.runtime.interpreter import InterpretedFunction as _InterpretedFunction
except ImportError:  # pragma: no cover
    _InterpretedFunction = ()

__all__ = ["decode_attention", "decode_attention_reference"]

_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MIN_HEAD_DIM, _MAX_HEAD_DIM = 16, 128
_MAX_TQ = 128
_LOG2E = 1.4426950408889634


@triton.jit(do_not_specialize=["cache_len"])
def _decode_partial_kernel(
    Q, K, V, LENS,  # LENS: (B,) int cache lengths, read only when HAS_LENS
    M_WS, L_WS, ACC_WS,  # partials: M, L (B*H, NUM_SPLITS, TQ) f32; ACC (B*H, NUM_SPLITS, TQ, HEAD_DIM) f32
    cache_len, qk_scale,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_kd,
    stride_vb, stride_vh, stride_vt, stride_vd,
    H, TQ, L_MAX, SPLIT_SIZE, NUM_SPLITS,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_LENS: tl.constexpr, IEEE: tl.constexpr, BF16_EMU: tl.constexpr,
):
    bh = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    b = bh // H
    h = bh % H
    if HAS_LENS:
        n = tl.load(LENS + b).to(tl.int32)
    else:
        n = cache_len
    n = tl.minimum(n, L_MAX)  # never read past the cache

    qi = tl.arange(0, BLOCK_Q)  # (BLOCK_Q,) query rows (padded to >= 16 for tl.dot)
    pos = n - TQ + qi  # absolute position of each query
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_DIM
    q_mask = (qi < TQ)[:, None] & d_mask[None, :]
    q = tl.load(Q + b * stride_qb + h * stride_qh + qi[:, None] * stride_qt + offs_d[None, :] * stride_qd,
                mask=q_mask, other=0.0)  # (BLOCK_Q, BLOCK_D)

    m_i = tl.full([BLOCK_Q], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_Q], dtype=tl.float32)
    acc = tl.zeros([BLOCK_Q, BLOCK_D], dtype=tl.float32)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    lo = split * SPLIT_SIZE
    hi = tl.minimum(lo + SPLIT_SIZE, n)  # empty when this split lies past the batch's length
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)  # (BLOCK_N,) key positions
        col_ok = cols < hi
        kv_mask = col_ok[:, None] & d_mask[None, :]
        cols64 = cols.to(tl.int64)
        k = tl.load(k_base + cols64[:, None] * stride_kt + offs_d[None, :] * stride_kd,
                    mask=kv_mask, other=0.0)  # (BLOCK_N, BLOCK_D)
        v = tl.load(v_base + cols64[:, None] * stride_vt + offs_d[None, :] * stride_vd,
                    mask=kv_mask, other=0.0)  # (BLOCK_N, BLOCK_D)
        s = _mma(q, tl.trans(k), IEEE, BF16_EMU) * qk_scale  # (BLOCK_Q, BLOCK_N), log2 units
        s = tl.where(col_ok[None, :] & (cols[None, :] <= pos[:, None]), s, float("-inf"))
        # A query may see no key of this split at all (the split's keys are all
        # in its future): keep m at -inf but subtract 0 so exp2 gives 0, not NaN.
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _mma(_cast(p, v.dtype, BF16_EMU), v, IEEE, BF16_EMU)
        m_i = m_new

    ws_row = (bh * NUM_SPLITS + split) * TQ + qi  # (BLOCK_Q,) int64 row of the workspace
    row_ok = qi < TQ
    tl.store(M_WS + ws_row, m_i, mask=row_ok)
    tl.store(L_WS + ws_row, l_i, mask=row_ok)
    tl.store(ACC_WS + ws_row[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=row_ok[:, None] & d_mask[None, :])


@triton.jit
def _decode_reduce_kernel(
    M_WS, L_WS, ACC_WS, O,
    stride_ob, stride_oh, stride_ot, stride_od,
    H, TQ, NUM_SPLITS,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_Q: tl.constexpr, BF16_EMU: tl.constexpr,
):
    bh = tl.program_id(0).to(tl.int64)
    b = bh // H
    h = bh % H
    qi = tl.arange(0, BLOCK_Q)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = qi < TQ
    mask = row_ok[:, None] & (offs_d < HEAD_DIM)[None, :]
    m = tl.full([BLOCK_Q], float("-inf"), dtype=tl.float32)
    l = tl.zeros([BLOCK_Q], dtype=tl.float32)
    acc = tl.zeros([BLOCK_Q, BLOCK_D], dtype=tl.float32)
    for split in range(0, NUM_SPLITS):
        ws_row = (bh * NUM_SPLITS + split) * TQ + qi
        m_s = tl.load(M_WS + ws_row, mask=row_ok, other=float("-inf"))
        l_s = tl.load(L_WS + ws_row, mask=row_ok, other=0.0)
        acc_s = tl.load(ACC_WS + ws_row[:, None] * HEAD_DIM + offs_d[None, :], mask=mask, other=0.0)
        m_new = tl.maximum(m, m_s)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # splits with no visible key weigh 0
        alpha = tl.exp2(m - m_safe)
        w = tl.exp2(m_s - m_safe)
        l = l * alpha + l_s * w
        acc = acc * alpha[:, None] + acc_s * w[:, None]
        m = m_new
    # l == 0 only for a query with no visible key (per-batch length < Tq on
    # device, which is not validated to avoid a sync): output 0 rather than NaN.
    out = acc / tl.where(l > 0, l, 1.0)[:, None]
    tl.store(O + b * stride_ob + h * stride_oh + qi[:, None] * stride_ot + offs_d[None, :] * stride_od,
             _cast(out, O.dtype.element_ty, BF16_EMU), mask=mask)


# ----------------------------------------------------------------------------
# Launch configuration
# ----------------------------------------------------------------------------
# See flash_attention.py: our kernels and triton's library functions must agree on interpreter mode.
_INTERPRETED = bool(_InterpretedFunction) and isinstance(_decode_partial_kernel, _InterpretedFunction)
INTERPRETER_MISMATCH = _INTERPRETED != (bool(_InterpretedFunction) and isinstance(tl.max, _InterpretedFunction))

PINNED = dict(BLOCK_N=64, num_warps=4, num_stages=2)
_SPLIT_GRANULE = 64  # split sizes are multiples of this (autotuned BLOCK_N may differ: loops mask at `hi`)
_MAX_SPLITS = 128

def _autotune_enabled() -> bool:
    return autotune_enabled(_INTERPRETED)

if not _INTERPRETED:
    # Memory-bound: the best config barely depends on the cache length, so the
    # key is the head dim / query block (plus dtypes, added by the autotuner).
    # Keying on the length would retune at every new length during generation.
    _decode_partial_tuned = triton.autotune(
        [triton.Config({"BLOCK_N": bn}, num_warps=w, num_stages=s)
         for bn in (32, 64) for w in (2, 4) for s in (2, 3, 4)],
        key=["HEAD_DIM", "BLOCK_Q"])(_decode_partial_kernel)
else:
    _decode_partial_tuned = None

_sm_count_cache: dict = {}


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 4  # interpreter: a few splits, so the split logic is exercised by default
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _sm_count_cache:
        _sm_count_cache[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _sm_count_cache[idx]


def _choose_split(max_len: int, bh: int, device: torch.device, num_splits: Optional[int]):
    """-> (num_splits, split_size): about two programs per SM, never an empty split (for max_len)."""
    n_granules = max(1, triton.cdiv(max_len, _SPLIT_GRANULE))
    if num_splits is None:
        num_splits = triton.cdiv(2 * _sm_count(device), bh)
    num_splits = max(1, min(num_splits, n_granules, _MAX_SPLITS))
    split_size = triton.cdiv(n_granules, num_splits) * _SPLIT_GRANULE
    return triton.cdiv(max(max_len, 1), split_size), split_size


# ----------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------
def _validate(q, k_cache, v_cache, cache_len, sm_scale, num_splits):
    for name, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"decode_attention: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"decode_attention: {name} must be 4-D, got shape {tuple(t.shape)}")
    B, H, Tq, D = q.shape
    if k_cache.shape != v_cache.shape:
        raise ValueError(f"decode_attention: k_cache and v_cache shapes differ: "
                         f"{tuple(k_cache.shape)} vs {tuple(v_cache.shape)}")
    Bk, Hk, L_max, Dk = k_cache.shape
    if (Bk, Hk, Dk) != (B, H, D):
        raise ValueError(f"decode_attention: q (B, H, Tq, D)={tuple(q.shape)} does not match the cache "
                         f"(B, H, L_max, D)={tuple(k_cache.shape)}")
    if not (q.dtype == k_cache.dtype == v_cache.dtype):
        raise TypeError(f"decode_attention: q and the caches must share a dtype, got "
                        f"{q.dtype}, {k_cache.dtype}, {v_cache.dtype}")
    if q.dtype not in _SUPPORTED_DTYPES:
        raise TypeError(f"decode_attention: dtype {q.dtype} not supported; use float32, float16 or bfloat16")
    if not (q.device == k_cache.device == v_cache.device):
        raise ValueError("decode_attention: q, k_cache, v_cache must be on one device")
    dev = q.device
    if INTERPRETER_MISMATCH:
        raise RuntimeError("decode_attention: TRITON_INTERPRET changed between the first `import triton` and the "
                           "import of gptfast.kernels; set it before anything imports triton "
                           "(for the tests: in tests/conftest.py)")
    if dev.type == "cuda" and _INTERPRETED:
        raise RuntimeError("decode_attention: TRITON_INTERPRET=1 was set at import; pass CPU tensors")
    if dev.type != "cuda" and not (dev.type == "cpu" and _INTERPRETED):
        raise RuntimeError("decode_attention: needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1 "
                           "set before gptfast.kernels is first imported)")
    if not _MIN_HEAD_DIM <= D <= _MAX_HEAD_DIM:
        raise ValueError(f"decode_attention: head dim D={D} out of the supported range "
                         f"{_MIN_HEAD_DIM}..{_MAX_HEAD_DIM}")
    if B < 1 or H < 1 or L_max < 1 or not 1 <= Tq <= _MAX_TQ:
        raise ValueError(f"decode_attention: need B, H, L_max >= 1 and 1 <= Tq <= {_MAX_TQ}, "
                         f"got q {tuple(q.shape)}, cache {tuple(k_cache.shape)}")
    if isinstance(cache_len, torch.Tensor):
        if cache_len.dtype.is_floating_point or cache_len.dtype == torch.bool or cache_len.shape != (B,):
            raise ValueError(f"decode_attention: a cache_len tensor must be integer with shape ({B},), "
                             f"got {cache_len.dtype} {tuple(cache_len.shape)}")
        if cache_len.device.type == "cpu":  # checkable without a GPU sync
            lo, hi = int(cache_len.min()), int(cache_len.max())
            if lo < Tq or hi > L_max:
                raise ValueError(f"decode_attention: cache_len values must lie in [Tq={Tq}, L_max={L_max}], "
                                 f"got min {lo}, max {hi}")
    elif isinstance(cache_len, int) and not isinstance(cache_len, bool):
        if not Tq <= cache_len <= L_max:
            raise ValueError(f"decode_attention: cache_len={cache_len} must lie in [Tq={Tq}, L_max={L_max}] "
                             "(the queries' own keys are part of the cache)")
    else:
        raise TypeError(f"decode_attention: cache_len must be an int or a (B,) integer tensor, "
                        f"got {type(cache_len).__name__}")
    if sm_scale is not None and (isinstance(sm_scale, bool) or not isinstance(sm_scale, (int, float))
                                 or not math.isfinite(sm_scale) or sm_scale <= 0):
        raise ValueError(f"decode_attention: sm_scale must be a positive finite float, got {sm_scale!r}")
    if num_splits is not None and (not isinstance(num_splits, int) or num_splits < 1):
        raise ValueError(f"decode_attention: num_splits must be a positive int, got {num_splits!r}")


@torch.no_grad()
def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     cache_len: Union[int, torch.Tensor], *, sm_scale: Optional[float] = None,
                     num_splits: Optional[int] = None) -> torch.Tensor:
    """Attention of Tq new queries over the valid prefix of a KV cache.

    q (B, H, Tq, D); k_cache, v_cache (B, H, L_max, D); cache_len: int or (B,)
    integer tensor, counting the new positions too.  Any strides.  num_splits
    overrides the split-K heuristic (about two programs per SM).  A (B,) tensor
    on the GPU is not range-checked (that would sync); lengths are clamped to
    L_max and a query with no visible key gets a zero output.
    Returns (B, H, Tq, D) in q's dtype.  Forward only.
    """
    _validate(q, k_cache, v_cache, cache_len, sm_scale, num_splits)
    B, H, Tq, D = q.shape
    L_max = k_cache.shape[2]
    if sm_scale is None:
        sm_scale = 1.0 / math.sqrt(D)
    has_lens = isinstance(cache_len, torch.Tensor)
    if has_lens:
        lens = cache_len.to(device=q.device, dtype=torch.int32).contiguous()   # the kernel reads lens[b]
        max_len = L_max  # the true max would need a device sync
        cache_len_int = 0
    else:
        lens = torch.empty(0, device=q.device, dtype=torch.int32)  # placeholder, never read
        max_len = cache_len_int = int(cache_len)
    n_splits, split_size = _choose_split(max_len, B * H, q.device, num_splits)

    m_ws = torch.empty((B * H, n_splits, Tq), device=q.device, dtype=torch.float32)
    l_ws = torch.empty_like(m_ws)
    acc_ws = torch.empty((B * H, n_splits, Tq, D), device=q.device, dtype=torch.float32)
    out = torch.empty((B, H, Tq, D), device=q.device, dtype=q.dtype)
    BLOCK_D = triton.next_power_of_2(D)
    BLOCK_Q = max(16, triton.next_power_of_2(Tq))  # tl.dot needs >= 16 rows

    args = (q, k_cache, v_cache, lens, m_ws, l_ws, acc_ws, cache_len_int, sm_scale * _LOG2E,
            *q.stride(), *k_cache.stride(), *v_cache.stride(),
            H, Tq, L_max, split_size, n_splits)
    constexprs = dict(HEAD_DIM=D, BLOCK_D=BLOCK_D, BLOCK_Q=BLOCK_Q, HAS_LENS=has_lens,
                      IEEE=q.dtype == torch.float32, BF16_EMU=_INTERPRETED and q.dtype == torch.bfloat16)
    grid = (B * H, n_splits)
    if _decode_partial_tuned is not None and _autotune_enabled():
        _decode_partial_tuned[grid](*args, **constexprs)
    else:
        _decode_partial_kernel[grid](*args, **constexprs, **PINNED)
    _decode_reduce_kernel[(B * H,)](
        m_ws, l_ws, acc_ws, out, *out.stride(), H, Tq, n_splits,
        HEAD_DIM=D, BLOCK_D=BLOCK_D, BLOCK_Q=BLOCK_Q, BF16_EMU=constexprs["BF16_EMU"])
    return out


def decode_attention_reference(q, k_cache, v_cache, cache_len, sm_scale: Optional[float] = None) -> torch.Tensor:
    """Plain float64 PyTorch twin of `decode_attention` (loops over the batch)."""
    B, H, Tq, D = q.shape
    if sm_scale is None:
        sm_scale = 1.0 / math.sqrt(D)
    lens = cache_len.tolist() if isinstance(cache_len, torch.Tensor) else [int(cache_len)] * B
    out = torch.empty((B, H, Tq, D), dtype=torch.float64, device=q.device)
    for b, n in enumerate(lens):
        qb = q[b].double()  # (H, Tq, D)
        kb = k_cache[b, :, :n].double()  # (H, n, D)
        vb = v_cache[b, :, :n].double()
        s = (qb @ kb.transpose(-2, -1)) * sm_scale  # (H, Tq, n)
        pos = torch.arange(n - Tq, n, device=q.device)[:, None]  # (Tq, 1) absolute query positions
        s = s.masked_fill(torch.arange(n, device=q.device)[None, :] > pos, float("-inf"))
        out[b] = torch.softmax(s, dim=-1) @ vb
    return out
