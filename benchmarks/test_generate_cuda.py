"""Decoding throughput on CUDA: the device engine vs the PyTorch loops.

    pytest benchmarks/test_generate_cuda.py          # skipped without CUDA

Model: the `quijote` preset dims with random weights in bfloat16 (float32 on
GPUs without bf16), 256 new tokens after a 1-token prompt, temperature 1.0.

  CUDA engine        gptfast.device_engine.DeviceEngine: static KV cache,
                     Triton decode attention, sampling on the GPU, host sync
                     every 16 tokens; eager and torch.compile(reduce-overhead);
                     batch 1 and batch 8 (aggregate tokens/s).
  torch KV loop      gptfast.reference.generate.kv_generate on the GPU: the same
                     cache, but logits copied to the host and sampled in Python
                     every token (a sync per token).
  naive loop         the seeds' loop on the GPU (full forward per token), 64 tokens.
Time to first token for a 256-token prompt, engine vs KV loop.
"""
from __future__ import annotations

import pytest
import torch

from gptfast.config import preset
from gptfast.device_engine import DeviceEngine
from gptfast.model import GPT
from gptfast.reference.generate import kv_generate, naive_generate
from gptfast.sampling import SamplingParams

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

NEW_TOKENS, NAIVE_TOKENS = 256, 64
PARAMS = SamplingParams(temperature=1.0)
ROUNDS = dict(rounds=5, iterations=1, warmup_rounds=1)

PERF_REPORT = [
    ("CUDA engine / torch KV loop (host sampling)", "CUDA engine", "CUDA torch KV loop", None),
    ("CUDA engine compiled / eager", "CUDA engine compiled", "CUDA engine", None),
    ("CUDA engine / naive loop", "CUDA engine", "CUDA naive loop", None),
    ("CUDA engine batch 8 / batch 1 (aggregate)", "CUDA engine batch 8", "CUDA engine", None),
    ("time to first token: KV loop / engine", "CUDA TTFT KV loop", "CUDA TTFT engine", None),
]


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return GPT(preset("quijote", dropout=0.0)).to("cuda", dtype).eval()


def timed(fn):
    def run():
        out = fn()
        torch.cuda.synchronize()
        return out
    return run


@pytest.mark.parametrize("compile,batch,label", [(False, 1, "CUDA engine"), (True, 1, "CUDA engine compiled"),
                                                 (False, 8, "CUDA engine batch 8")])
def test_cuda_engine(benchmark, perf, model, compile, batch, label):
    engine = DeviceEngine(model, compile=compile)
    run = timed(lambda: engine.generate([[1]] * batch, NEW_TOKENS, PARAMS, seed=0))
    out = benchmark.pedantic(run, **ROUNDS)
    assert sum(len(g.tokens) for g in out) == NEW_TOKENS * batch
    perf.rate(label, NEW_TOKENS * batch, benchmark, unit="tokens/s")


def test_cuda_torch_kv_loop(benchmark, perf, model):
    out = benchmark.pedantic(timed(lambda: kv_generate(model, [1], NEW_TOKENS, PARAMS)), **ROUNDS)
    assert len(out) == NEW_TOKENS
    perf.rate("CUDA torch KV loop", NEW_TOKENS, benchmark, unit="tokens/s")


def test_cuda_naive_loop(benchmark, perf, model):
    out = benchmark.pedantic(timed(lambda: naive_generate(model, [1] * 112, NAIVE_TOKENS, PARAMS)), **ROUNDS)
    assert len(out) == NAIVE_TOKENS
    perf.rate("CUDA naive loop", NAIVE_TOKENS, benchmark, unit="tokens/s")


@pytest.mark.parametrize("label", ["CUDA TTFT engine", "CUDA TTFT KV loop"])
def test_cuda_time_to_first_token(benchmark, perf, model, label):
    prompt = [int(t) for t in torch.randint(0, model.config.vocab_size, (256,), generator=torch.Generator())]
    if label == "CUDA TTFT engine":
        engine = DeviceEngine(model)
        fn = timed(lambda: engine.generate([prompt], 1, PARAMS))
    else:
        fn = timed(lambda: kv_generate(model, prompt, 1, PARAMS))
    benchmark.pedantic(fn, **ROUNDS)
    if not getattr(benchmark, "disabled", False):
        perf.record(label, benchmark.stats.stats.median * 1e3, "ms")
