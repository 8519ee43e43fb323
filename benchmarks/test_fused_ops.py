"""Fused LayerNorm and cross-entropy benchmarks (CUDA only; skipped cleanly without a GPU).

    pytest benchmarks/test_fused_ops.py --benchmark-only

1. LayerNorm forward + backward, bf16, 16 * 256 rows of width C in {384, 768}
   (the quijote preset and GPT-2 small), plain and with the fused residual
   add: the Triton kernel vs torch (F.layer_norm, and ``h = x + r;
   F.layer_norm(h)`` for the residual case).
2. Cross-entropy forward + backward over bf16 logits (16 * 256, V) for V in
   {92, 10000, 50257}: the kernel (default and inplace_grad) vs
   F.cross_entropy on the bf16 logits and on logits.float() (what autocast
   runs).  Each run first produces the logits with ``leaf * 1`` (one
   elementwise pass, the same for every implementation; its own time is
   reported as ``producer_ms``), because inplace_grad destroys its input.
3. The lm-head + loss, x (4096, 768) @ W (V, 768)^T, V = 50257, bf16:
   linear_cross_entropy vs matmul + F.cross_entropy.

pytest-benchmark times the Triton path; the peers are timed in the same test
with triton.testing.do_bench and reported as ratios in extra_info (DESIGN.md:
ratios measured in one run, never a bare absolute time), with the peak memory
each one allocates above what was live before it (torch.cuda.max_memory_allocated).
Autotuning is on (GPTFAST_AUTOTUNE=1), unlike the pinned configs of the test suite.
"""
import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("fused-op benchmarks need a CUDA GPU", allow_module_level=True)

import torch.nn.functional as F  # noqa: E402
from triton.testing import do_bench  # noqa: E402

from gptfast.kernels.cross_entropy import cross_entropy, linear_cross_entropy  # noqa: E402
from gptfast.kernels.layer_norm import layer_norm  # noqa: E402

ROWS = 16 * 256  # batch 16 x context 256
DTYPE = torch.bfloat16


@pytest.fixture(autouse=True)
def _autotune(monkeypatch):
    monkeypatch.setenv("GPTFAST_AUTOTUNE", "1")


def _sync(fn):
    def run():
        fn()
        torch.cuda.synchronize()
    return run


def _peak_mib(fn) -> float:
    """MiB allocated at the peak of one run of fn above what was live before it."""
    fn()  # warm (autotune, caches)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)


def _measure(runs: dict) -> dict:
    """name -> fn  ==>  extra_info entries: ms, peak MiB, speedups of 'triton' over each peer."""
    ms = {name: do_bench(fn, return_mode="median") for name, fn in runs.items()}
    info = {f"{name}_ms": round(t, 4) for name, t in ms.items()}
    info.update({f"{name}_peak_MiB": _peak_mib(fn) for name, fn in runs.items()})
    for name, t in ms.items():
        if name != "triton":
            info[f"speedup_vs_{name}"] = round(t / ms["triton"], 3)
    return info


def _clear(*tensors):
    for t in tensors:
        t.grad = None


# ----------------------------------------------------------------------------
# LayerNorm
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("C", [384, 768])
def test_layer_norm_fwd_bwd(benchmark, C, residual):
    torch.manual_seed(0)
    x = torch.randn(ROWS, C, device="cuda", dtype=DTYPE, requires_grad=True)
    r = torch.randn(ROWS, C, device="cuda", dtype=DTYPE, requires_grad=True) if residual else None
    w = torch.randn(C, device="cuda", dtype=DTYPE, requires_grad=True)
    b = torch.randn(C, device="cuda", dtype=DTYPE, requires_grad=True)
    dy = torch.randn(ROWS, C, device="cuda", dtype=DTYPE)
    leaves = [t for t in (x, r, w, b) if t is not None]

    def triton_run():
        _clear(*leaves)
        if residual:
            y, h = layer_norm(x, w, b, residual=r)
            torch.autograd.backward((y, h), (dy, dy))
        else:
            layer_norm(x, w, b).backward(dy)

    def torch_run():
        _clear(*leaves)
        if residual:
            h = x + r
            y = F.layer_norm(h, (C,), w, b)
            torch.autograd.backward((y, h), (dy, dy))
        else:
            F.layer_norm(x, (C,), w, b).backward(dy)

    triton_run()  # autotune outside the timed region
    info = _measure({"triton": triton_run, "torch": torch_run})
    # Minimum traffic of fwd + bwd: read x (+ r), write y (+ h); read h, dy (+ dh), write dx (+ dr).
    n_io = (7 if residual else 4) * ROWS * C * x.element_size()
    info.update({f"{name}_GBps": round(n_io / (info[f"{name}_ms"] * 1e-3) / 1e9, 1) for name in ("triton", "torch")})
    benchmark.extra_info.update({"shape": f"rows={ROWS} C={C} residual={residual} {DTYPE}", **info})
    benchmark.pedantic(_sync(triton_run), rounds=50, warmup_rounds=5)


# ----------------------------------------------------------------------------
# Cross-entropy
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("V", [92, 10000, 50257])
def test_cross_entropy_fwd_bwd(benchmark, V):
    torch.manual_seed(0)
    leaf = torch.randn(ROWS, V, device="cuda", dtype=DTYPE, requires_grad=True)
    targets = torch.randint(0, V, (ROWS,), device="cuda")
    targets[::17] = -1  # some ignored rows, as padding would give

    def make(fn):
        def run():
            _clear(leaf)
            fn(leaf * 1).backward()  # `leaf * 1`: the logits' producer, the same for everyone
        return run

    runs = {
        "triton": make(lambda z: cross_entropy(z, targets)),
        "triton_inplace": make(lambda z: cross_entropy(z, targets, inplace_grad=True)),
        "torch": make(lambda z: F.cross_entropy(z, targets, ignore_index=-1)),
        "torch_fp32": make(lambda z: F.cross_entropy(z.float(), targets, ignore_index=-1)),
    }
    runs["triton"]()  # autotune outside the timed region
    runs["triton_inplace"]()
    info = _measure(runs)

    def producer():
        _clear(leaf)
        (leaf * 1).sum()
    info["producer_ms"] = round(do_bench(producer, return_mode="median"), 4)
    benchmark.extra_info.update({"shape": f"N={ROWS} V={V} {DTYPE}", **info})
    benchmark.pedantic(_sync(runs["triton"]), rounds=20, warmup_rounds=2)


def test_linear_cross_entropy_lm_head(benchmark):
    V, D = 50257, 768
    torch.manual_seed(0)
    x = torch.randn(ROWS, D, device="cuda", dtype=DTYPE, requires_grad=True)
    w = (torch.randn(V, D, device="cuda", dtype=DTYPE) / D ** 0.5).requires_grad_()
    targets = torch.randint(0, V, (ROWS,), device="cuda")

    def triton_run():
        _clear(x, w)
        linear_cross_entropy(x, w, targets).backward()

    def torch_run():
        _clear(x, w)
        F.cross_entropy(x @ w.t(), targets, ignore_index=-1).backward()

    def torch_fp32_run():
        _clear(x, w)
        F.cross_entropy((x @ w.t()).float(), targets, ignore_index=-1).backward()

    triton_run()
    info = _measure({"triton": triton_run, "torch": torch_run, "torch_fp32": torch_fp32_run})
    benchmark.extra_info.update({"shape": f"N={ROWS} D={D} V={V} {DTYPE}", **info})
    benchmark.pedantic(_sync(triton_run), rounds=10, warmup_rounds=2)
