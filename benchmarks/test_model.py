"""Training throughput of the fast GPT vs the seed-style reference model.

CPU (always):
  group "train-step": one AdamW training step (forward, backward, update) of the
  `quijote` preset (the lecture model, 10.8M parameters, dropout 0.2) on a
  16 x 256 batch, fast model vs reference model; tokens/s in extra_info.  On
  CPUs with native bfloat16 matmuls (AVX512-BF16, AMX) also the fast step
  under bfloat16 autocast (gptfast.train --dtype bfloat16).
  group "matmul": a 2048 x 2048 float32 matmul, the machine's practical peak,
  against which the fast step's achieved GFLOP/s is put.
  GPTFAST_BENCH_SMALL=1 shrinks the batch to 4 x 64.
CUDA (skipped without a GPU):
  groups "attention-T*": causal attention forward+backward, head dim 64, bf16:
  Triton flash attention vs SDPA vs reference math; TFLOP/s in extra_info.

Ratios (fast / reference, fast / matmul peak, triton / sdpa) are printed at
the end of the module, all from this one run.

    python -m pytest benchmarks/test_model.py -q
"""
import copy
import os

import pytest
import torch

from gptfast.config import preset
from gptfast.model import GPT, reference_attention, sdpa_attention, triton_available
from gptfast.reference.model import GPTLanguageModel
from gptfast.training.optim import make_optimizer
from gptfast.training.runtime import cpu_has_native_bf16
from gptfast.weights_mapping import reference_to_fast

from .conftest import timings_missing

SMALL = os.environ.get("GPTFAST_BENCH_SMALL", "") not in ("", "0")
BATCH, SEQ = (4, 64) if SMALL else (16, 256)
MATMUL_N = 1024 if SMALL else 2048


@pytest.fixture(scope="module")
def results(request):
    """Numbers gathered by the tests of this module; their ratios are printed at teardown."""
    collected = {"load": os.getloadavg()[0]} if hasattr(os, "getloadavg") else {}
    yield collected
    lines = _ratio_lines(collected)
    if lines:
        capture = request.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():  # print even without -s
            print("\n" + "\n".join(lines))


def _ratio_lines(r):
    lines = []
    if "load" in r:  # other work on a shared CPU distorts timings (OpenMP threads spin-wait)
        lines.append(f"load average at start: {r['load']:.2f} on {os.cpu_count()} CPUs "
                     f"(torch threads {torch.get_num_threads()})")
    if "train-fast" in r and "train-reference" in r:
        fast, ref = r["train-fast"], r["train-reference"]
        lines.append(f"train-step fast      : {fast['tokens_per_s']:,.0f} tokens/s, {fast['gflops']:.1f} GFLOP/s")
        lines.append(f"train-step reference : {ref['tokens_per_s']:,.0f} tokens/s, {ref['gflops']:.1f} GFLOP/s")
        lines.append(f"fast / reference speedup: median {ref['median_s'] / fast['median_s']:.2f}x, "
                     f"min {ref['min_s'] / fast['min_s']:.2f}x")
        if "train-fast-bf16" in r:
            bf = r["train-fast-bf16"]
            lines.append(f"train-step fast, bf16 autocast: {bf['tokens_per_s']:,.0f} tokens/s, "
                         f"{fast['median_s'] / bf['median_s']:.2f}x the float32 step")
        if "matmul" in r:
            peak = r["matmul"]["gflops"]
            lines.append(f"matmul {MATMUL_N}^2 float32: {peak:.1f} GFLOP/s; fast step achieves "
                         f"{fast['gflops'] / peak:.0%} of it, reference {ref['gflops'] / peak:.0%}")
    for T in sorted({k[1] for k in r if isinstance(k, tuple)}):
        per = {k[2]: v for k, v in r.items() if isinstance(k, tuple) and k[1] == T}
        text = ", ".join(f"{name} {v:.1f} TFLOP/s" for name, v in per.items())
        if "triton" in per and "sdpa" in per:
            text += f"; triton / sdpa {per['triton'] / per['sdpa']:.2f}x"
        lines.append(f"attention T={T}: {text}")
    return lines


# -- CPU training step -------------------------------------------------------------


def train_step_flops(config, tokens: int) -> float:
    """Matmul FLOPs of one training step (forward + backward = 3x forward).

    6 * N * tokens for the weights that multiply activations (every parameter
    except the embedding tables, which are lookups), plus attention's two
    (T x T) matmuls per head, 12 * n_layer * inner_dim * T * tokens, counted
    over the full square as the reference computes it (PaLM's estimate)."""
    C, L, T = config.n_embd, config.n_layer, SEQ
    n = config.num_params() - config.vocab_size * C - (config.block_size * C if config.pos_embedding == "learned" else 0)
    if config.tie_weights:
        n += config.vocab_size * C  # lm_head still multiplies
    return 6 * n * tokens + 12 * L * config.inner_dim * T * tokens


@pytest.fixture(scope="module")
def quijote():
    config = preset("quijote")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, config.vocab_size, (BATCH, SEQ), generator=g)
    y = torch.randint(0, config.vocab_size, (BATCH, SEQ), generator=g)
    torch.manual_seed(0)
    ref = GPTLanguageModel(config)
    fast = GPT(config)  # "auto": SDPA on the CPU
    fast.load_state_dict(reference_to_fast(ref.state_dict()))
    return config, ref, fast, x, y


def _bench_train_step(benchmark, results, key, config, model, x, y, opt, autocast=None):
    model.train()

    def step():
        with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
            _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    benchmark.group = "train-step"
    benchmark.pedantic(step, rounds=7, iterations=1, warmup_rounds=2)
    if timings_missing(benchmark):
        return
    median = benchmark.stats.stats.median
    tokens = x.numel()
    info = {"tokens_per_s": tokens / median, "gflops": train_step_flops(config, tokens) / median / 1e9,
            "median_s": median, "min_s": benchmark.stats.stats.min, "batch": list(x.shape), "threads": torch.get_num_threads()}
    benchmark.extra_info.update(info)
    results[key] = info


def test_train_step_fast(benchmark, results, quijote):
    config, _, fast, x, y = quijote
    # gptfast.train's optimizer (fused AdamW, decay on matrices only) vs the seed's plain AdamW.
    opt = make_optimizer(fast, lr=3e-4, weight_decay=0.1, betas=(0.9, 0.99), device_type="cpu")
    _bench_train_step(benchmark, results, "train-fast", config, fast, x, y, opt)


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no bfloat16 matmul in hardware (AMX or AVX512-BF16)")
def test_train_step_fast_bf16_autocast(benchmark, results, quijote):
    """The same step under CPU autocast to bfloat16 (gptfast.train --dtype bfloat16)."""
    config, _, fast, x, y = quijote
    model = copy.deepcopy(fast)
    opt = make_optimizer(model, lr=3e-4, weight_decay=0.1, betas=(0.9, 0.99), device_type="cpu")
    _bench_train_step(benchmark, results, "train-fast-bf16", config, model, x, y, opt, autocast=torch.bfloat16)


def test_train_step_reference(benchmark, results, quijote):
    config, ref, _, x, y = quijote
    _bench_train_step(benchmark, results, "train-reference", config, ref, x, y, torch.optim.AdamW(ref.parameters(), lr=3e-4))
    if "train-fast" in results:
        benchmark.extra_info["fast_speedup"] = results["train-reference"]["median_s"] / results["train-fast"]["median_s"]


def test_matmul_peak(benchmark, results):
    a = torch.randn(MATMUL_N, MATMUL_N)
    b = torch.randn(MATMUL_N, MATMUL_N)
    benchmark.group = "matmul"
    benchmark.pedantic(torch.mm, args=(a, b), rounds=5, iterations=1, warmup_rounds=1)
    if timings_missing(benchmark):
        return
    gflops = 2 * MATMUL_N ** 3 / benchmark.stats.stats.median / 1e9
    benchmark.extra_info["gflops"] = gflops
    results["matmul"] = {"gflops": gflops}


# -- CUDA attention -------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["triton", "sdpa", "reference"])
@pytest.mark.parametrize("T", [256, 528, 1024, 2048])
def test_attention_fwd_bwd_cuda(benchmark, results, T, backend):
    if backend == "triton" and not triton_available():
        pytest.skip("gptfast.kernels.flash_attention is not importable")
    B, H, D = 8, 8, 64
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
               for _ in range(3))
    do = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, generator=g)
    if backend == "triton":
        from gptfast.kernels.flash_attention import flash_attention as attend
    else:
        attend = {"sdpa": sdpa_attention, "reference": reference_attention}[backend]

    def fwd_bwd():
        out = attend(q, k, v)                                   # (B, H, T, D)
        torch.autograd.grad(out, (q, k, v), do)
        torch.cuda.synchronize()

    benchmark.group = f"attention-T{T}"
    benchmark.pedantic(fwd_bwd, rounds=10, iterations=1, warmup_rounds=3)
    if timings_missing(benchmark):
        return
    # Causal: half of the 4*B*H*T*T*D forward matmul FLOPs; backward = 2.5x forward.
    flops = 3.5 * 2 * B * H * T * T * D
    tflops = flops / benchmark.stats.stats.median / 1e12
    benchmark.extra_info.update({"tflops": tflops, "shape": [B, H, T, D], "dtype": "bfloat16"})
    results[("attention", T, backend)] = tflops
