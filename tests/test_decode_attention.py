"""Parity tests of the split-K decoding attention against a float64 reference.

Runs on the Triton interpreter (TRITON_INTERPRET=1, CPU tensors) when there is
no CUDA.  Tolerances as in test_flash_attention.py: float32 max error under
1e-4 of max|ref| (+1e-5 floor); float16 / bfloat16 no more than 2x the error
of the same attention computed with plain PyTorch ops in that dtype (+1e-5).
"""
import importlib
import os

import pytest
import torch

if not torch.cuda.is_available():
    # Before anything imports triton (see test_flash_attention.py; tests/conftest.py
    # does it for the session, this covers running this file on its own).
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")
da = importlib.import_module("gptfast.kernels.decode_attention")
if da.INTERPRETER_MISMATCH:
    pytest.fail("triton was imported before TRITON_INTERPRET=1 was set, so the kernels cannot run on the "
                "interpreter: set it at the top of tests/conftest.py", pytrace=False)
if not da._INTERPRETED and not torch.cuda.is_available():
    pytest.skip("no CUDA and TRITON_INTERPRET=0: the kernels cannot run", allow_module_level=True)

DEVICE = "cpu" if da._INTERPRETED else "cuda"
FP32_RTOL = 1e-4
ABS_FLOOR = 1e-5
FWD_FACTOR = 2.0
B, H, L_MAX = 3, 2, 320


def make_inputs(Tq, D, dtype, seed=0):
    """q (B, H, Tq, D) and caches (B, H, L_MAX, D) as transposed views of
    (B, L_MAX, H, D) storage, the layout of a preallocated KV cache."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Tq, D, generator=g).to(dtype).to(DEVICE)
    k = torch.randn(B, L_MAX, H, D, generator=g).to(dtype).to(DEVICE).transpose(1, 2)
    v = torch.randn(B, L_MAX, H, D, generator=g).to(dtype).to(DEVICE).transpose(1, 2)
    return q, k, v


def torch_math(q, k_cache, v_cache, cache_len, sm_scale=None):
    """The reference's math in the inputs' own dtype (the precision baseline)."""
    Tq, D = q.shape[-2:]
    sm_scale = sm_scale if sm_scale is not None else D ** -0.5
    lens = cache_len.tolist() if isinstance(cache_len, torch.Tensor) else [cache_len] * q.shape[0]
    outs = []
    for b, n in enumerate(lens):
        s = (q[b] @ k_cache[b, :, :n].transpose(-2, -1)) * sm_scale  # (H, Tq, n)
        future = torch.arange(n, device=q.device)[None, :] > torch.arange(n - Tq, n, device=q.device)[:, None]
        outs.append(torch.softmax(s.masked_fill(future, float("-inf")), -1) @ v_cache[b, :, :n])
    return torch.stack(outs)


def check(out, q, k, v, cache_len, label, sm_scale=None):
    ref = da.decode_attention_reference(q, k, v, cache_len, sm_scale)
    assert out.shape == ref.shape and out.dtype == q.dtype
    err = (out.double() - ref).abs().max().item()
    if q.dtype == torch.float32:
        tol = FP32_RTOL * ref.abs().max().item() + ABS_FLOOR
        print(f"{label}: max err {err:.3e} (rel {err / ref.abs().max().item():.3e}), tol {tol:.3e}")
    else:
        base = (torch_math(q, k, v, cache_len, sm_scale).double() - ref).abs().max().item()
        tol = FWD_FACTOR * base + ABS_FLOOR
        print(f"{label}: max err {err:.3e}, torch err {base:.3e}, ratio {err / max(base, 1e-30):.2f}, tol {tol:.3e}")
    assert err <= tol, label  # also fails on NaN


@pytest.mark.parametrize("num_splits", [1, 3, 8])
@pytest.mark.parametrize("Tq,cache_len", [(1, 1), (1, 17), (1, 300), (3, 3), (3, 17), (3, 300), (3, 258)])
def test_fp32_matches_reference(Tq, cache_len, num_splits):
    # (3, 258) with 8 requested splits (5 of 64 keys): the queries sit at 255,
    # 256, 257 and the last split [256, 258) is entirely in the future of the
    # first one, whose partial is then empty (m = -inf, l = 0).
    q, k, v = make_inputs(Tq, 42, torch.float32, seed=cache_len)
    out = da.decode_attention(q, k, v, cache_len, num_splits=num_splits)
    check(out, q, k, v, cache_len, f"Tq={Tq} len={cache_len} splits={num_splits}")


@pytest.mark.parametrize("num_splits", [1, 5])
@pytest.mark.parametrize("Tq", [1, 3])
def test_per_batch_lengths(Tq, num_splits):
    """Different valid lengths per batch row, including one equal to Tq (a
    query that sees only keys of its own block) and some splits that are empty
    for the short rows."""
    q, k, v = make_inputs(Tq, 64, torch.float32, seed=10 + Tq)
    lens = torch.tensor([Tq, 17, 300])
    out = da.decode_attention(q, k, v, lens.to(DEVICE), num_splits=num_splits)
    check(out, q, k, v, lens, f"Tq={Tq} lens={lens.tolist()} splits={num_splits}")


def test_broadcast_lengths_tensor():
    """One length expanded to the batch (a stride-0 view, as a model makes
    from a scalar): every row must read it, not the memory beyond it."""
    q, k, v = make_inputs(1, 16, torch.float32, seed=3)
    storage = torch.tensor([200, 5, 5], dtype=torch.int32, device=DEVICE)   # what a stride-1 read would see
    lens = storage[:1].expand(q.shape[0])
    out = da.decode_attention(q, k, v, lens)
    check(out, q, k, v, 200, "expanded lens")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("Tq,D", [(1, 16), (3, 128)])
def test_half_precision_within_torch_error(dtype, Tq, D):
    q, k, v = make_inputs(Tq, D, dtype, seed=D)
    lens = torch.tensor([Tq, 130, 300])
    out = da.decode_attention(q, k, v, lens.to(DEVICE), num_splits=4)
    check(out, q, k, v, lens, f"{dtype} Tq={Tq} D={D}")


def test_default_split_heuristic_and_custom_scale():
    q, k, v = make_inputs(2, 32, torch.float32, seed=4)
    out = da.decode_attention(q, k, v, 257, sm_scale=0.2)
    check(out, q, k, v, 257, "default splits, sm_scale=0.2", sm_scale=0.2)


def test_split_count_does_not_change_the_result():
    q, k, v = make_inputs(1, 64, torch.float32, seed=5)
    outs = [da.decode_attention(q, k, v, 300, num_splits=s) for s in (1, 2, 5, 64)]
    for o in outs[1:]:
        assert torch.allclose(o, outs[0], rtol=1e-5, atol=1e-6)


def test_choose_split_never_makes_empty_splits():
    for max_len in (1, 63, 64, 65, 300, 4096):
        for bh in (1, 8, 256):
            for want in (None, 1, 3, 7, 1000):
                n, size = da._choose_split(max_len, bh, torch.device("cpu"), want)
                assert size % da._SPLIT_GRANULE == 0 and 1 <= n <= da._MAX_SPLITS
                assert (n - 1) * size < max_len <= n * size, (max_len, bh, want, n, size)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(cache_len=321), ValueError, "cache_len"),
        (dict(cache_len=2, Tq=3), ValueError, "cache_len"),
        (dict(cache_len=torch.tensor([5, 5])), ValueError, r"\(3,\)"),
        (dict(cache_len=torch.tensor([5, 5, 400])), ValueError, "cache_len values"),
        (dict(cache_len=torch.tensor([5.0, 5.0, 5.0])), ValueError, "integer"),
        (dict(cache_len=5.0), TypeError, "cache_len"),
        (dict(D=8), ValueError, "head dim"),
        (dict(cache_dtype=torch.float16), TypeError, "dtype"),
        (dict(num_splits=0), ValueError, "num_splits"),
        (dict(cache_heads=4), ValueError, "does not match"),
    ],
    ids=["len>L_max", "len<Tq", "lens-shape", "lens-range", "lens-float", "len-float", "D8", "dtype",
         "splits0", "heads"],
)
def test_invalid_inputs_raise_clear_errors(kwargs, exc, match):
    Tq, D = kwargs.pop("Tq", 1), kwargs.pop("D", 16)
    cache_dtype = kwargs.pop("cache_dtype", torch.float32)
    heads = kwargs.pop("cache_heads", H)
    q = torch.randn(B, H, Tq, D, device=DEVICE)
    k = torch.randn(B, heads, L_MAX, D, device=DEVICE).to(cache_dtype)
    cache_len = kwargs.pop("cache_len", 5)
    with pytest.raises(exc, match=match):
        da.decode_attention(q, k, k, cache_len, **kwargs)
