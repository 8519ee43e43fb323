"""Parity tests of the fused Triton LayerNorm (+ residual add), forward and
backward, against F.layer_norm in float64.

Without CUDA the kernels run on the Triton interpreter (TRITON_INTERPRET=1) on
CPU tensors; CI has no GPU, so these tests are what guard the kernels.

Tolerances (errors are max |x - ref| over all elements, ref in float64 on the
same (rounded) inputs):
  float32           err <= 1e-4 * max|ref| + ABS_FLOOR
  float16/bfloat16  err <= 2 * err(torch) + ABS_FLOOR for y and h,
                    err <= 3 * err(torch) + ABS_FLOOR for the gradients,
  where err(torch) is the error of torch's own F.layer_norm / autograd on the
  inputs in that dtype on the CPU (x, residual, weight and bias all in it).
  ABS_FLOOR = 1e-6 only guards exact-zero cases (torch exact where the kernel
  has float32 rounding noise); far below one fp16/bf16 ulp of the O(1) values.
"""
import importlib
import os

import pytest
import torch
from gptfast._backend import reference_forced
from kernel_checks import check_against_reference as check_results, max_err

if not torch.cuda.is_available():
    # Before the kernel module is imported: triton reads TRITON_INTERPRET when
    # @triton.jit decorates a kernel (see tests/test_flash_attention.py).
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")
ln = importlib.import_module("gptfast.kernels.layer_norm")
if os.environ.get("TRITON_INTERPRET") == "1" and not ln._INTERPRETED:
    ln = importlib.reload(ln)  # imported before the variable was set: rebuild the kernels
if not ln._INTERPRETED and not torch.cuda.is_available():
    pytest.skip("no CUDA and TRITON_INTERPRET disabled: the kernels cannot run", allow_module_level=True)

DEVICE = "cpu" if ln._INTERPRETED else "cuda"
FP32_RTOL = 1e-4
ABS_FLOOR = 1e-6
FWD_FACTOR, GRAD_FACTOR = 2.0, 3.0
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DTYPE_IDS = ["fp32", "fp16", "bf16"]


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
def check(results, dtype, label):
    check_results(results, dtype, label, forward_names=("y", "h"), abs_floor=ABS_FLOOR)


def make_inputs(M, N, dtype, has_bias, has_residual, seed=0):
    """x, residual (M, N) with a non-zero mean and a scale != 1 (so the
    statistics matter), weight ~ 1 +- 0.5, bias ~ +-0.5; all rounded to dtype."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(M, N, generator=g) * 2 + 0.5).to(dtype)
    r = (torch.randn(M, N, generator=g) + 0.25).to(dtype) if has_residual else None
    w = (1 + 0.5 * torch.randn(N, generator=g)).to(dtype)
    b = (0.5 * torch.randn(N, generator=g)).to(dtype) if has_bias else None
    dy = torch.randn(M, N, generator=g).to(dtype)
    dh = torch.randn(M, N, generator=g).to(dtype) if has_residual else None
    return x, r, w, b, dy, dh


def _run(fn, tensors, dy, dh, device, dtype=None):
    """fn(x, w, b, r) on leaf copies of `tensors` moved to device (and dtype),
    backward with (dy, dh): -> outputs {"y", ["h"]}, grads {"dx", "dr", "dw", "db"}
    (absent inputs skipped)."""
    leaves = {k: t.detach().to(device, dtype).requires_grad_() if t is not None else None
              for k, t in tensors.items()}
    out = fn(leaves["x"], leaves["w"], leaves["b"], leaves["r"])
    outs = {"y": out[0], "h": out[1]} if leaves["r"] is not None else {"y": out}
    gouts = [dy.to(device, dtype)] + ([dh.to(device, dtype)] if "h" in outs else [])
    inputs = {k: v for k, v in leaves.items() if v is not None}
    grads = torch.autograd.grad(list(outs.values()), list(inputs.values()), gouts)
    return outs, {f"d{k}": g for k, g in zip(inputs, grads)}


def run_all(x, r, w, b, dy, dh, eps=1e-5):
    """-> name -> (kernel, torch in the inputs' dtype on CPU, float64 reference)."""
    tensors = dict(x=x, r=r, w=w, b=b)
    kern = lambda x_, w_, b_, r_: ln.layer_norm(x_, w_, b_, eps, residual=r_)  # noqa: E731
    ref = lambda x_, w_, b_, r_: ln.layer_norm_reference(x_, w_, b_, eps, r_)  # noqa: E731
    k_out, k_grad = _run(kern, tensors, dy, dh, DEVICE)
    t_out, t_grad = _run(ref, tensors, dy, dh, "cpu")
    r_out, r_grad = _run(ref, tensors, dy, dh, "cpu", torch.float64)
    res = {name: (k_out[name].cpu(), t_out[name], r_out[name]) for name in k_out}
    res.update({name: (k_grad[name].cpu(), t_grad[name], r_grad[name]) for name in k_grad})
    return res


# ----------------------------------------------------------------------------
# parity: y, h and the gradients of x, residual, weight, bias
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("has_residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("has_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("M", [1, 7, 130])
@pytest.mark.parametrize("N", [42, 128, 1000])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_matches_reference(dtype, N, M, has_bias, has_residual):
    x, r, w, b, dy, dh = make_inputs(M, N, dtype, has_bias, has_residual)
    results = run_all(x, r, w, b, dy, dh)
    for name, (got, _, _) in results.items():
        want = {"dw": w.dtype, "db": w.dtype}.get(name, x.dtype)
        assert got.dtype == want, (name, got.dtype, want)
    check(results, dtype, f"N={N} M={M} bias={has_bias} residual={has_residual} {dtype}")


def test_higher_rank_noncontiguous_and_eps():
    """(B, T, N) input given as a transposed view, residual unused downstream
    (only y gets a gradient), a large eps: shapes and strides are honoured."""
    g = torch.Generator().manual_seed(3)
    B, T, N = 2, 5, 96
    x = torch.randn(B, N, T, generator=g).to(DEVICE).transpose(1, 2).requires_grad_()  # (B, T, N), stride_n = T
    r = torch.randn(B, T, N, generator=g).to(DEVICE).requires_grad_()
    w = torch.randn(N, generator=g).to(DEVICE).requires_grad_()
    b = torch.randn(N, generator=g).to(DEVICE).requires_grad_()
    dy = torch.randn(B, T, N, generator=g).to(DEVICE)
    y, h = ln.layer_norm(x, w, b, eps=0.1, residual=r)
    assert y.shape == h.shape == (B, T, N)
    grads = torch.autograd.grad(y, (x, r, w, b), dy)  # h unused: its gradient is None in the backward

    leaves = [t.detach().cpu().double().requires_grad_() for t in (x, r, w, b)]
    y_ref, h_ref = ln.layer_norm_reference(leaves[0], leaves[2], leaves[3], 0.1, leaves[1])
    grads_ref = torch.autograd.grad(y_ref, leaves, dy.cpu().double())
    for name, got, ref in zip(("y", "h", "dx", "dr", "dw", "db"), (y, h, *grads), (y_ref, h_ref, *grads_ref)):
        err, tol = max_err(got.cpu(), ref), FP32_RTOL * ref.abs().max().item() + ABS_FLOOR
        print(f"{name}: max err {err:.3e} tol {tol:.3e}")
        assert err <= tol, name


def test_only_h_used_downstream():
    """y unused: the gradient of x and residual is exactly dh, weight gets none."""
    x, r, w, b, _, dh = make_inputs(7, 42, torch.float32, True, True)
    x, r, w, b = [t.to(DEVICE).requires_grad_() for t in (x, r, w, b)]
    _, h = ln.layer_norm(x, w, b, residual=r)
    (h * dh.to(DEVICE)).sum().backward()
    assert torch.equal(x.grad.cpu(), dh) and torch.equal(r.grad.cpu(), dh)
    assert w.grad is None or not w.grad.any()


def test_mixed_dtype_residual():
    """bf16 x with a float32 residual stream: h and y are float32 (torch's
    promotion of x + residual); x's gradient comes back in bf16, the residual's
    in float32 (the kernel writes the second buffer)."""
    x, r, w, b, dy, dh = make_inputs(7, 128, torch.float32, True, True, seed=5)
    x = x.to(torch.bfloat16)
    x_, r_, w_, b_ = [t.to(DEVICE).requires_grad_() for t in (x, r, w, b)]
    y, h = ln.layer_norm(x_, w_, b_, residual=r_)
    assert y.dtype == h.dtype == torch.float32
    torch.autograd.backward((y, h), (dy.to(DEVICE), dh.to(DEVICE)))  # one backward: dx is rounded once
    assert x_.grad.dtype == torch.bfloat16 and r_.grad.dtype == torch.float32

    leaves = [t.detach().double().requires_grad_() for t in (x, r, w, b)]
    y_ref, h_ref = ln.layer_norm_reference(leaves[0], leaves[2], leaves[3], 1e-5, leaves[1])
    torch.autograd.backward((y_ref, h_ref), (dy.double(), dh.double()))
    for name, got, ref in (("y", y, y_ref), ("h", h, h_ref), ("dr", r_.grad, leaves[1].grad),
                           ("dw", w_.grad, leaves[2].grad), ("db", b_.grad, leaves[3].grad)):
        err, tol = max_err(got.detach().cpu(), ref), FP32_RTOL * ref.abs().max().item() + ABS_FLOOR
        print(f"{name}: max err {err:.3e} tol {tol:.3e}")
        assert err <= tol, name
    # dx is dr rounded to bf16.
    assert torch.equal(x_.grad.cpu(), r_.grad.cpu().to(torch.bfloat16))


def test_block_size_independence(monkeypatch):
    """Other row blockings and program counts give the same numbers: the
    forward bit-identically (rows are independent), the weight / bias
    gradients up to float32 summation order."""
    x, r, w, b, dy, dh = make_inputs(130, 128, torch.float32, True, True, seed=7)
    base = run_all(x, r, w, b, dy, dh)
    monkeypatch.setattr(ln, "PINNED_FWD", dict(ln.PINNED_FWD, BLOCK_M=4))
    monkeypatch.setattr(ln, "PINNED_BWD", dict(ln.PINNED_BWD, BLOCK_M=32))
    monkeypatch.setattr(ln, "INTERPRET_BWD_PROGRAMS", 1)
    other = run_all(x, r, w, b, dy, dh)
    for name in base:
        got, ref = other[name][0], base[name][0]
        if name in ("y", "h", "dx", "dr"):
            assert torch.equal(got, ref), name
        else:
            assert max_err(got, ref) <= 1e-6 * ref.abs().max().item(), name


def test_deterministic():
    x, r, w, b, dy, dh = make_inputs(130, 128, torch.float32, True, True, seed=9)
    first = run_all(x, r, w, b, dy, dh)
    second = run_all(x, r, w, b, dy, dh)
    for name in first:
        assert torch.equal(first[name][0], second[name][0]), name


# ----------------------------------------------------------------------------
# module drop-in
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_module_state_dict_interchangeable(bias):
    torch.manual_seed(0)
    ref = torch.nn.LayerNorm(42, bias=bias)
    with torch.no_grad():
        ref.weight.normal_()
        if bias:
            ref.bias.normal_()
    fused = ln.FusedLayerNorm(42, bias=bias)
    assert [n for n, _ in fused.named_parameters()] == [n for n, _ in ref.named_parameters()]
    fused.load_state_dict(ref.state_dict())
    back = torch.nn.LayerNorm(42, bias=bias)
    back.load_state_dict(fused.state_dict())
    assert torch.equal(back.weight, ref.weight)

    x = torch.randn(3, 5, 42)
    y_ref = ref(x)
    y = fused.to(DEVICE)(x.to(DEVICE))
    err = max_err(y.detach().cpu(), y_ref.detach())
    print(f"module bias={bias}: max err {err:.3e}")
    assert err <= 1e-5
    y2, h = fused(x.to(DEVICE), residual=x.to(DEVICE))
    assert torch.allclose(y2.detach().cpu(), ref(2 * x).detach(), atol=1e-5, rtol=0)


def test_module_reference_forced(monkeypatch):
    """GPTFAST_REFERENCE=1 makes the module use torch's layer_norm: exactly nn.LayerNorm."""
    monkeypatch.setenv("GPTFAST_REFERENCE", "1")
    torch.manual_seed(1)
    ref = torch.nn.LayerNorm(42)
    fused = ln.FusedLayerNorm(42)
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(4, 42)
    assert torch.equal(fused(x), ref(x))


def test_module_falls_back_where_kernels_cannot_run(monkeypatch):
    """CPU tensors without the interpreter: one RuntimeWarning, then torch's layer_norm."""
    if DEVICE != "cpu":
        pytest.skip("the fallback is exercised with CPU tensors under the interpreter")
    if reference_forced():
        pytest.skip("GPTFAST_REFERENCE=1: the module runs torch's layer_norm without trying the kernel")
    monkeypatch.setattr(ln, "_INTERPRETED", False)  # as if TRITON_INTERPRET were unset
    monkeypatch.setattr(ln, "_fallback_warned", False)
    fused, ref = ln.FusedLayerNorm(42), torch.nn.LayerNorm(42)
    x = torch.randn(4, 42)
    with pytest.warns(RuntimeWarning, match="cannot run"):
        y = fused(x)
    assert torch.equal(y, ref(x))
    with pytest.raises(RuntimeError, match="CUDA"):  # the functional API does not fall back silently
        ln.layer_norm(x, fused.weight, fused.bias)


# ----------------------------------------------------------------------------
# validation and config pruning (host side only)
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("case, exc", [
    ("weight_shape", ValueError), ("bias_shape", ValueError), ("residual_shape", ValueError),
    ("too_wide", ValueError), ("dtype", TypeError), ("eps", ValueError),
])
def test_validation(case, exc):
    x, w, b = torch.randn(3, 8, device=DEVICE), torch.ones(8, device=DEVICE), torch.zeros(8, device=DEVICE)
    kwargs = dict(x=x, weight=w, bias=b)
    if case == "weight_shape":
        kwargs["weight"] = torch.ones(7, device=DEVICE)
    elif case == "bias_shape":
        kwargs["bias"] = torch.zeros(9, device=DEVICE)
    elif case == "residual_shape":
        kwargs["residual"] = torch.randn(3, 9, device=DEVICE)
    elif case == "too_wide":
        n = ln.MAX_N + 1
        kwargs.update(x=torch.randn(1, n, device=DEVICE), weight=torch.ones(n, device=DEVICE), bias=None)
    elif case == "dtype":
        kwargs["x"] = x.double()
    elif case == "eps":
        kwargs["eps"] = 0.0
    with pytest.raises(exc):
        ln.layer_norm(**kwargs)


@pytest.mark.parametrize("N", [42, 128, 1000, 4096, 16384])
def test_autotune_prune_keeps_sane_tiles(N):
    import triton

    block_n = triton.next_power_of_2(N)
    kept = ln._prune_tile(ln._tuned_configs(), {"N": N}, BLOCK_N=block_n)
    assert kept
    for c in kept:
        assert c.kwargs["BLOCK_M"] * block_n <= 16384
