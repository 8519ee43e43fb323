"""How the next token is chosen: sampling parameters and the Python sampler.

`sample_from_logits` is the specification; the C++ engine (csrc/sampling.cpp)
performs the same float64 operations in the same order, so given the same
logits, parameters, seed, sequence index and step both pick the same token
(tests/test_sampling.py holds them to it).

Randomness is counter-based: the uniform for token `step` of sequence `seq` is
a pure function of (seed, seq, step) (`uniform`), so a draw never depends on
how many draws came before it or on which sequences share a batch.

    splitmix64(x): x += 0x9E3779B97F4A7C15
                   z = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
                   z = (z ^ (z >> 27)) * 0x94D049BB133111EB
                   return z ^ (z >> 31)                       (mod 2**64)
    uniform(seed, seq, step) = (splitmix64(splitmix64(splitmix64(seed) ^ seq) ^ step) >> 11) * 2**-53
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, List, Sequence, Tuple

from gptfast.errors import InputError

MASK64 = (1 << 64) - 1


class SamplingError(InputError, ValueError):
    """Sampling parameters that cannot be used; the message is one line."""


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each token.

    temperature: 0 = greedy (argmax, ties -> lowest id); otherwise logits / T.
    top_k: keep the k most probable tokens (0 = off).
    top_p: keep the smallest set of most probable tokens whose probability
        (renormalized over the top-k survivors) reaches top_p (1 = off).
    repetition_penalty: CTRL-style, for every token id already in the sequence
        (prompt included): positive logits divided by it, negative ones
        multiplied (1 = off).
    banned_ids: never chosen (their logits are masked to -inf), e.g. <UNK>.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    banned_ids: Tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "banned_ids", tuple(int(i) for i in self.banned_ids))
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature >= 0):
            raise SamplingError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise SamplingError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise SamplingError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not (isinstance(self.repetition_penalty, (int, float)) and math.isfinite(self.repetition_penalty)
                and self.repetition_penalty > 0):
            raise SamplingError(f"repetition_penalty must be a finite number > 0, got {self.repetition_penalty!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def check_vocab(self, vocab_size: int) -> None:
        bad = [i for i in self.banned_ids if not 0 <= i < vocab_size]
        if bad:
            raise SamplingError(f"banned id {bad[0]} is outside the vocabulary 0..{vocab_size - 1}")
        if len(set(self.banned_ids)) >= vocab_size:
            raise SamplingError("every token of the vocabulary is banned")


GREEDY = SamplingParams(temperature=0.0)


# ---------------------------------------------------------------------------
# The counter-based RNG
# ---------------------------------------------------------------------------


def splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    z = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def uniform(seed: int, seq: int, step: int) -> float:
    """The uniform in [0, 1) for token `step` (0 = first new token) of sequence `seq`."""
    key = splitmix64(splitmix64(splitmix64(seed & MASK64) ^ (seq & MASK64)) ^ (step & MASK64))
    return (key >> 11) * 2.0 ** -53


# ---------------------------------------------------------------------------
# The sampler
# ---------------------------------------------------------------------------


def _adjusted_logits(logits: Sequence[float], params: SamplingParams, history: Iterable[int]) -> List[float]:
    """Steps 1-3: float64 logits, NaN -> -inf, repetition penalty, bans."""
    l = [float(v) for v in logits]
    l = [-math.inf if math.isnan(v) else v for v in l]
    r = params.repetition_penalty
    if r != 1.0:
        for i in set(history):
            l[i] = l[i] / r if l[i] > 0 else l[i] * r
    for i in params.banned_ids:
        l[i] = -math.inf
    return l


def _filtered(l: List[float], params: SamplingParams) -> Tuple[List[float], List[int]]:
    """Steps 5-8: the weights of all ids and the kept ids in sampling order."""
    t = params.temperature
    l = [v / t for v in l]
    m = max(l)
    e = [math.exp(v - m) for v in l]
    if not 0 < params.top_k < len(e) and params.top_p == 1.0:
        return e, list(range(len(e)))  # nothing filtered: every id, in id order, weighed by e
    S = 0.0
    for v in e:          # id order, like the C++ loop
        S += v
    p = [v / S for v in e]
    order = sorted(range(len(p)), key=lambda i: (-p[i], i))
    kept = len(order)
    if 0 < params.top_k < kept:
        kept = params.top_k
    if params.top_p < 1.0:
        K = 0.0
        for i in order[:kept]:
            K += p[i]
        cum = 0.0
        for n, i in enumerate(order[:kept]):
            cum += p[i] / K
            if cum >= params.top_p:
                kept = n + 1
                break
    return p, order[:kept]


def sample_from_logits(logits: Sequence[float], params: SamplingParams, seed: int, seq: int = 0, step: int = 0,
                       history: Iterable[int] = ()) -> int:
    """The id chosen from one row of logits (any float sequence; float32 values
    from the model).  `history`: the ids already in the sequence, prompt
    included (for the repetition penalty).  All arithmetic in float64:

      1. l_i = float(logit_i), NaN -> -inf
      2. repetition penalty r != 1, each id in history: l_i / r if l_i > 0 else l_i * r
      3. banned ids: l_i = -inf
      4. temperature 0: argmax l, ties -> lowest id
      5. l_i /= temperature; m = max l; e_i = exp(l_i - m)
      6. neither top-k nor top-p: every id is kept, in id order, with weight
         w_i = e_i; go to 9 (the same law as 7-9, without normalizing or
         sorting the vocabulary)
      7. S = sum e (id order); w_i = p_i = e_i / S; order ids by (p
         descending, id ascending); top-k: keep the first k
      8. top-p: K = sum of kept p (in order); keep the shortest prefix whose
         running sum of p_i / K is >= top_p
      9. W = sum of the kept w (in order); target = uniform(seed, seq, step) * W;
         the first kept id whose running sum of w exceeds target (the last
         kept id with w > 0 if rounding leaves none)
    """
    l = _adjusted_logits(logits, params, history)
    if all(v == -math.inf for v in l):
        raise SamplingError("every token is banned or has logit -inf: nothing to sample")
    if params.temperature == 0:
        best = 0
        while l[best] == -math.inf:
            best += 1
        for i in range(best + 1, len(l)):
            if l[i] > l[best]:
                best = i
        return best
    w, kept = _filtered(l, params)
    W = 0.0
    for i in kept:
        W += w[i]
    target = uniform(seed, seq, step) * W
    cum = 0.0
    for i in kept:
        cum += w[i]
        if target < cum:
            return i
    for i in reversed(kept):
        if w[i] > 0:
            return i
    return kept[0]


def target_distribution(logits: Sequence[float], params: SamplingParams, history: Iterable[int] = ()) -> List[float]:
    """The probability of each id under `params` (what sample_from_logits draws
    from): the kept probabilities renormalized, 0 elsewhere.  For tests."""
    l = _adjusted_logits(logits, params, history)
    if params.temperature == 0:
        best = sample_from_logits(logits, params, 0, history=history)
        return [1.0 if i == best else 0.0 for i in range(len(l))]
    w, kept = _filtered(l, params)
    total = sum(w[i] for i in kept)
    out = [0.0] * len(l)
    for i in kept:
        out[i] = w[i] / total
    return out
