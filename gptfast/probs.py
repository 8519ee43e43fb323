"""--show-probs: the candidates the sampler weighed at each step (the seed's
table.txt), from the same loop and sampler as the engines, so the tokens
chosen are the ones `generate` would have produced with the same seed.

The probabilities shown are the distribution the token is drawn from
(temperature, top-k, top-p, repetition penalty and bans applied).  With
temperature 0 (greedy) that would be one certain token, so the model's own
distribution (temperature 1, same bans and penalty) is shown instead.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterator, List, Sequence, TextIO, Tuple

import torch

from gptfast.reference.generate import iter_kv_steps
from gptfast.sampling import SamplingParams, target_distribution


@dataclass
class StepProbs:
    step: int
    chosen: int
    chosen_prob: float
    candidates: List[Tuple[int, float]]   # (id, probability), most probable first


def iter_step_probs(model: torch.nn.Module, prompt: Sequence[int], max_new_tokens: int, params: SamplingParams,
                    seed: int, top: int, stop_ids: Sequence[int] = ()) -> Iterator[StepProbs]:
    shown = dataclasses.replace(params, temperature=1.0) if params.greedy else params
    history = list(prompt)
    steps = iter_kv_steps(model, prompt, max_new_tokens, params, seed, 0, stop_ids)
    for step, (token, logits) in enumerate(steps):
        p = target_distribution(logits, shown, history)
        order = sorted(range(len(p)), key=lambda i: (-p[i], i))[:top]
        yield StepProbs(step, token, p[token], [(i, p[i]) for i in order if p[i] > 0])
        history.append(token)


def _show(token: str) -> str:
    """A token as one visible cell: escapes for control characters, ␣ for a space."""
    return repr(token)[1:-1].replace(" ", "␣") if token else "''"


def write_table(rows: Iterator[StepProbs], vocab: Sequence[str], out: TextIO) -> List[int]:
    """One line per step: the chosen token and its probability, then the
    candidates.  Returns the chosen ids."""
    chosen = []
    out.write(f"{'step':>5}  {'chosen':<14} {'p':>6}   candidates\n")
    for r in rows:
        cands = "  ".join(f"{_show(vocab[i])} {p:.3f}" for i, p in r.candidates)
        out.write(f"{r.step:>5}  {_show(vocab[r.chosen]):<14} {r.chosen_prob:6.3f}   {cands}\n")
        out.flush()
        chosen.append(r.chosen)
    return chosen


def as_json(rows: Iterator[StepProbs], vocab: Sequence[str]) -> List[dict]:
    return [{"step": r.step, "token": vocab[r.chosen], "id": r.chosen, "prob": r.chosen_prob,
             "candidates": [{"token": vocab[i], "id": i, "prob": p} for i, p in r.candidates]} for r in rows]
