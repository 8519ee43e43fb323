"""The sampler: Python specification (gptfast.sampling) vs the C++ twin
(csrc/sampling.cpp), and whether the draws follow the intended distribution.

Parity is exact: same logits + parameters + (seed, seq, step) -> same token."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptfast import _backend
from gptfast.errors import InputError
from gptfast.sampling import (
    GREEDY,
    SamplingError,
    SamplingParams,
    sample_from_logits,
    splitmix64,
    target_distribution,
    uniform,
)

C = _backend._C
needs_cpp = pytest.mark.skipif(C is None, reason="gptfast._C is not built")

PARAMS = [
    GREEDY,
    SamplingParams(temperature=1.0),
    SamplingParams(temperature=0.7, top_k=5),
    SamplingParams(temperature=1.3, top_p=0.9),
    SamplingParams(temperature=0.9, top_k=8, top_p=0.5),
    SamplingParams(temperature=1.0, top_k=1),
    SamplingParams(temperature=1.0, repetition_penalty=1.3, banned_ids=(0, 3)),
    SamplingParams(temperature=0.0, repetition_penalty=2.0, banned_ids=(1,)),
    SamplingParams(temperature=2.0, top_p=0.3, repetition_penalty=0.8),
]


def cpp_sample(logits, params, seed, seq=0, step=0, history=()):
    cp = C.SamplingParams(temperature=params.temperature, top_k=params.top_k, top_p=params.top_p,
                          repetition_penalty=params.repetition_penalty, banned_ids=list(params.banned_ids))
    return C.sample_from_logits(np.asarray(logits, dtype=np.float32), cp, seed, seq, step, list(history))


# -- the RNG -------------------------------------------------------------------

def test_splitmix64_known_value():
    # The first output of the reference splitmix64 generator seeded with 0.
    assert splitmix64(0) == 0xE220A8397B1DCDAF


def test_uniform_pinned_and_in_range():
    u = [uniform(1234, s, t) for s in range(4) for t in range(256)]
    assert all(0.0 <= x < 1.0 for x in u)
    assert len(set(u)) == len(u)
    assert abs(sum(u) / len(u) - 0.5) < 0.03
    # Pinned so the definition cannot drift (documented in gptfast/sampling.py and csrc/rng.h).
    assert uniform(0, 0, 0) == 0.13870941014555427


@needs_cpp
def test_uniform_matches_cpp():
    rng = np.random.default_rng(0)
    for _ in range(500):
        seed, seq, step = (int(v) for v in rng.integers(0, 2**63, size=3, dtype=np.uint64))
        assert C.uniform(seed, seq, step) == uniform(seed, seq, step)
    for seed, seq, step in [(0, 0, 0), (2**64 - 1, 0, 1), (5, 2**64 - 1, 2**63)]:
        assert C.uniform(seed, seq, step) == uniform(seed, seq, step)


# -- exact parity C++ vs Python --------------------------------------------------

@needs_cpp
@pytest.mark.parametrize("params", PARAMS, ids=repr)
def test_cpp_sampler_matches_python(params):
    rng = np.random.default_rng(1)
    for trial in range(60):
        V = int(rng.integers(2, 50))
        logits = (rng.standard_normal(V) * rng.uniform(0.1, 6)).astype(np.float32)
        if trial % 3 == 0:  # coarse values: many exact ties in probability
            logits = np.round(logits).astype(np.float32)
        banned = [i for i in params.banned_ids if i < V]
        p = SamplingParams(params.temperature, params.top_k, params.top_p, params.repetition_penalty, banned)
        if len(banned) >= V:
            continue
        history = [int(h) for h in rng.integers(0, V, size=int(rng.integers(0, 6)))]
        for _ in range(5):
            seed, step = int(rng.integers(0, 2**62)), int(rng.integers(0, 1000))
            seq = int(rng.integers(0, 8))
            want = sample_from_logits(logits.tolist(), p, seed, seq, step, history)
            got = cpp_sample(logits, p, seed, seq, step, history)
            assert got == want, (trial, V, p, seed, seq, step)


@needs_cpp
@pytest.mark.parametrize("top_p", [1.0, 0.97])
def test_cpp_sampler_matches_python_on_a_large_vocabulary_with_near_ties(top_p):
    """A word-level vocabulary, where the C++ sampler orders ids with a radix
    sort: exact ties, probabilities a few ulps apart (its insertion-sort
    fix-up), zeros, and a heavy head of near-equal logits so that draws
    land all over the order."""
    rng = np.random.default_rng(5)
    V = 6000
    logits = (rng.standard_normal(V) * 3).astype(np.float32)
    logits[:400] = np.round(logits[:400])                       # exact ties
    base = np.float32(4.0)
    head = np.nextafter(np.full(300, base), np.float32(5.0))    # one ulp above 4
    logits[1000:1300] = head
    logits[1300:1600] = base
    logits[1600:1650] = np.nextafter(base, np.float32(3.0))     # one ulp below
    logits[2000:2100] = -np.inf                                 # probability 0
    rng.shuffle(logits)
    p = SamplingParams(temperature=1.0, top_p=top_p)
    for step in range(150):
        seed = int(rng.integers(0, 2**62))
        assert cpp_sample(logits, p, seed, 0, step) == sample_from_logits(logits.tolist(), p, seed, 0, step), step


@needs_cpp
def test_cpp_sampler_matches_python_on_a_near_uniform_distribution():
    """Probabilities that differ below 2^-20 relative share the radix sort's
    key bits: one long run, ordered by its std::sort fallback."""
    ulp = np.float32(2.0**-23)                              # float32's spacing at 1.0
    logits = np.repeat(np.float32(1.0) + np.arange(900, dtype=np.float32) * ulp, 6)   # 24-36 ids per key run
    rng = np.random.default_rng(6)
    rng.shuffle(logits)
    p = SamplingParams(temperature=1.0, top_p=0.999)  # (a filter: the ids are sorted)
    for step in range(40):
        seed = int(rng.integers(0, 2**62))
        assert cpp_sample(logits, p, seed, 0, step) == sample_from_logits(logits.tolist(), p, seed, 0, step), step


@needs_cpp
@settings(max_examples=150, deadline=None)
@given(
    logits=st.lists(st.floats(-30, 30, width=32), min_size=1, max_size=40),
    temperature=st.sampled_from([0.0, 0.25, 1.0, 3.0]),
    top_k=st.integers(0, 6),
    top_p=st.sampled_from([1.0, 0.95, 0.5, 0.01]),
    penalty=st.sampled_from([1.0, 1.5, 0.7]),
    seed=st.integers(0, 2**64 - 1),
    step=st.integers(0, 2**20),
)
def test_cpp_sampler_matches_python_hypothesis(logits, temperature, top_k, top_p, penalty, seed, step):
    p = SamplingParams(temperature, top_k, top_p, penalty)
    history = list(range(0, len(logits), 3))
    assert cpp_sample(logits, p, seed, 1, step, history) == sample_from_logits(logits, p, seed, 1, step, history)


# -- semantics -------------------------------------------------------------------

def samplers():
    out = [("python", lambda *a, **k: sample_from_logits(*a, **k))]
    if C is not None:
        out.append(("cpp", cpp_sample))
    return out


@pytest.mark.parametrize("name,sample", samplers())
def test_greedy_ties_pick_lowest_id(name, sample):
    assert sample([1.0, 3.0, 3.0, 2.0], GREEDY, 0) == 1
    assert sample([float("nan"), 0.5, 0.5], GREEDY, 0) == 1   # NaN counts as -inf


@pytest.mark.parametrize("name,sample", samplers())
def test_repetition_penalty_divides_positive_and_multiplies_negative(name, sample):
    p = SamplingParams(temperature=0.0, repetition_penalty=1.2)
    assert sample([2.0, 1.8], p, 0, history=[]) == 0
    assert sample([2.0, 1.8], p, 0, history=[0]) == 1          # 2.0 / 1.2 = 1.67 < 1.8
    assert sample([-1.0, -1.1], p, 0, history=[0]) == 1        # -1.0 * 1.2 = -1.2 < -1.1
    assert sample([-1.0, -1.1], p, 0, history=[0, 0, 0]) == 1  # applied once per distinct id
    assert sample([2.0, 1.8], SamplingParams(temperature=0.0, repetition_penalty=1.05), 0, history=[0]) == 0


@pytest.mark.parametrize("name,sample", samplers())
def test_banned_ids_are_never_drawn(name, sample):
    logits = [5.0, 4.0, 0.0, -1.0]
    p = SamplingParams(temperature=1.0, banned_ids=(0, 2))
    draws = {sample(logits, p, seed=7, step=s) for s in range(400)}
    assert draws == {1, 3}
    assert sample(logits, SamplingParams(temperature=0.0, banned_ids=(0,)), 0) == 1
    with pytest.raises(ValueError):
        sample(logits, SamplingParams(temperature=1.0, banned_ids=(0, 1, 2, 3)), 0)


@pytest.mark.parametrize("name,sample", samplers())
def test_top_k_and_top_p_keep_the_right_sets(name, sample):
    logits = [math.log(x) for x in (0.4, 0.3, 0.2, 0.1)]
    draws_k = {sample(logits, SamplingParams(top_k=2), seed=3, step=s) for s in range(300)}
    assert draws_k == {0, 1}
    # top-p 0.65: 0.4 < 0.65, 0.4 + 0.3 >= 0.65 -> {0, 1}; top-p 0.75 -> {0, 1, 2}
    assert {sample(logits, SamplingParams(top_p=0.65), seed=3, step=s) for s in range(300)} == {0, 1}
    assert {sample(logits, SamplingParams(top_p=0.75), seed=3, step=s) for s in range(300)} == {0, 1, 2}
    # top-p runs on the top-k survivors renormalized: top-2 -> (0.571, 0.429); 0.5 keeps one
    assert {sample(logits, SamplingParams(top_k=2, top_p=0.5), seed=3, step=s) for s in range(300)} == {0}


def chi_square_threshold(df: int, z: float = 3.72) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile at normal z (3.72: p = 1e-4)."""
    a = 2.0 / (9.0 * df)
    return df * (1.0 - a + z * math.sqrt(a)) ** 3


@pytest.mark.parametrize("params", [SamplingParams(temperature=1.0), SamplingParams(temperature=0.6),
                                    SamplingParams(temperature=1.5, top_k=6),
                                    SamplingParams(temperature=1.0, top_p=0.8),
                                    SamplingParams(temperature=1.0, repetition_penalty=1.5)], ids=repr)
@pytest.mark.parametrize("name,sample", samplers())
def test_draws_follow_the_target_distribution(name, sample, params):
    rng = np.random.default_rng(4)
    logits = (rng.standard_normal(12) * 1.5).astype(np.float32).tolist()
    history = [0, 5]
    target = np.array(target_distribution(logits, params, history))
    n = 6000 if name == "cpp" else 3000
    counts = np.zeros(len(logits))
    for step in range(n):
        counts[sample(logits, params, 99, seq=2, step=step, history=history)] += 1
    kept = target > 0
    assert counts[~kept].sum() == 0, "drew a token outside the kept set"
    expected = target[kept] * n
    chi2 = float(((counts[kept] - expected) ** 2 / expected).sum())
    df = int(kept.sum()) - 1
    print(f"{name} {params}: chi2 {chi2:.1f} (df {df}, threshold {chi_square_threshold(df):.1f})")
    assert chi2 < chi_square_threshold(df)


def test_params_are_validated_with_one_line_errors():
    for bad in (dict(temperature=-1), dict(temperature=float("inf")), dict(top_k=-1), dict(top_p=0.0),
                dict(top_p=1.5), dict(repetition_penalty=0.0)):
        with pytest.raises(SamplingError) as err:
            SamplingParams(**bad)
        assert isinstance(err.value, InputError) and "\n" not in str(err.value)
    with pytest.raises(SamplingError):
        SamplingParams(banned_ids=(9,)).check_vocab(5)
