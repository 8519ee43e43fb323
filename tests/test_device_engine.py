"""The CUDA generation engine (gptfast.device_engine) and its on-device
sampler, checked on the CPU against the C++ engine and the Python sampler;
the Triton decode path runs under the interpreter, and on CUDA when present."""
from __future__ import annotations

import random

import pytest
import torch

from gptfast.config import GPTConfig
from gptfast.device_engine import DeviceEngine
from gptfast.device_sampling import sample_tensor, uniform_tensor
from gptfast.engine import CppEngine, load_engine
from gptfast.model import GPT, triton_available
from gptfast.sampling import SamplingParams, sample_from_logits, uniform
from generate_helpers import needs_cpp_engine
from train_helpers import one_thread  # noqa: F401 (autouse fixture)

PROMPTS = [[1, 2, 3], [4, 5, 6], [7, 8], [9] * 20]   # two share a length; the last is longer than the block
PARAMS = [SamplingParams(temperature=0), SamplingParams(temperature=1.0, top_k=10),
          SamplingParams(temperature=0.8, top_p=0.9, repetition_penalty=1.2, banned_ids=(0, 4))]


def as_int64(u: int) -> int:
    return u - (1 << 64) if u >= 1 << 63 else u


def test_uniform_tensor_is_the_python_uniform():
    rng = random.Random(0)
    seqs = [rng.getrandbits(64) for _ in range(64)] + [0, 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]
    for seed in (0, 1, (1 << 64) - 1, 987654321):
        for step in (0, 1, 255, 1 << 40):
            got = uniform_tensor(seed, torch.tensor([as_int64(s) for s in seqs]), step).tolist()
            assert got == [uniform(seed, s, step) for s in seqs]


def test_sample_tensor_picks_what_the_python_sampler_picks():
    g = torch.Generator().manual_seed(0)
    rng = random.Random(1)
    history = list(range(10))
    for trial in range(200):
        logits = torch.randn(4, 50, generator=g) * 3                            # (B, V)
        params = SamplingParams(temperature=rng.choice([0, 0.7, 1.3]), top_k=rng.choice([0, 5, 20]),
                                top_p=rng.choice([1.0, 0.9, 0.5]), repetition_penalty=rng.choice([1.0, 1.3]),
                                banned_ids=(3, 7))
        seen = torch.zeros(4, 50, dtype=torch.bool)
        seen[:, history] = True
        got = sample_tensor(logits, params, 5, torch.arange(4), trial, seen, torch.tensor([3, 7])).tolist()
        want = [sample_from_logits(logits[b].tolist(), params, 5, b, trial, history=history) for b in range(4)]
        assert got == want, (trial, params)


def small_model(attention="sdpa"):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=2, n_head=2, n_embd=32, attention=attention)).eval()


@needs_cpp_engine
@pytest.mark.parametrize("whole_cache", [False, True], ids=["slots-in-use", "whole-cache"])
@pytest.mark.parametrize("params", PARAMS, ids=["greedy", "top-k", "top-p-penalty-bans"])
def test_device_engine_equals_the_cpp_engine(params, whole_cache):
    """Across window slides, stop ids, mixed prompt lengths and sync intervals."""
    model = small_model()
    model.read_whole_cache = whole_cache   # True: the sync-free path CUDA takes
    cpp = CppEngine.from_model(model, threads=1).generate(PROMPTS, 40, params, seed=3, stop_ids=[5])
    for every in (1, 7, 64):
        dev = DeviceEngine(model).generate(PROMPTS, 40, params, seed=3, stop_ids=[5], callback_every=every)
        assert [(g.tokens, g.finish_reason) for g in dev] == [(g.tokens, g.finish_reason) for g in cpp]


@needs_cpp_engine
def test_device_engine_streams_and_stops_like_the_cpp_engine():
    model = small_model()
    params = SamplingParams(temperature=1.0)
    decode = lambda ids: "".join(chr(97 + i % 26) for i in ids)  # noqa: E731
    seen = {"cpp": [], "dev": []}

    def collect(name):
        def cb(fresh):
            seen[name].append([list(f) for f in fresh])
            return [1] if sum(len(f) for f in fresh) and len(seen[name]) == 3 else None
        return cb

    args = dict(seed=9, stop_strings=["ab"], decode=decode, seq_ids=[5, 6])
    cpp = CppEngine.from_model(model, threads=1).generate([[1, 2], [3, 4]], 30, params, callback=collect("cpp"), **args)
    dev = DeviceEngine(model).generate([[1, 2], [3, 4]], 30, params, callback=collect("dev"), callback_every=1,
                                       **args)
    assert [(g.tokens, g.finish_reason, g.text) for g in dev] == [(g.tokens, g.finish_reason, g.text) for g in cpp]
    assert seen["dev"] == seen["cpp"]


@needs_cpp_engine
@pytest.mark.skipif(not triton_available(), reason="Triton is not installed")
def test_triton_decode_path_equals_the_cpp_engine():
    """The model on the triton backend reading the whole cache (the CUDA
    configuration), under the interpreter on the CPU."""
    model = small_model("triton")
    model.read_whole_cache = True
    want = CppEngine.from_model(model, threads=1).generate(PROMPTS[:3], 20, PARAMS[0])
    got = DeviceEngine(model).generate(PROMPTS[:3], 20, PARAMS[0], callback_every=5)
    assert [g.tokens for g in got] == [g.tokens for g in want]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_cuda_engine_greedy_equals_the_cpu(compile):
    model = small_model()
    want = load_engine(model).generate(PROMPTS, 40, PARAMS[0])
    cuda = small_model("auto").to("cuda")
    got = DeviceEngine(cuda, compile=compile).generate(PROMPTS, 40, PARAMS[0])
    assert [g.tokens for g in got] == [g.tokens for g in want]
