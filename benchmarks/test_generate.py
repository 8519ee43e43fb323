"""Decoding throughput: the C++ engine vs the PyTorch loops it replaces.

    pytest benchmarks/test_generate.py                       # measure, print ratios
    pytest benchmarks/test_generate.py --benchmark-disable   # smoke: each runs once

Model: the `quijote` preset dims (n_embd 384, 6 heads, 6 layers, block 256,
vocab 92, 10.8M parameters) with random weights.  Every run decodes 256 new
tokens after a 1-token prompt (so the window never slides) with temperature
1.0 sampling; tokens/s are per second of the median round.

  C++ engine     2 threads: float32, float16, bfloat16 (the KV cache in the
                 same type); batch 1 and batch 8 (aggregate tokens/s); float32
                 weights with a float16 cache at batch 8; float32 on 1 thread
                 for the scaling.
  torch KV loop  gptfast.reference.generate.kv_generate (the fast model's KV
                 cache, one forward per token, Python sampler), 2 threads, and
                 1 thread (often faster on a shared machine).
  naive loop     the seeds' loop (reference per-head model, full forward of
                 the context per token).  It is slow, so it decodes 32 tokens
                 after a 112-token prompt: contexts 112..143, whose mean (~128)
                 is the mean context of the 256-token runs it is compared to.
Also: weight traffic per token (bytes of every matrix read once per step) in
GB/s, against a 256 MB numpy copy (read + write) measured in the same run;
all the memory a step reads (weights, and the keys and values attention reads
from the cache) in GB/s at batch 1 and 8, against a 256 MB read by torch.sum
on the same threads (the floor a decoding step can reach when nothing stays
in the cache); and
the time to first token for a 256-token prompt (prefill + one sample); 8
samples of a 192-token prompt (one shared prefill, 64 new tokens each)
against 1; and
the `chat` preset with a 20k-word vocabulary, sampled vs greedy (the cost of
choosing among 20k tokens); and the text side of streaming, 2,000 words
through a TextStream with the tokenizer's stream decoder vs decoding the
whole text again for every word (as streaming did before).  The
C++ runs' extra_info also splits a decoding step: ms in the linear layers,
attention, the rest of the forward, sampling and the (Ctrl-C checking) callback.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from gptfast import _backend
from gptfast.config import preset
from gptfast.engine import CppEngine
from gptfast.model import GPT
from gptfast.reference.generate import kv_generate, naive_generate
from gptfast.reference.model import GPTLanguageModel
from gptfast.sampling import SamplingParams
from gptfast.weights_mapping import fast_to_reference

NEW_TOKENS = 256
NAIVE_PROMPT, NAIVE_TOKENS = 112, 32
THREADS = 2
PARAMS = SamplingParams(temperature=1.0)
FAST = dict(rounds=7, iterations=1, warmup_rounds=1)
SLOW = dict(rounds=3, iterations=1)

PERF_REPORT = [
    ("C++ fp32 / naive loop", "C++ fp32", "naive loop", 25.0),
    ("C++ fp32 / torch KV loop", "C++ fp32", "torch KV loop", 5.0),
    ("C++ fp32 / torch KV loop 1 thread", "C++ fp32", "torch KV loop 1 thread", None),
    ("C++ fp16 / C++ fp32", "C++ fp16", "C++ fp32", 1.6),
    ("C++ bf16 / C++ fp32", "C++ bf16", "C++ fp32", 1.6),
    ("C++ fp32 batch 8 / batch 1 (aggregate)", "C++ fp32 batch 8", "C++ fp32", 4.0),
    ("C++ fp16 batch 8 / batch 1 (aggregate)", "C++ fp16 batch 8", "C++ fp16", 4.0),
    ("C++ fp32 batch 8: fp16 cache / fp32 cache", "C++ fp32 batch 8, fp16 cache", "C++ fp32 batch 8", None),
    ("C++ fp32 8 samples / 1 sample of a 192-token prompt (aggregate)", "C++ fp32 8 samples of a 192-token prompt",
     "C++ fp32 192-token prompt", None),
    ("C++ fp32 2 threads / 1 thread", "C++ fp32", "C++ fp32 1 thread", None),
    ("C++ fp32 weight GB/s / numpy copy GB/s", "C++ fp32 weights", "numpy copy 256 MB", None),
    ("C++ fp16 weight GB/s / numpy copy GB/s", "C++ fp16 weights", "numpy copy 256 MB", None),
    ("C++ fp32 memory read GB/s / torch.sum read GB/s", "C++ fp32 memory read", "torch.sum read 256 MB", None),
    ("C++ fp32 batch 8 memory read GB/s / torch.sum read GB/s", "C++ fp32 batch 8 memory read",
     "torch.sum read 256 MB", None),
    ("time to first token: torch prefill / C++ fp32", "TTFT torch prefill", "TTFT C++ fp32", None),
    ("word level (20k vocab): temperature 1.0 / greedy", "C++ fp32 word temperature 1.0", "C++ fp32 word greedy", None),
    ("streaming 2,000 words: stream decoder / decoding all again", "stream 2,000 words, stream decoder",
     "stream 2,000 words, decoding all again", None),
]


@contextlib.contextmanager
def torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model() -> GPT:
    if _backend._C is None:
        pytest.fail(f"gptfast._C is not built ({_backend._IMPORT_ERROR})")
    torch.manual_seed(0)
    return GPT(preset("quijote", dropout=0.0), backend="sdpa").eval()


@pytest.fixture(scope="module")
def engines(model):
    return {dtype: CppEngine.from_model(model, dtype=dtype, threads=THREADS)
            for dtype in ("float32", "float16", "bfloat16")}


def run_cpp(engine: CppEngine, batch: int) -> int:
    out = engine.generate([[1]] * batch, NEW_TOKENS, PARAMS, seed=0)
    return sum(len(g.tokens) for g in out)


def bytes_read(engine: CppEngine, batch: int) -> int:
    """What run_cpp reads from memory: every matrix once per step, and at the
    step whose context is T positions, T keys and T values per layer and
    sequence (T = 1..NEW_TOKENS after the 1-token prompt)."""
    c = engine.config
    kv_bytes = torch.empty(0, dtype=getattr(torch, engine.kv_dtype)).element_size()
    cache = batch * c.n_layer * 2 * c.n_embd * kv_bytes * NEW_TOKENS * (NEW_TOKENS + 1) // 2
    return engine.weight_bytes_per_step * NEW_TOKENS + cache


def step_breakdown(engine: CppEngine, benchmark) -> None:
    """Where a decoding step's time went in the last round (ms per step), and
    which kernels the extension was built with (avx512, avx2 or portable)."""
    benchmark.extra_info["kernels"] = _backend._C.simd_kernels()
    for part in ("linear", "attention", "other_forward", "sampling", "callback"):
        benchmark.extra_info[f"{part} ms/step"] = round(engine.last_stats[f"{part}_s"] / NEW_TOKENS * 1e3, 4)


@pytest.mark.parametrize("dtype,label", [("float32", "C++ fp32"), ("float16", "C++ fp16"), ("bfloat16", "C++ bf16")])
def test_cpp_batch1(benchmark, perf, engines, dtype, label):
    engine = engines[dtype]
    n = benchmark.pedantic(run_cpp, args=(engine, 1), **FAST)
    assert n == NEW_TOKENS
    step_breakdown(engine, benchmark)
    if perf.rate(label, NEW_TOKENS, benchmark, unit="tokens/s") is not None:
        perf.rate(label + " weights", engine.weight_bytes_per_step * NEW_TOKENS / 1e9, benchmark, unit="GB/s")
        perf.rate(label + " memory read", bytes_read(engine, 1) / 1e9, benchmark, unit="GB/s")


@pytest.mark.parametrize("dtype,label", [("float32", "C++ fp32 batch 8"), ("float16", "C++ fp16 batch 8")])
def test_cpp_batch8(benchmark, perf, engines, dtype, label):
    n = benchmark.pedantic(run_cpp, args=(engines[dtype], 8), **SLOW)
    assert n == 8 * NEW_TOKENS
    step_breakdown(engines[dtype], benchmark)
    if perf.rate(label, 8 * NEW_TOKENS, benchmark, unit="tokens/s") is not None:
        perf.rate(label + " memory read", bytes_read(engines[dtype], 8) / 1e9, benchmark, unit="GB/s")


def test_cpp_batch8_16bit_cache(benchmark, perf, model):
    """float32 weights with keys and values cached in float16: at batch 8
    attention reads 8 caches per step, as many bytes as the weights by the
    end of the block."""
    engine = CppEngine.from_model(model, threads=THREADS, kv_dtype="float16")
    assert benchmark.pedantic(run_cpp, args=(engine, 8), **SLOW) == 8 * NEW_TOKENS
    step_breakdown(engine, benchmark)
    perf.rate("C++ fp32 batch 8, fp16 cache", 8 * NEW_TOKENS, benchmark, unit="tokens/s")


@pytest.mark.parametrize("label,params", [("greedy", SamplingParams(temperature=0.0)), ("temperature 1.0", PARAMS)])
def test_cpp_word_level(benchmark, perf, label, params):
    """The `chat` preset with a 20,000-word vocabulary (a WhatsApp export's
    order), where choosing a token among 20k costs as much as a forward pass
    unless the sampler's sort is fast: sampled vs greedy decoding."""
    torch.manual_seed(0)
    engine = CppEngine.from_model(GPT(preset("chat", vocab_size=20_000, dropout=0.0)).eval(), threads=THREADS)
    n = benchmark.pedantic(lambda: sum(len(g.tokens) for g in engine.generate([[1]], NEW_TOKENS, params, seed=0)), **FAST)
    assert n == NEW_TOKENS
    step_breakdown(engine, benchmark)
    perf.rate(f"C++ fp32 word {label}", NEW_TOKENS, benchmark, unit="tokens/s")


def test_cpp_fp32_1_thread(benchmark, perf, model):
    engine = CppEngine.from_model(model, threads=1)
    benchmark.pedantic(run_cpp, args=(engine, 1), **SLOW)
    perf.rate("C++ fp32 1 thread", NEW_TOKENS, benchmark, unit="tokens/s")


@pytest.mark.parametrize("threads,label", [(THREADS, "torch KV loop"), (1, "torch KV loop 1 thread")])
def test_torch_kv_loop(benchmark, perf, model, threads, label):
    # One thread as well: hundreds of tiny ops per token, which PyTorch's
    # intra-op threads slow down badly when the machine is shared.
    def run():
        with torch_threads(threads):
            return kv_generate(model, [1], NEW_TOKENS, PARAMS, seed=0)

    assert len(benchmark.pedantic(run, **SLOW)) == NEW_TOKENS
    perf.rate(label, NEW_TOKENS, benchmark, unit="tokens/s")


def test_naive_loop(benchmark, perf, model):
    reference = GPTLanguageModel(model.config).eval()
    reference.load_state_dict(fast_to_reference(model.state_dict(), model.config.n_head))
    prompt = [int(t) for t in torch.randint(0, model.config.vocab_size, (NAIVE_PROMPT,),
                                            generator=torch.Generator().manual_seed(0))]

    def run():
        with torch_threads(THREADS):
            return naive_generate(reference, prompt, NAIVE_TOKENS, PARAMS, seed=0)

    assert len(benchmark.pedantic(run, **SLOW)) == NAIVE_TOKENS
    perf.rate("naive loop", NAIVE_TOKENS, benchmark, unit="tokens/s")


def test_numpy_copy_bandwidth(benchmark, perf):
    src = np.ones(64 * 1024 * 1024, dtype=np.float32)  # 256 MB
    dst = np.empty_like(src)
    benchmark.pedantic(np.copyto, args=(dst, src), **FAST)
    perf.rate("numpy copy 256 MB", 2 * src.nbytes / 1e9, benchmark, unit="GB/s")  # read + write


STREAM_WORDS = 2000


@pytest.mark.parametrize("label", ["stream decoder", "decoding all again"])
def test_streaming_text_out(benchmark, perf, label):
    """The text side of --stream: words fed one at a time to the TextStream
    that prints them, with a stop string to look for.  With the tokenizer's
    stream decoder each word costs the same; decoding the whole text again
    for every word (what streaming did before) grows with the text."""
    import io
    import random

    from gptfast.engine import _RedecodeAll
    from gptfast.streaming import TextStream
    from gptfast.tokenizer import Tokenizer

    rng = random.Random(0)
    words = ["el", "que", "de", "don't", "«sí»", "¿qué?", '"no"', "3", "14", "Sancho", "<END>", ",", "."]
    text = " ".join(rng.choice(words) for _ in range(STREAM_WORDS))
    tok = Tokenizer.fit(text, kind="word", specials=["<END>"])
    ids = [int(i) for i in tok.encode(text)]

    def run():
        decoder = tok.stream_decoder() if label == "stream decoder" else _RedecodeAll(tok.decode)
        stream = TextStream(decoder, io.StringIO(), ["never there"])
        for t in ids:
            stream.feed([t])
        return stream.finish()

    rounds = FAST if label == "stream decoder" else dict(rounds=1, iterations=1)   # (the old way: seconds)
    assert benchmark.pedantic(run, **rounds) == tok.decode(ids)
    perf.rate(f"stream {STREAM_WORDS:,} words, {label}", len(ids), benchmark, unit="tokens/s")


def test_torch_sum_read_bandwidth(benchmark, perf):
    """A plain streaming read on the engine's thread count: the bandwidth a
    step that finds nothing in the cache is bound by (a 62 MB batch-8 step
    comes close; batch 1's 43 MB of weights partly stay in a 32 MB L3)."""
    src = torch.ones(64 * 1024 * 1024)  # 256 MB

    def run():
        with torch_threads(THREADS):
            return src.sum()

    benchmark.pedantic(run, **FAST)
    perf.rate("torch.sum read 256 MB", src.numel() * src.element_size() / 1e9, benchmark, unit="GB/s")


@pytest.fixture(scope="module")
def long_prompt(model):
    g = torch.Generator().manual_seed(1)
    return [int(t) for t in torch.randint(0, model.config.vocab_size, (model.config.block_size,), generator=g)]


def test_time_to_first_token_cpp(benchmark, perf, engines, long_prompt):
    engine = engines["float32"]
    benchmark.pedantic(lambda: engine.generate([long_prompt], 1, PARAMS), **FAST)
    if not getattr(benchmark, "disabled", False):
        perf.record("TTFT C++ fp32", benchmark.stats.stats.median * 1e3, "ms")


SHARED_PROMPT, SHARED_NEW = 192, 64  # a prompt and its continuations fill the 256-token block


@pytest.mark.parametrize("batch,label", [(1, "C++ fp32 192-token prompt"), (8, "C++ fp32 8 samples of a 192-token prompt")])
def test_cpp_samples_of_one_prompt(benchmark, perf, engines, long_prompt, batch, label):
    """--num-samples 8 after a long prompt: the copies share one prefill and
    read the prompt's keys and values from one cache, so a step reads them
    once instead of 8 times.  Tokens/s over prefill and decoding."""
    engine, prompt = engines["float32"], long_prompt[:SHARED_PROMPT]
    run = lambda: sum(len(g.tokens) for g in engine.generate([prompt] * batch, SHARED_NEW, PARAMS, seed=0))
    assert benchmark.pedantic(run, **(FAST if batch == 1 else SLOW)) == batch * SHARED_NEW
    assert engine.last_stats["prefill_rows"] == SHARED_PROMPT
    perf.rate(label, batch * SHARED_NEW, benchmark, unit="tokens/s")


def test_time_to_first_token_torch(benchmark, perf, model, long_prompt):
    def run():
        with torch_threads(THREADS):
            return kv_generate(model, long_prompt, 1, PARAMS)

    benchmark.pedantic(run, **FAST)
    if not getattr(benchmark, "disabled", False):
        perf.record("TTFT torch prefill", benchmark.stats.stats.median * 1e3, "ms")
