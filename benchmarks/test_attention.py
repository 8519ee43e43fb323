"""Attention benchmarks (CUDA only; skipped cleanly without a GPU).

    pytest benchmarks/test_attention.py --benchmark-only

1. Training attention, forward + backward, causal, bf16, D = 64, B*H*T*D ~ 16M
   elements: the Triton kernel vs torch SDPA (is_causal=True, default backend)
   vs the eager masked-softmax math in bf16 (the readable reference's math;
   the float64 reference itself would only measure fp64 throughput).
2. Decoding, Tq = 1 over a bf16 KV cache of 256..4096 valid positions: the
   split-K Triton kernel vs SDPA on the cache prefix.

pytest-benchmark times the Triton kernel; the peers are timed in the same test
with triton.testing.do_bench and reported as ratios in extra_info (DESIGN.md:
ratios measured in one run, never a bare absolute time).  TFLOP/s counts the
causal FLOPs (half the T x T square) for every implementation, with the usual
backward = 2.5 x forward.  Autotuning is on (GPTFAST_AUTOTUNE=1), unlike the
pinned configs of the test suite.
"""
import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("attention benchmarks need a CUDA GPU", allow_module_level=True)

from triton.testing import do_bench  # noqa: E402

from gptfast.kernels.decode_attention import decode_attention  # noqa: E402
from gptfast.kernels.flash_attention import attention_math, flash_attention  # noqa: E402

D, H = 64, 8
TARGET_ELEMENTS = 16 * 2**20  # B * H * T * D per q / k / v tensor
DTYPE = torch.bfloat16


@pytest.fixture(autouse=True)
def _autotune(monkeypatch):
    monkeypatch.setenv("GPTFAST_AUTOTUNE", "1")


def _sync(fn):
    def run():
        fn()
        torch.cuda.synchronize()
    return run


def _fwd_bwd(attn, q, k, v, do):
    def run():
        for x in (q, k, v):
            x.grad = None
        attn(q, k, v).backward(do)
    return run


def _sdpa(q, k, v):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)


@pytest.mark.parametrize("T", [256, 528, 1024, 2048])
def test_flash_attention_fwd_bwd(benchmark, T):
    B = max(1, TARGET_ELEMENTS // (H * T * D))
    torch.manual_seed(0)
    # (B, T, H, D) storage viewed as (B, H, T, D): the layout a GPT block produces.
    q, k, v = [torch.randn(B, T, H, D, device="cuda", dtype=DTYPE).transpose(1, 2).detach().requires_grad_()
               for _ in range(3)]
    do = torch.randn(B, H, T, D, device="cuda", dtype=DTYPE)
    flops = 3.5 * 2 * 2.0 * B * H * T * T * D * 0.5  # (fwd + 2.5 fwd) x 2 matmuls x 2 flop/MAC, causal half

    triton_run = _fwd_bwd(flash_attention, q, k, v, do)
    triton_run()  # autotune outside the timed region
    ms = {
        "triton": do_bench(triton_run, return_mode="median"),
        "sdpa": do_bench(_fwd_bwd(_sdpa, q, k, v, do), return_mode="median"),
        "eager": do_bench(_fwd_bwd(attention_math, q, k, v, do), return_mode="median"),
    }
    benchmark.extra_info.update({
        "shape": f"B={B} H={H} T={T} D={D} {DTYPE}",
        **{f"{name}_ms": round(t, 4) for name, t in ms.items()},
        **{f"{name}_tflops": round(flops / (t * 1e-3) / 1e12, 2) for name, t in ms.items()},
        "speedup_vs_sdpa": round(ms["sdpa"] / ms["triton"], 3),
        "speedup_vs_eager": round(ms["eager"] / ms["triton"], 3),
    })
    benchmark.pedantic(_sync(triton_run), rounds=20, warmup_rounds=2)


@pytest.mark.parametrize("cache_len", [256, 512, 1024, 2048, 4096])
def test_decode_attention(benchmark, cache_len):
    B, L_max = 8, 4096
    torch.manual_seed(0)
    q = torch.randn(B, H, 1, D, device="cuda", dtype=DTYPE)
    # Preallocated cache in (B, L_max, H, D) storage, viewed as (B, H, L_max, D).
    k = torch.randn(B, L_max, H, D, device="cuda", dtype=DTYPE).transpose(1, 2)
    v = torch.randn(B, L_max, H, D, device="cuda", dtype=DTYPE).transpose(1, 2)
    kv_bytes = 2 * B * H * cache_len * D * k.element_size()

    def triton_run():
        decode_attention(q, k, v, cache_len)

    def sdpa_run():  # Tq = 1: the query sees the whole valid prefix, no mask needed
        torch.nn.functional.scaled_dot_product_attention(q, k[:, :, :cache_len], v[:, :, :cache_len])

    triton_run()  # autotune outside the timed region
    ms = {"triton": do_bench(triton_run, return_mode="median"), "sdpa": do_bench(sdpa_run, return_mode="median")}
    benchmark.extra_info.update({
        "shape": f"B={B} H={H} D={D} cache_len={cache_len} L_max={L_max} {DTYPE}",
        **{f"{name}_us": round(t * 1e3, 2) for name, t in ms.items()},
        **{f"{name}_GBps": round(kv_bytes / (t * 1e-3) / 1e9, 1) for name, t in ms.items()},
        "speedup_vs_sdpa": round(ms["sdpa"] / ms["triton"], 3),
    })
    benchmark.pedantic(_sync(triton_run), rounds=50, warmup_rounds=5)
