"""The C++ decoding engine (gptfast.engine.CppEngine) against PyTorch.

  * forward logits == gptfast.model.GPT's within 1e-4 (float32), and the
    16-bit engines == the model with its weights rounded to that dtype and
    its KV cache in the engine's kv_dtype;
  * greedy decoding: C++ engine == PyTorch KV-cache loop == naive loop, for
    200 tokens across the window slide (gptfast/reference/generate.py
    documents the window rule and how it relates to the seeds' crop);
  * sampled decoding == the Python sampler driven by the engine's own logits;
  * a batch == each sequence alone, and the thread count changes nothing;
  * stop ids, stop strings, callbacks, errors.
Diffs are printed before asserting (run with -s)."""
import contextlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from gptfast import _backend
from gptfast.config import GPTConfig, preset
from gptfast.engine import DTYPES, CppEngine, TorchEngine, load_engine, rounded_copy
from gptfast.model import GPT
from gptfast.reference.generate import default_window_keep, kv_generate, naive_generate, next_window_start
from gptfast.sampling import GREEDY, SamplingParams, sample_from_logits

pytestmark = pytest.mark.skipif(_backend._C is None or _backend.reference_forced(), reason="needs the C++ extension (not built, or GPTFAST_REFERENCE=1)")


def random_model(config: GPTConfig, seed: int = 0, std: float = 0.15) -> GPT:
    """A GPT with random weights wide enough that logits are far from flat
    (spread of several units), so greedy choices are not near-ties."""
    torch.manual_seed(seed)
    model = GPT(config, backend="sdpa").eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln" in name or name.startswith("ln_f"):
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, std)
    return model


@contextlib.contextmanager
def torch_single_thread():
    """The reference loops make thousands of tiny PyTorch calls, which run ~10x
    slower with intra-op threads on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def torch_logits(model: torch.nn.Module, tokens) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([tokens]))[0][0].numpy()


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / max(1.0, np.abs(want).max()))


# name -> config: odd shapes on purpose.
CONFIGS = {
    # head size 42 (256 // 6), attention width 252 != n_embd 256 (the chat seed).
    "hs42-inner252": preset("chat", vocab_size=37, n_layer=1, dropout=0.0),
    # n_embd 252, 6 heads of 42: widths that are not multiples of 8.
    "hs42-252": GPTConfig(vocab_size=29, block_size=40, n_layer=2, n_head=6, n_embd=252),
    # the littera block of 528, one layer, small width.
    "block528": GPTConfig(vocab_size=23, block_size=528, n_layer=1, n_head=2, n_embd=64),
    # every option away from the seed: no biases, qkv bias, tied head, sinusoidal positions.
    "options": GPTConfig(vocab_size=19, block_size=24, n_layer=2, n_head=3, n_embd=48, bias=False, qkv_bias=True,
                         tie_weights=True, pos_embedding="sinusoidal"),
    "sinusoidal-bias": GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=4, n_embd=64,
                                 pos_embedding="sinusoidal", qkv_bias=True),
    "tied-learned": GPTConfig(vocab_size=33, block_size=20, n_layer=3, n_head=2, n_embd=40, tie_weights=True),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_logits_float32(name):
    config = CONFIGS[name]
    model = random_model(config, seed=1)
    engine = CppEngine.from_model(model, threads=2)
    tokens = torch.randint(0, config.vocab_size, (config.block_size,), generator=torch.Generator().manual_seed(2))
    want, got = torch_logits(model, tokens.tolist()), engine.forward_logits(tokens.tolist())
    assert got.shape == (config.block_size, config.vocab_size) and got.dtype == np.float32
    err = rel_err(got, want)
    print(f"{name}: max|logit| {np.abs(want).max():.2f}, max|diff| / max(1, max|logit|) {err:.2e}")
    assert err < 1e-4
    # a shorter sequence: positions 0..T-1 again
    assert rel_err(engine.forward_logits(tokens[:5].tolist()), torch_logits(model, tokens[:5].tolist())) < 1e-4


# An engine's twin in PyTorch is the model with its weights rounded to the
# engine's dtype and its KV cache in the engine's kv_dtype (keys and values
# rounded as they are cached).  With a float32 cache the engine equals its
# twin as in float32 (only the summation order differs).  A 16-bit cache
# rounds values that the engine and PyTorch computed a few float32 ulps
# apart, so where one lies at a rounding boundary they round it to
# neighbouring 16-bit values: they differ by a small part of what rounding
# the cache changes at all (measured: at most 0.16 of it).  Against the
# float32 model the rounding of the weights shows: stated bounds, relative
# to max|logit|, several times the errors measured on these models.
ROUNDING_BOUND = {"float16": 1e-2, "bfloat16": 8e-2}
BOUNDARY_SHARE = 0.3


def rounded_twin(model: GPT, dtype: str, kv_dtype: str) -> GPT:
    """The model the engine with these dtypes computes, in PyTorch: weights
    rounded to `dtype`, a one-sequence KV cache of `kv_dtype`."""
    twin = rounded_copy(model, dtype)
    twin.setup_caches(1, dtype=DTYPES[kv_dtype])
    return twin


def twin_logits(twin: GPT, tokens) -> np.ndarray:
    """Logits of a prefill through the twin's cache (what the engine does)."""
    return twin.prefill(torch.tensor([tokens]))[0].numpy()


SIXTEEN_BIT = [(dtype, kv) for dtype in DTYPES for kv in DTYPES if "float32" != dtype or "float32" != kv]


@pytest.mark.parametrize("dtype,kv_dtype", SIXTEEN_BIT)
@pytest.mark.parametrize("name", ["hs42-252", "options", "block528"])
def test_forward_logits_16bit(name, dtype, kv_dtype):
    config = CONFIGS[name]
    model = random_model(config, seed=3)
    engine = CppEngine.from_model(model, dtype=dtype, threads=2, kv_dtype=kv_dtype)
    assert engine.kv_dtype == kv_dtype
    tokens = torch.randint(0, config.vocab_size, (min(config.block_size, 64),),
                           generator=torch.Generator().manual_seed(4)).tolist()
    got = engine.forward_logits(tokens)
    twin = twin_logits(rounded_twin(model, dtype, kv_dtype), tokens)
    cache_effect = rel_err(twin, twin_logits(rounded_twin(model, dtype, "float32"), tokens))
    exact = rel_err(got, twin)
    vs_f32 = float(np.abs(got - torch_logits(model, tokens)).max() / np.abs(torch_logits(model, tokens)).max())
    print(f"{name} {dtype} weights, {kv_dtype} cache: vs its twin {exact:.2e} (the cache's rounding "
          f"{cache_effect:.2e}), vs float32 model {vs_f32:.2e}")
    assert exact < max(1e-4, BOUNDARY_SHARE * cache_effect)
    if dtype != "float32":
        assert vs_f32 < ROUNDING_BOUND[dtype]
        assert engine.weight_bytes_per_step * 2 == CppEngine.from_model(model, threads=1).weight_bytes_per_step


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_the_cache_rounds_as_torch_does(dtype):
    """Round to nearest, ties to even, subnormals and overflow included; by
    the vector code (runs of 8) and by the scalar code (the tails)."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(4000) * np.exp2(rng.integers(-30, 20, 4000))).astype(np.float32)
    # exact ties between two float16 neighbours of 1, and just beside them
    ties = np.float32(1.0) + np.arange(1, 40, dtype=np.float32) * np.float32(2.0 ** -11)
    x = np.concatenate([x, ties, np.nextafter(ties, 2), [65504, 65519.99, 65520, 1e-8, -0.0, np.inf, -np.inf]])
    x = x.astype(np.float32)
    want = torch.from_numpy(x).to(DTYPES[dtype]).view(torch.int16).numpy().view(np.uint16)
    C = _backend.extension()
    assert np.array_equal(C.round_floats(x, dtype), want)
    scalar = np.concatenate([C.round_floats(x[i:i + 7], dtype) for i in range(0, len(x), 7)])
    assert np.array_equal(scalar, want)
    bits = int(C.round_floats(np.array([np.nan], dtype=np.float32), dtype)[0])
    exponent, mantissa = (0x7c00, 0x3ff) if dtype == "float16" else (0x7f80, 0x7f)
    assert bits & exponent == exponent and bits & mantissa  # NaN stays NaN (torch's payload may differ)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16bit_words_widen_as_torch_does(dtype):
    """Every one of the 65536 words, by the vector loads (runs of 8) and by
    the scalar code (the tails): torch's float32 value, bit for bit.  NaNs:
    a bfloat16 is the top half of its float32, so all its bits carry over; a
    float16 NaN comes back a quiet NaN of the same sign, as F16C returns it."""
    words = np.arange(65536, dtype=np.uint16)
    want = torch.from_numpy(words.view(np.int16)).view(DTYPES[dtype]).float().numpy()
    C = _backend.extension()
    for got in (C.widen_words(words, dtype), np.concatenate([C.widen_words(words[i:i + 7], dtype)
                                                             for i in range(0, len(words), 7)])):
        nan = np.isnan(want)
        assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))
        assert np.isnan(got[nan]).all() and np.array_equal(np.signbit(got[nan]), np.signbit(want[nan]))
        if dtype == "bfloat16":
            assert np.array_equal(got[nan].view(np.uint32), words[nan].astype(np.uint32) << 16)
        else:
            assert (got[nan].view(np.uint32) & 0x00400000).all()


def test_default_threads_are_the_physical_cores(tmp_path, monkeypatch):
    from gptfast.engine import default_threads

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3, 5})
    for cpu, siblings in {0: "0,4", 1: "1,5", 2: "2,6", 3: "3,7", 5: "1,5"}.items():  # 2-way SMT
        (tmp_path / f"cpu{cpu}" / "topology").mkdir(parents=True)
        (tmp_path / f"cpu{cpu}" / "topology" / "thread_siblings_list").write_text(siblings + "\n")
    assert default_threads(tmp_path) == 4  # cpu 5 shares cpu 1's core
    assert default_threads(tmp_path / "missing") == 5  # no topology: every CPU allowed


def test_the_cache_follows_the_weights_by_default():
    model = random_model(CONFIGS["options"])
    assert [CppEngine.from_model(model, dtype=d, threads=1).kv_dtype for d in ("float32", "float16", "bfloat16")] \
        == ["float32", "float16", "bfloat16"]
    with pytest.raises(ValueError, match="kv_dtype must be one of"):
        CppEngine.from_model(model, kv_dtype="int8")


# -- greedy decoding: three implementations, across the window slide -------------

SLIDE_CONFIG = GPTConfig(vocab_size=41, block_size=32, n_layer=2, n_head=4, n_embd=64)
STEPS = 200


@pytest.fixture(scope="module")
def slide_model():
    return random_model(SLIDE_CONFIG, seed=5, std=0.2)


@pytest.fixture(scope="module")
def slide_runs(slide_model):
    """Greedy tokens from every implementation, prompt of 5, 200 new tokens."""
    prompt = [1, 7, 3, 3, 9]
    engine = CppEngine.from_model(slide_model, threads=2)
    keep = default_window_keep(SLIDE_CONFIG.block_size)
    with torch_single_thread():
        return dict(
            prompt=prompt,
            cpp=engine.generate([prompt], STEPS, GREEDY)[0].tokens,
            kv=kv_generate(slide_model, prompt, STEPS, GREEDY),
            naive_slide=naive_generate(slide_model, prompt, STEPS, GREEDY, window_keep=keep),
            naive_crop=naive_generate(slide_model, prompt, STEPS, GREEDY),
            cpp_full=engine.generate([prompt], STEPS, GREEDY, window_keep=SLIDE_CONFIG.block_size)[0].tokens,
        )


def first_mismatch(a, b):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


def test_greedy_cpp_equals_torch_kv_loop_and_naive_with_the_same_window(slide_runs):
    r = slide_runs
    print("first mismatch cpp/kv:", first_mismatch(r["cpp"], r["kv"]),
          "cpp/naive_slide:", first_mismatch(r["cpp"], r["naive_slide"]))
    assert len(r["cpp"]) == STEPS
    assert len(set(r["cpp"])) > 5, "degenerate model: the test would prove little"
    assert r["cpp"] == r["kv"] == r["naive_slide"]


def test_greedy_matches_the_seeds_crop_until_the_first_slide(slide_runs):
    r = slide_runs
    bs = SLIDE_CONFIG.block_size
    same = bs - len(r["prompt"]) + 1  # tokens whose context fits in one window
    print("first mismatch cpp/naive_crop:", first_mismatch(r["cpp"], r["naive_crop"]), "(slide after", same, ")")
    assert r["cpp"][:same] == r["naive_crop"][:same]
    # window_keep = block_size re-prefills a full window every step: the seeds' loop exactly.
    assert r["cpp_full"] == r["naive_crop"]


def test_window_rule():
    bs, keep = 8, 4
    start, starts = 0, []
    for length in range(1, 20):
        start = next_window_start(start, length, bs, keep)
        assert 0 < length - start <= bs
        starts.append(start)
    assert starts[:8] == [0] * 8 and starts[8] == 5  # 9 tokens > 8: keep the last 4


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_greedy_16bit_equals_kv_loop_of_its_twin(slide_model, dtype):
    """60 tokens: across window slides, whose prefills re-round the cache."""
    prompt = [2, 4, 6]
    got = CppEngine.from_model(slide_model, dtype=dtype, threads=2).generate([prompt], 60, GREEDY)[0].tokens
    with torch_single_thread():
        want = kv_generate(rounded_twin(slide_model, dtype, dtype), prompt, 60, GREEDY)
    print("first mismatch:", first_mismatch(got, want))
    assert got == want


# -- sampling inside the engine ------------------------------------------------------

def test_sampled_generation_equals_python_sampler_on_engine_logits(slide_model):
    """The engine's loop (window, history, seq index, step) against the spec:
    Python's sampler fed with the engine's own logits of each window."""
    engine = CppEngine.from_model(slide_model, threads=2)
    params = SamplingParams(temperature=0.9, top_k=20, top_p=0.95, repetition_penalty=1.2, banned_ids=(0,))
    prompt, seed, seq, bs = [5, 6, 7], 1234, 3, SLIDE_CONFIG.block_size
    keep = default_window_keep(bs)
    got = engine.generate([prompt], 70, params, seed=seed, seq_ids=[seq])[0].tokens
    tokens, start, want = list(prompt), 0, []
    for step in range(70):
        start = next_window_start(start, len(tokens), bs, keep)
        logits = engine.forward_logits(tokens[start:])[-1]
        t = sample_from_logits(logits.tolist(), params, seed, seq, step, history=tokens)
        tokens.append(t)
        want.append(t)
    assert got == want
    assert 0 not in got


# -- batches and threads ---------------------------------------------------------------

PROMPTS = [[1], [2, 3, 4, 5, 6, 7, 8], list(range(1, 41)), [9, 9, 9], list(range(40, 0, -1))[:33]]


@pytest.mark.parametrize("dtype", ["float32", "float16"])  # (float16: float16 weights and cache)
@pytest.mark.parametrize("params", [GREEDY, SamplingParams(temperature=1.0, top_k=10, repetition_penalty=1.1)],
                         ids=["greedy", "sampled"])
def test_batch_equals_each_sequence_alone(slide_model, params, dtype):
    engine = CppEngine.from_model(slide_model, dtype=dtype, threads=2)
    batch = engine.generate(PROMPTS, 50, params, seed=7)
    for i, prompt in enumerate(PROMPTS):
        alone = engine.generate([prompt], 50, params, seed=7, seq_ids=[i])[0]
        assert batch[i].tokens == alone.tokens, i
        assert batch[i].finish_reason == "length"
    one_thread = CppEngine.from_model(slide_model, dtype=dtype, threads=1).generate(PROMPTS, 50, params, seed=7)
    assert [g.tokens for g in one_thread] == [g.tokens for g in batch]
    if params.temperature > 0:  # different seeds, different text
        assert engine.generate(PROMPTS, 50, params, seed=8)[0].tokens != batch[0].tokens


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_identical_prompts_share_one_prefill(slide_model, dtype):
    """--num-samples copies of a prompt: one prefill, whose logits the copies
    take, then attention over the first copy's cache of the prompt until a
    slide; the same tokens as each alone, also when the first copy stops
    early.  Greedy copies stay identical, so their window slides are shared
    too."""
    engine = CppEngine.from_model(slide_model, dtype=dtype, threads=2)
    long, mid, other = list(range(1, 41)), list(range(3, 23)), [2, 3, 4]  # long: a full 32-token window
    prompts = [mid, long, other, long, mid, mid, long]
    sampled, stop = SamplingParams(temperature=1.0), [12]
    batch = engine.generate(prompts, 50, sampled, seed=0, stop_ids=stop)
    batch_prefills = engine.last_stats["prefill_rows"]
    lengths = [len(g.tokens) for g in batch]
    print("lengths:", lengths)
    # (This seed: the first `mid` and the first `long` stop early, copies of each go on.)
    assert lengths[0] < 8 and lengths[4] > 20 and lengths[1] < 8 and lengths[3] == 50
    assert len({tuple(g.tokens) for g in batch}) == len(prompts)  # different draws
    alone_prefills = 0
    for i, prompt in enumerate(prompts):
        alone = engine.generate([prompt], 50, sampled, seed=0, seq_ids=[i], stop_ids=stop)[0]
        assert batch[i].tokens == alone.tokens, i
        alone_prefills += engine.last_stats["prefill_rows"]
    # Two copies of each first window, at least: later windows (15 prompt
    # tokens and one drawn token after the first slide of `long`) are
    # sometimes the same in two copies too.
    assert batch_prefills <= alone_prefills - 2 * (SLIDE_CONFIG.block_size + len(mid))

    alone = engine.generate([long], 60, GREEDY)[0].tokens
    alone_prefills = engine.last_stats["prefill_rows"]
    assert alone_prefills > SLIDE_CONFIG.block_size  # the window slid
    assert [g.tokens for g in engine.generate([long] * 3, 60, GREEDY)] == [alone] * 3
    assert engine.last_stats["prefill_rows"] == alone_prefills


# -- stopping and streaming -----------------------------------------------------------

def test_stop_ids_end_a_sequence_and_are_not_emitted(slide_model):
    engine = CppEngine.from_model(slide_model, threads=2)
    free = engine.generate([[1, 2], [3]], 40, GREEDY)
    stop = free[0].tokens[10]
    out = engine.generate([[1, 2], [3]], 40, GREEDY, stop_ids=[stop])
    cut = free[0].tokens.index(stop)
    assert out[0].tokens == free[0].tokens[:cut] and out[0].finish_reason == "stop"
    if stop not in free[1].tokens:
        assert out[1].tokens == free[1].tokens and out[1].finish_reason == "length"


def test_callback_streams_every_token_and_can_stop(slide_model):
    engine = CppEngine.from_model(slide_model, threads=2)
    prompts = [[1], [2], [3]]
    free = engine.generate(prompts, 30, GREEDY)
    for every in (1, 4):
        seen = [[] for _ in prompts]
        calls = []

        def on_tokens(fresh):
            calls.append(fresh)
            for b, new in enumerate(fresh):
                seen[b].extend(new)

        out = engine.generate(prompts, 30, GREEDY, callback=on_tokens, callback_every=every)
        assert seen == [g.tokens for g in out] == [g.tokens for g in free]
        assert len(calls) == -(-30 // every)

    def stop_second_after_5(fresh):
        return [1] if len(fresh[1]) and stop_second_after_5.n >= 4 else stop_second_after_5.bump()

    stop_second_after_5.n = 0
    stop_second_after_5.bump = lambda: setattr(stop_second_after_5, "n", stop_second_after_5.n + 1)
    out = engine.generate(prompts, 30, GREEDY, callback=stop_second_after_5)
    assert [g.finish_reason for g in out] == ["length", "callback", "length"]
    assert out[1].tokens == free[1].tokens[:5]
    out = engine.generate(prompts, 30, GREEDY, callback=lambda fresh: False)
    assert all(len(g.tokens) == 1 and g.finish_reason == "callback" for g in out)


def test_callback_exception_propagates(slide_model):
    engine = CppEngine.from_model(slide_model, threads=2)

    def boom(fresh):
        raise KeyError("from the callback")

    with pytest.raises(KeyError, match="from the callback"):
        engine.generate([[1]], 10, GREEDY, callback=boom)
    assert len(engine.generate([[1]], 3, GREEDY)[0].tokens) == 3  # still usable


def test_calling_the_engine_from_its_own_callback_is_an_error(slide_model):
    engine = CppEngine.from_model(slide_model, threads=2)
    with pytest.raises(RuntimeError, match="busy"):
        engine.generate([[1]], 5, GREEDY, callback=lambda fresh: engine.forward_logits([1]))
    assert len(engine.generate([[1]], 3, GREEDY)[0].tokens) == 3


def test_stop_strings_cut_the_text(slide_model):
    engine = CppEngine.from_model(slide_model, threads=2)
    decode = lambda ids: "".join(chr(ord("a") + i % 26) for i in ids)  # noqa: E731
    free = engine.generate([[1]], 40, GREEDY, decode=decode)[0]
    stop = free.text[12:14]
    out = engine.generate([[1]], 40, GREEDY, decode=decode, stop_strings=["@@", stop])[0]
    at = free.text.index(stop)
    assert out.finish_reason == "stop_string"
    assert out.text == free.text[:at]
    assert out.tokens == free.tokens[:at + len(stop)]  # one token per character here


def test_thread_counts(slide_model):
    """Out of 1..MAX_THREADS: ValueError before any thread starts.  Threads
    the system refuses: a RuntimeError, and the engine's threads that did
    start are joined (a later engine works)."""
    from gptfast.engine import MAX_THREADS

    for bad in (0, MAX_THREADS + 1):
        with pytest.raises(ValueError, match="threads must be in"):
            CppEngine.from_model(slide_model, threads=bad)
    assert CppEngine.from_model(slide_model, threads=MAX_THREADS).threads == MAX_THREADS  # many, but allowed
    if not sys.platform.startswith("linux"):
        pytest.skip("the refused threads are provoked with Linux's RLIMIT_AS and /proc")
    refused = subprocess.run([sys.executable, "-c", REFUSED_THREADS], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 0, refused.stderr
    if refused.stdout.strip() == "started":
        pytest.skip("this system started 300 threads in 200 MB of address space (small thread stacks?)")
    assert refused.stdout.strip() == "refused, then 3 tokens"


# A child whose address space has room for ~25 more thread stacks (8 MB
# each by default; RLIMIT_AS binds root too): an engine of 300 threads must
# fail cleanly.
REFUSED_THREADS = """
import resource
from gptfast.config import GPTConfig
from gptfast.engine import CppEngine
from gptfast.model import GPT
from gptfast.sampling import GREEDY
model = GPT(GPTConfig(vocab_size=41, block_size=32, n_layer=2, n_head=4, n_embd=64)).eval()
CppEngine.from_model(model, threads=2).generate([[1]], 3, GREEDY)   # what the engine needs, allocated now
size = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + 200 * 2**20, resource.getrlimit(resource.RLIMIT_AS)[1]))
try:
    CppEngine.from_model(model, threads=300)
    print("started")
except RuntimeError:
    print("refused, then", len(CppEngine.from_model(model, threads=2).generate([[1]], 3, GREEDY)[0].tokens), "tokens")
"""


def test_bad_requests_raise_value_error(slide_model):
    engine = CppEngine.from_model(slide_model, threads=1)
    V, bs = SLIDE_CONFIG.vocab_size, SLIDE_CONFIG.block_size
    for prompts in ([[]], [[V]], [[-1]], []):
        with pytest.raises(ValueError):
            engine.generate(prompts, 5, GREEDY)
    with pytest.raises(ValueError):
        engine.generate([[1]], 5, GREEDY, window_keep=bs + 1)
    with pytest.raises(ValueError):
        engine.generate([[1]], 5, GREEDY, stop_ids=[V])
    with pytest.raises(ValueError):
        engine.forward_logits(list(range(bs + 1)))
    with pytest.raises(ValueError):
        engine.generate([[1]], 5, SamplingParams(banned_ids=tuple(range(V))))
    assert engine.generate([[1]], 0, GREEDY)[0].tokens == []


def test_torch_engine_fallback_has_the_same_results(slide_model, monkeypatch):
    prompts = [[1, 2], [3]]
    cpp = CppEngine.from_model(slide_model, threads=1).generate(prompts, 20, GREEDY, stop_ids=[4])
    monkeypatch.setenv("GPTFAST_REFERENCE", "1")
    fallback = load_engine(slide_model)
    assert isinstance(fallback, TorchEngine)
    with torch_single_thread():
        out = fallback.generate(prompts, 20, GREEDY, stop_ids=[4])
    assert [(g.tokens, g.finish_reason) for g in out] == [(g.tokens, g.finish_reason) for g in cpp]
