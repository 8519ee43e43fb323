"""Parity tests of the fused Triton cross-entropy (and the chunked linear +
cross-entropy) against F.cross_entropy in float64, plus a convergence check
of a toy model trained with the fused LayerNorm and cross-entropy kernels.

Without CUDA the kernels run on the Triton interpreter (TRITON_INTERPRET=1) on
CPU tensors; CI has no GPU, so these tests are what guard the kernels.

Tolerances (errors are max |x - ref| over all elements, ref in float64 on the
same (rounded) logits):
  float32           err <= 1e-4 * max|ref| + ABS_FLOOR
  float16/bfloat16  err <= 2 * err(torch) + ABS_FLOOR for the loss,
                    err <= 3 * err(torch) + ABS_FLOOR for d(logits),
  where err(torch) is the error of F.cross_entropy / autograd on the logits
  in that dtype on the CPU.  (The kernel's loss is float32, so its loss error
  is far below torch's, whose loss is rounded to the logits' dtype.)
  ABS_FLOOR = 1e-7 guards exact-zero cases only; the gradients compared are
  O(1 / n_rows), far above it, and one bf16 ulp of them is ~1e-4.
"""
import importlib
import math
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from kernel_checks import check_against_reference as check_results, max_err

if not torch.cuda.is_available():
    # Before the kernel modules are imported: triton reads TRITON_INTERPRET when
    # @triton.jit decorates a kernel (see tests/test_flash_attention.py).
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")
ce = importlib.import_module("gptfast.kernels.cross_entropy")
ln = importlib.import_module("gptfast.kernels.layer_norm")
if os.environ.get("TRITON_INTERPRET") == "1" and not ce._INTERPRETED:
    ce = importlib.reload(ce)  # imported before the variable was set: rebuild the kernels
if os.environ.get("TRITON_INTERPRET") == "1" and not ln._INTERPRETED:
    ln = importlib.reload(ln)
if not ce._INTERPRETED and not torch.cuda.is_available():
    pytest.skip("no CUDA and TRITON_INTERPRET disabled: the kernels cannot run", allow_module_level=True)

DEVICE = "cpu" if ce._INTERPRETED else "cuda"
FP32_RTOL = 1e-4
ABS_FLOOR = 1e-7
FWD_FACTOR, GRAD_FACTOR = 2.0, 3.0
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DTYPE_IDS = ["fp32", "fp16", "bf16"]
GRAD_OUT = 0.75  # != 1 so the grad_out scaling is exercised; exact in fp16 / bf16


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
def check(results, dtype, label):
    check_results(results, dtype, label, forward_names=("loss",), abs_floor=ABS_FLOOR)


def make_case(N, V, dtype, ignore_index=-1, seed=0, scale=3.0):
    """logits (N, V) ~ scale * randn rounded to dtype; targets with every row
    i % 5 == 3 set to ignore_index (none when N = 1)."""
    g = torch.Generator().manual_seed(seed)
    logits = (scale * torch.randn(N, V, generator=g)).to(dtype)
    targets = torch.randint(0, V, (N,), generator=g)
    targets[3::5] = ignore_index
    return logits, targets


def _loss_and_grad(fn, logits, targets, grad_out, device, dtype=None):
    leaf = logits.detach().to(device, dtype).requires_grad_()
    loss = fn(leaf, targets.to(device))
    go = grad_out.to(device, loss.dtype) if isinstance(grad_out, torch.Tensor) else torch.tensor(
        grad_out, device=device, dtype=loss.dtype)
    (grad,) = torch.autograd.grad(loss, leaf, go)
    return loss.detach().cpu(), grad.cpu()


def run_all(logits, targets, ignore_index=-1, reduction="mean", grad_out=GRAD_OUT, inplace_grad=False):
    """-> {"loss", "dlogits"} -> (kernel, torch in dtype on CPU, float64 reference)."""
    def kern(x, t):
        # Through `x * 1` for inplace_grad: the leaf itself must keep its values.
        return ce.cross_entropy(x * 1 if inplace_grad else x, t, ignore_index, reduction, inplace_grad=inplace_grad)

    def ref(x, t):
        return ce.cross_entropy_reference(x, t, ignore_index, reduction)

    k = _loss_and_grad(kern, logits, targets, grad_out, DEVICE)
    t = _loss_and_grad(ref, logits, targets, grad_out, "cpu")
    r = _loss_and_grad(ref, logits, targets, grad_out, "cpu", torch.float64)
    assert k[0].dtype == torch.float32 and k[1].dtype == logits.dtype
    return {"loss": (k[0], t[0], r[0]), "dlogits": (k[1], t[1], r[1])}


# ----------------------------------------------------------------------------
# parity: loss and d(logits)
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("N", [1, 17, 64])
@pytest.mark.parametrize("V", [65, 1000, 10007])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_matches_reference(dtype, V, N, reduction):
    logits, targets = make_case(N, V, dtype)
    check(run_all(logits, targets, reduction=reduction), dtype, f"V={V} N={N} {reduction} {dtype}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("V", [65, 1000])
def test_reduction_none(dtype, V):
    logits, targets = make_case(17, V, dtype, seed=1)
    grad_out = torch.randn(17).to(dtype)  # per-row upstream gradient, exact in dtype
    results = run_all(logits, targets, reduction="none", grad_out=grad_out)
    assert results["loss"][0][3::5].eq(0).all()  # ignored rows: loss exactly 0
    check(results, dtype, f"none V={V} {dtype}")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_inplace_grad(dtype, reduction):
    """Liger-style: the gradient is written into the logits in the forward and
    scaled by grad_out in the backward.  Same numbers as the default path."""
    logits, targets = make_case(17, 1000, dtype, seed=2)
    grad_out = torch.randn(17).to(dtype) if reduction == "none" else GRAD_OUT
    check(run_all(logits, targets, reduction=reduction, grad_out=grad_out, inplace_grad=True), dtype,
          f"inplace {reduction} {dtype}")


def test_inplace_grad_overwrites_and_returns_the_logits_buffer():
    logits, targets = make_case(17, 65, torch.float32, seed=3)
    leaf = logits.to(DEVICE).requires_grad_()
    x = leaf * 1
    loss = ce.cross_entropy(x, targets.to(DEVICE), inplace_grad=True)
    # x now holds (softmax - onehot) / n_valid: its rows sum to 0, ignored rows are 0.
    assert not torch.equal(x.detach().cpu(), logits)
    assert x.detach().sum(1).abs().max().item() < 1e-6 and not x.detach()[3::5].any()
    grads = []
    x.register_hook(lambda g: grads.append(g))
    loss.backward()
    assert grads[0].data_ptr() == x.data_ptr()  # no (N, V) buffer was allocated for the gradient


def test_inplace_grad_without_requires_grad_leaves_logits_alone():
    logits, targets = make_case(17, 65, torch.float32, seed=4)
    x = logits.to(DEVICE)
    loss = ce.cross_entropy(x, targets.to(DEVICE), inplace_grad=True)
    assert torch.equal(x.cpu(), logits)
    ref = F.cross_entropy(logits.double(), targets, ignore_index=-1)
    assert abs(loss.item() - ref.item()) <= 1e-4 * abs(ref.item())


def test_inplace_grad_is_a_no_op_without_grad_mode():
    """Under torch.no_grad (evaluation) nothing is written, even with inplace_grad."""
    logits, targets = make_case(17, 65, torch.float32, seed=4)
    x = logits.to(DEVICE).requires_grad_() * 1
    with torch.no_grad():
        ce.cross_entropy(x, targets.to(DEVICE), inplace_grad=True)
    assert torch.equal(x.detach().cpu(), logits)


def test_inplace_grad_refuses_a_leaf():
    leaf = torch.randn(4, 65, device=DEVICE, requires_grad=True)
    with pytest.raises(ValueError, match="leaf"):
        ce.cross_entropy(leaf, torch.zeros(4, dtype=torch.long, device=DEVICE), inplace_grad=True)


def test_inplace_grad_detects_other_users_of_the_logits():
    """An op that saved the logits for its backward must fail loudly, not
    silently use the gradient that replaced them (the version counter is bumped)."""
    logits, targets = make_case(17, 65, torch.float32, seed=5)
    leaf = logits.to(DEVICE).requires_grad_()
    x = leaf * 1
    other = (x * x).sum()  # mul saves x
    loss = ce.cross_entropy(x, targets.to(DEVICE), inplace_grad=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (loss + other).backward()


# ----------------------------------------------------------------------------
# edge cases
# ----------------------------------------------------------------------------
def test_ignore_index_default_and_int32_targets():
    """ignore_index=-100 (torch's default) with int32 targets."""
    logits, targets = make_case(17, 92, torch.float32, ignore_index=-100, seed=6)
    check(run_all(logits, targets.to(torch.int32), ignore_index=-100), torch.float32, "ignore=-100 int32")


def test_all_rows_ignored():
    """As torch: "mean" gives NaN (0 / 0), "sum" gives 0; the gradient is 0."""
    logits = torch.randn(5, 65, device=DEVICE, requires_grad=True)
    targets = torch.full((5,), -1, device=DEVICE)
    loss = ce.cross_entropy(logits, targets, reduction="mean")
    assert torch.isnan(loss)
    loss.backward()
    assert not logits.grad.any()
    assert ce.cross_entropy(logits, targets, reduction="sum").item() == 0.0


def test_out_of_range_target_gives_nan():
    """torch raises; the kernel (no host sync) makes that row's loss and gradient NaN."""
    logits = torch.randn(4, 65, device=DEVICE, requires_grad=True)
    targets = torch.tensor([1, 65, 2, -1], device=DEVICE)
    loss = ce.cross_entropy(logits, targets, reduction="none")
    assert torch.isnan(loss[1]) and torch.isfinite(loss[[0, 2, 3]]).all()
    loss.sum().backward()
    assert torch.isnan(logits.grad[1]).all() and torch.isfinite(logits.grad[[0, 2, 3]]).all()


def test_masked_vocabulary_entries():
    """-inf logits (a masked vocabulary slice, one whole BLOCK_V block of it)
    are finite in the loss and get exactly zero gradient."""
    logits, targets = make_case(17, 1000, torch.float32, seed=7)
    logits[:, :200] = float("-inf")
    targets[targets < 200] = 500
    results = run_all(logits, targets)
    assert torch.isfinite(results["loss"][0]).all()
    assert not results["dlogits"][0][:, :200].any()
    check(results, torch.float32, "masked vocab")


def test_noncontiguous_logits():
    """(N, V) given as the transpose of a (V, N) tensor: strides are honoured."""
    g = torch.Generator().manual_seed(8)
    base = torch.randn(1000, 17, generator=g) * 3
    targets = torch.randint(0, 1000, (17,), generator=g)
    targets[3::5] = -1
    leaf = base.clone().to(DEVICE).requires_grad_()
    loss = ce.cross_entropy(leaf.t(), targets.to(DEVICE))
    loss.backward()
    ref_leaf = base.double().requires_grad_()
    ref = F.cross_entropy(ref_leaf.t(), targets, ignore_index=-1)
    ref.backward()
    for name, got, want in (("loss", loss.detach().cpu(), ref.detach()), ("grad", leaf.grad.cpu(), ref_leaf.grad)):
        err, tol = max_err(got, want), FP32_RTOL * want.abs().max().item() + ABS_FLOOR
        print(f"noncontiguous {name}: max err {err:.3e} tol {tol:.3e}")
        assert err <= tol, name


def test_block_size_independence(monkeypatch):
    """Narrow blocks (8 ragged blocks over V = 1000, one row per program): the
    same numbers up to float32 summation order."""
    logits, targets = make_case(17, 1000, torch.float32, seed=9)
    base = run_all(logits, targets)
    monkeypatch.setattr(ce, "PINNED_MAX_BLOCK_V", 128)
    monkeypatch.setattr(ce, "PINNED_TILE", 128)
    other = run_all(logits, targets)
    for name in base:
        err = max_err(other[name][0], base[name][0])
        print(f"block size {name}: max diff {err:.3e}")
        assert err <= 1e-6 * base[name][2].abs().max().item(), name


def test_deterministic():
    logits, targets = make_case(64, 1000, torch.float32, seed=10)
    first, second = run_all(logits, targets), run_all(logits, targets)
    for name in first:
        assert torch.equal(first[name][0], second[name][0]), name


@pytest.mark.parametrize("case, exc", [
    ("rank", ValueError), ("targets_len", ValueError), ("targets_dtype", TypeError),
    ("logits_dtype", TypeError), ("reduction", ValueError),
])
def test_validation(case, exc):
    logits, targets = torch.randn(4, 10, device=DEVICE), torch.zeros(4, dtype=torch.long, device=DEVICE)
    kwargs = dict(logits=logits, targets=targets)
    if case == "rank":
        kwargs["logits"] = logits.view(2, 2, 10)
    elif case == "targets_len":
        kwargs["targets"] = targets[:3]
    elif case == "targets_dtype":
        kwargs["targets"] = targets.float()
    elif case == "logits_dtype":
        kwargs["logits"] = logits.double()
    elif case == "reduction":
        kwargs["reduction"] = "avg"
    with pytest.raises(exc):
        ce.cross_entropy(**kwargs)


@pytest.mark.parametrize("V", [65, 92, 1000, 10007, 50257])
def test_autotune_prune_fits_vocabulary(V):
    import triton

    kept = ce.prune_configs(ce._tuned_configs(), {"V": V})
    assert kept
    for c in kept:
        assert c.kwargs["BLOCK_V"] <= triton.next_power_of_2(V)
        assert c.kwargs["BLOCK_N"] == 1 or c.kwargs["BLOCK_V"] >= V  # multi-row only when a row fits a block


# ----------------------------------------------------------------------------
# fused linear + cross-entropy
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, has_bias, reduction, chunk", [
    (torch.float32, True, "mean", 16),
    (torch.float32, False, "sum", None),
    (torch.bfloat16, True, "mean", 24),
], ids=["fp32-bias-mean-c16", "fp32-nobias-sum-default", "bf16-bias-mean-c24"])
def test_linear_cross_entropy(dtype, has_bias, reduction, chunk):
    N, D, V = 70, 48, 1000  # 70 rows: the last chunk is ragged
    g = torch.Generator().manual_seed(11)
    x = torch.randn(N, D, generator=g).to(dtype)
    w = (torch.randn(V, D, generator=g) / math.sqrt(D)).to(dtype)
    b = (0.1 * torch.randn(V, generator=g)).to(dtype) if has_bias else None
    targets = torch.randint(0, V, (N,), generator=g)
    targets[3::5] = -1
    tensors = [t for t in (x, w, b) if t is not None]

    def run(fn, device, to_dtype=None):
        leaves = [t.detach().to(device, to_dtype).requires_grad_() for t in tensors]
        xx, ww, bb = leaves[0], leaves[1], (leaves[2] if has_bias else None)
        loss = fn(xx, ww, bb, targets.to(device))
        grads = torch.autograd.grad(loss, leaves, torch.tensor(GRAD_OUT, device=device, dtype=loss.dtype))
        return [loss.detach().cpu()] + [gr.cpu() for gr in grads]

    def fused(xx, ww, bb, tt):
        return ce.linear_cross_entropy(xx, ww, tt, bb, reduction=reduction, chunk=chunk)

    def plain(xx, ww, bb, tt):
        logits = xx @ ww.t() + (bb if bb is not None else 0)
        return F.cross_entropy(logits, tt, ignore_index=-1, reduction=reduction)

    k, t, r = run(fused, DEVICE), run(plain, "cpu"), run(plain, "cpu", torch.float64)
    names = ["loss", "dx", "dw"] + (["db"] if has_bias else [])
    assert [a.dtype for a in k[1:]] == [dtype] * (len(names) - 1)
    check({n: (a, b_, c) for n, a, b_, c in zip(names, k, t, r)}, dtype,
          f"linear_ce {dtype} bias={has_bias} {reduction} chunk={chunk}")


# ----------------------------------------------------------------------------
# convergence: a toy model trained with the fused kernels vs torch ops
# ----------------------------------------------------------------------------
class ToyLM(nn.Module):
    """Embedding -> LN -> MLP -> (+ residual) LN -> head: both LayerNorm
    flavours (plain and with the residual add) and the cross-entropy."""

    def __init__(self, fused: bool, V: int = 65, D: int = 32, Hd: int = 64):
        super().__init__()
        norm = ln.FusedLayerNorm if fused else nn.LayerNorm
        self.fused = fused
        self.emb = nn.Embedding(V, D)
        self.ln1, self.ln2 = norm(D), norm(D)
        self.fc1, self.fc2 = nn.Linear(D, Hd), nn.Linear(Hd, D)
        self.head = nn.Linear(D, V)

    def forward(self, idx, targets, head_mode="ce"):
        x = self.emb(idx)  # (N, D)
        f = self.fc2(F.gelu(self.fc1(self.ln1(x))))  # (N, D)
        if self.fused:
            y, _ = self.ln2(f, residual=x)
        else:
            y = self.ln2(x + f)
        if not self.fused:
            return F.cross_entropy(self.head(y), targets, ignore_index=-1)
        if head_mode == "linear":
            return ce.linear_cross_entropy(y, self.head.weight, targets, self.head.bias, chunk=24)
        return ce.cross_entropy(self.head(y), targets, inplace_grad=head_mode == "inplace")


def test_convergence_matches_torch(monkeypatch):
    """20 AdamW steps, float32: the fused model's loss curve follows torch's.
    The fused model alternates the default cross-entropy (even steps) and
    inplace_grad (odd steps), so both backward paths train.  (head_mode="linear"
    also works; linear_cross_entropy's gradients are checked above.)"""
    # One row block per LayerNorm launch: the interpreter's cost is per program and per loop trip.
    monkeypatch.setattr(ln, "PINNED_FWD", dict(ln.PINNED_FWD, BLOCK_M=64))
    monkeypatch.setattr(ln, "PINNED_BWD", dict(ln.PINNED_BWD, BLOCK_M=64))
    monkeypatch.setattr(ln, "INTERPRET_BWD_PROGRAMS", 1)
    V, N, steps = 65, 64, 20
    torch.manual_seed(0)
    ref = ToyLM(fused=False, V=V)
    fused = ToyLM(fused=True, V=V)
    fused.load_state_dict(ref.state_dict())  # FusedLayerNorm shares nn.LayerNorm's parameter names
    fused.to(DEVICE)
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-2) for m in (ref, fused)]
    g = torch.Generator().manual_seed(1)
    curves = ([], [])
    for step in range(steps):
        idx = torch.randint(0, V, (N,), generator=g)
        targets = (idx * 7 + 3) % V  # a learnable mapping
        targets[::9] = -1
        for model, opt, curve in zip((ref, fused), opts, curves):
            if model.fused:
                loss = model(idx.to(DEVICE), targets.to(DEVICE), "inplace" if step % 2 else "ce")
            else:
                loss = model(idx, targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
            curve.append(loss.item())
    diffs = [abs(a - b) / abs(a) for a, b in zip(*curves)]
    print(f"torch {curves[0][0]:.4f} -> {curves[0][-1]:.4f}, fused {curves[1][0]:.4f} -> "
          f"{curves[1][-1]:.4f}, max rel diff {max(diffs):.2e}")
    assert curves[0][-1] < 0.8 * curves[0][0]  # it learns
    assert max(diffs) <= 1e-4
