"""Parity tests of the Triton flash attention (forward + backward + dropout)
against the float64 masked-softmax reference.

Without CUDA the kernels run on the Triton interpreter (TRITON_INTERPRET=1) on
CPU tensors; CI has no GPU, so these tests are what guard the kernels.  The
interpreter is slow, so shapes are small (B=2, H=3; B=H=1 for the T=528 and
D=128 cases) and the whole file runs in under a minute on 2 cores.

Tolerances (errors are max |x - ref| over all elements, ref in float64):
  float32           err <= 1e-4 * max|ref| + ABS_FLOOR
  float16/bfloat16  err <= 2 * err(torch) + ABS_FLOOR for the output and
                    err <= 3 * err(torch) + ABS_FLOOR for dQ, dK, dV,
  where err(torch) is the error of the same attention computed with plain
  PyTorch ops (matmul, masked softmax, autograd) in that dtype on the same
  device (CPU supports fp16/bf16 matmul and softmax, so no emulation is needed).
  ABS_FLOOR = 1e-5 only guards the exact-zero cases (T = 1: dQ = dK = 0
  exactly and torch gets exactly 0, the kernel ~1e-6 of float32 rounding noise);
  it is far below one fp16/bf16 ulp of the O(1) values compared.
"""
import importlib
import math
import os

import pytest
import torch
from kernel_checks import check_against_reference as check_results, max_err

if not torch.cuda.is_available():
    # triton 3.9 reads TRITON_INTERPRET (triton.knobs.runtime.interpret) when
    # @triton.jit decorates a function: for triton's own library functions
    # (tl.max, tl.rand, ...) that is the first `import triton`, for our kernels
    # the import of the kernel module.  So it must be set before anything
    # imports triton; tests/conftest.py does that for the whole session, this
    # line covers running this file on its own.
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")
fa = importlib.import_module("gptfast.kernels.flash_attention")
if fa.INTERPRETER_MISMATCH:
    pytest.fail("triton was imported before TRITON_INTERPRET=1 was set, so the kernels cannot run on the "
                "interpreter: set it at the top of tests/conftest.py", pytrace=False)
if not fa._INTERPRETED and not torch.cuda.is_available():
    pytest.skip("no CUDA and TRITON_INTERPRET=0: the kernels cannot run", allow_module_level=True)

DEVICE = "cpu" if fa._INTERPRETED else "cuda"
FP32_RTOL = 1e-4
ABS_FLOOR = 1e-5
FWD_FACTOR, GRAD_FACTOR = 2.0, 3.0


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
def make_qkv(B, H, T, D, dtype, seed=0):
    """q, k, v (B, H, T, D) as transposed views of (B, T, H, D) tensors: the
    layout a GPT block produces, non-contiguous on purpose."""
    g = torch.Generator().manual_seed(seed)
    leaves = [torch.randn(B, T, H, D, generator=g).to(dtype).to(DEVICE).requires_grad_() for _ in range(3)]
    return [x.transpose(1, 2) for x in leaves]


def run_all(q, k, v, do, *, sm_scale=None, dropout_p=0.0, seed=None, mask=None):
    """-> dict name -> (kernel, torch-in-dtype, float64 reference) for o, dq, dk, dv."""
    o = fa.flash_attention(q, k, v, sm_scale=sm_scale, dropout_p=dropout_p, seed=seed)
    grads = torch.autograd.grad(o, (q, k, v), do)

    lp = [x.detach().requires_grad_() for x in (q, k, v)]
    o_lp = fa.attention_math(*lp, sm_scale, mask, dropout_p)
    grads_lp = torch.autograd.grad(o_lp, lp, do)

    hp = [x.detach().double().requires_grad_() for x in (q, k, v)]
    o_ref = fa.attention_reference(*hp, sm_scale, mask, dropout_p)
    grads_ref = torch.autograd.grad(o_ref, hp, do.double())

    out = {"out": (o, o_lp, o_ref)}
    for name, a, b, c in zip(("dq", "dk", "dv"), grads, grads_lp, grads_ref):
        out[name] = (a, b, c)
    return out


def check_against_reference(results, dtype, label=""):
    check_results(results, dtype, label, forward_names=("out",), abs_floor=ABS_FLOOR, check_dtype=True)


def _case(B, H, T, D, dtype, seed=0, **kw):
    q, k, v = make_qkv(B, H, T, D, dtype, seed)
    g = torch.Generator().manual_seed(seed + 1)
    do = torch.randn(B, H, T, D, generator=g).to(dtype).to(DEVICE)
    check_against_reference(run_all(q, k, v, do, **kw), dtype, label=f"B={B} H={H} T={T} D={D} {dtype}")


# ----------------------------------------------------------------------------
# parity: forward and all three gradients
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("D", [16, 42, 64])
@pytest.mark.parametrize("T", [1, 17, 64, 130])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
def test_matches_reference(dtype, T, D):
    _case(2, 3, T, D, dtype)


@pytest.mark.parametrize(
    "T,D,dtype",
    [(528, 64, torch.bfloat16), (130, 128, torch.float32), (64, 128, torch.float16)],
    ids=["T528-bf16", "D128-fp32", "D128-fp16"],
)
def test_long_sequence_and_large_head_dim(T, D, dtype):
    _case(1, 1, T, D, dtype)


def test_contiguous_inputs_custom_scale_and_expanded_grad():
    """Contiguous (B, H, T, D) inputs, a non-default sm_scale, and an upstream
    gradient with zero strides (from .sum()), all through the stride arguments."""
    B, H, T, D = 1, 2, 33, 24
    g = torch.Generator().manual_seed(3)
    q, k, v = [torch.randn(B, H, T, D, generator=g).to(DEVICE).requires_grad_() for _ in range(3)]
    o = fa.flash_attention(q, k, v, sm_scale=0.3)
    o.sum().backward()
    hp = [x.detach().double().requires_grad_() for x in (q, k, v)]
    ref = fa.attention_reference(*hp, 0.3)
    ref.sum().backward()
    for name, got, want in (("out", o, ref), ("dq", q.grad, hp[0].grad), ("dk", k.grad, hp[1].grad),
                            ("dv", v.grad, hp[2].grad)):
        err = max_err(got, want)
        print(f"{name}: max err {err:.3e}")
        assert err <= FP32_RTOL * want.abs().max().item() + ABS_FLOOR, name


def test_matches_torch_sdpa():
    """Sanity check of the reference's semantics against torch's own causal SDPA."""
    q, k, v = make_qkv(2, 2, 19, 16, torch.float32)
    o = fa.flash_attention(q, k, v)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert max_err(o, sdpa.double()) < 1e-5


# ----------------------------------------------------------------------------
# dropout
# ----------------------------------------------------------------------------
def test_dropout_matches_reference_with_extracted_mask():
    """Forward and backward use the mask that dropout_mask() returns for the
    seed: gradients can only match the reference if the backward regenerated
    exactly the forward's mask."""
    B, H, T, D, p, seed = 2, 2, 70, 32, 0.3, 1234
    q, k, v = make_qkv(B, H, T, D, torch.float32, seed=5)
    do = torch.randn(B, H, T, D, generator=torch.Generator().manual_seed(6)).to(DEVICE)
    mask = fa.dropout_mask(seed, B, H, T, p, DEVICE)
    assert mask.shape == (B, H, T, T) and mask.dtype == torch.bool
    check_against_reference(run_all(q, k, v, do, dropout_p=p, seed=seed, mask=mask), torch.float32,
                            label="dropout")


def test_dropout_half_precision():
    B, H, T, D, p, seed = 1, 2, 40, 42, 0.2, 99
    q, k, v = make_qkv(B, H, T, D, torch.bfloat16, seed=7)
    do = torch.randn(B, H, T, D, generator=torch.Generator().manual_seed(8)).to(torch.bfloat16).to(DEVICE)
    mask = fa.dropout_mask(seed, B, H, T, p, DEVICE)
    check_against_reference(run_all(q, k, v, do, dropout_p=p, seed=seed, mask=mask), torch.bfloat16,
                            label="dropout bf16")


def test_dropout_seeds_are_deterministic_and_distinct():
    q, k, v = make_qkv(1, 2, 48, 16, torch.float32)
    a = fa.flash_attention(q, k, v, dropout_p=0.25, seed=7)
    b = fa.flash_attention(q, k, v, dropout_p=0.25, seed=7)
    c = fa.flash_attention(q, k, v, dropout_p=0.25, seed=8)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    m7, m8 = (fa.dropout_mask(s, 1, 2, 48, 0.25, DEVICE) for s in (7, 8))
    assert torch.equal(m7, fa.dropout_mask(7, 1, 2, 48, 0.25, DEVICE))
    assert (m7 != m8).float().mean().item() > 0.2  # independent masks differ in ~2p(1-p) = 37.5%
    # Distinct heads get distinct masks (the counter includes batch*head).
    assert not torch.equal(m7[0, 0], m7[0, 1])


def test_dropout_seed_none_follows_torch_manual_seed():
    q, k, v = make_qkv(1, 1, 20, 16, torch.float32)
    torch.manual_seed(123)
    a = fa.flash_attention(q, k, v, dropout_p=0.5)
    torch.manual_seed(123)
    b = fa.flash_attention(q, k, v, dropout_p=0.5)
    c = fa.flash_attention(q, k, v, dropout_p=0.5)  # generator advanced: new seed
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_kept_fraction(p):
    B, H, T = 2, 2, 128
    mask = fa.dropout_mask(2024, B, H, T, p, DEVICE)
    n = mask.numel()
    kept = mask.float().mean().item()
    sigma = math.sqrt(p * (1 - p) / n)
    print(f"p={p}: kept {kept:.4f}, expected {1 - p:.4f}, sigma {sigma:.4f}")
    assert abs(kept - (1 - p)) < 5 * sigma


def test_dropout_mask_is_independent_of_block_sizes(monkeypatch):
    """The RNG counter depends on (bh, row, col) only: other tile shapes give
    the same dropped entries, hence the same result up to summation order."""
    q, k, v = make_qkv(1, 2, 45, 16, torch.float32, seed=11)
    do = torch.randn(1, 2, 45, 16, generator=torch.Generator().manual_seed(12)).to(DEVICE)
    o1 = fa.flash_attention(q, k, v, dropout_p=0.3, seed=5)
    g1 = torch.autograd.grad(o1, (q, k, v), do)
    for name in ("PINNED_FWD", "PINNED_BWD_DKDV", "PINNED_BWD_DQ"):
        monkeypatch.setattr(fa, name, dict(getattr(fa, name), BLOCK_M=16, BLOCK_N=16))
    o2 = fa.flash_attention(q, k, v, dropout_p=0.3, seed=5)
    g2 = torch.autograd.grad(o2, (q, k, v), do)
    for a, b in zip((o1, *g1), (o2, *g2)):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_dropout_zero_is_exactly_no_dropout():
    q, k, v = make_qkv(1, 1, 30, 16, torch.float32)
    assert torch.equal(fa.flash_attention(q, k, v), fa.flash_attention(q, k, v, dropout_p=0.0, seed=3))


# ----------------------------------------------------------------------------
# input validation
# ----------------------------------------------------------------------------
def _t(*shape, dtype=torch.float32):
    return torch.randn(*shape).to(dtype).to(DEVICE)


@pytest.mark.parametrize(
    "args,kwargs,exc,match",
    [
        ((_t(2, 8, 16), _t(2, 8, 16), _t(2, 8, 16)), {}, ValueError, "4-D"),
        ((_t(1, 2, 8, 16), _t(1, 2, 9, 16), _t(1, 2, 8, 16)), {}, ValueError, "same shape"),
        ((_t(1, 2, 8, 16), _t(1, 2, 8, 16, dtype=torch.float16), _t(1, 2, 8, 16)), {}, TypeError, "share a dtype"),
        ((_t(1, 2, 8, 16, dtype=torch.float64),) * 3, {}, TypeError, "not supported"),
        ((_t(1, 2, 8, 8),) * 3, {}, ValueError, "head dim"),
        ((_t(1, 2, 8, 130),) * 3, {}, ValueError, "head dim"),
        ((_t(1, 2, 8, 16),) * 3, {"dropout_p": 1.0}, ValueError, "dropout_p"),
        ((_t(1, 2, 8, 16),) * 3, {"dropout_p": -0.1}, ValueError, "dropout_p"),
        ((_t(1, 2, 8, 16),) * 3, {"dropout_p": 0.1, "seed": -1}, ValueError, "seed"),
        ((_t(1, 2, 8, 16),) * 3, {"sm_scale": -1.0}, ValueError, "sm_scale"),
        (("q", _t(1, 2, 8, 16), _t(1, 2, 8, 16)), {}, TypeError, "torch.Tensor"),
    ],
    ids=["3d", "shape", "mixed-dtype", "float64", "D8", "D130", "p1", "p-neg", "seed-neg", "scale", "not-tensor"],
)
def test_invalid_inputs_raise_clear_errors(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fa.flash_attention(*args, **kwargs)

