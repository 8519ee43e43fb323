"""Reference decoding loops: the ground truth the C++ engine is held to.

Both loops choose tokens with `gptfast.sampling.sample_from_logits`, so with
the same logits they make the same choices as the engine (its C++ sampler is
that function's twin), and both decode one sequence at a time.

  naive_generate  the seeds' loop: a full forward over the context for every
                  new token, no cache.  Works with either model
                  (`gptfast.reference.model.GPTLanguageModel` or `gptfast.model.GPT`).
  kv_generate     gpt-fast style: prefill the prompt into the fast model's KV
                  cache (`GPT.setup_caches`, `prefill`, `decode_one_token`),
                  then one token per forward.

The context window.  A model sees at most block_size tokens.  The seeds crop
the context to its last block_size tokens before every step; once the text is
longer than that, every token sits at a new position each step, so a cache
cannot be reused.  The cached loops therefore slide the window in jumps:

    start = max(0, len(prompt) - block_size)         # the window is tokens[start:]
    before each step: if len(tokens) - start > block_size:
                          start = len(tokens) - window_keep   # and re-prefill the window

(`next_window_start`).  How the loops relate:
  * kv_generate, the C++ engine and naive_generate(window_keep=k) follow this
    rule and are token-identical (greedy) for every k; the naive one
    recomputes each window without a cache, which is what the cached ones
    are checked against across the slide.
  * naive_generate(window_keep=None) is the seeds' crop-every-step rule.  It
    agrees with the rule above while len(tokens) <= block_size, i.e. up to the
    first slide, and for all steps when window_keep = block_size (the cached
    loops then re-prefill a full window every step past block_size, which
    costs what the naive loop costs).
The default window_keep is block_size // 2 (`default_window_keep`): a prefill
of half a window every block_size // 2 + 1 tokens, and never less than half a
window of context.
"""
from __future__ import annotations

from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import torch

from gptfast.sampling import GREEDY, SamplingParams, sample_from_logits


def default_window_keep(block_size: int) -> int:
    return max(1, block_size // 2)


def next_window_start(start: int, length: int, block_size: int, window_keep: int) -> int:
    """Where the window over `length` tokens starts, given that it started at `start`."""
    return length - window_keep if length - start > block_size else start


def _check(prompt: Sequence[int], block_size: int, window_keep: Optional[int]) -> None:
    if len(prompt) == 0:
        raise ValueError("the prompt needs at least one token")
    if window_keep is not None and not 1 <= window_keep <= block_size:
        raise ValueError(f"window_keep must be in 1..block_size ({block_size}), got {window_keep}")


def _last_logits(logits: torch.Tensor) -> List[float]:
    """The float32 logits of the last position as Python floats (exact)."""
    return logits[0, -1].float().tolist()


def naive_generate(model: torch.nn.Module, prompt: Sequence[int], max_new_tokens: int,
                   params: SamplingParams = GREEDY, seed: int = 0, seq: int = 0, stop_ids: Iterable[int] = (),
                   window_keep: Optional[int] = None) -> List[int]:
    """New tokens after `prompt` (a stop id ends the loop and is not returned).

    window_keep None: the seeds' rule, the last block_size tokens every step;
    an int: the cached loops' sliding rule (module docstring), recomputed."""
    return list(iter_naive_tokens(model, prompt, max_new_tokens, params, seed, seq, stop_ids, window_keep))


@torch.no_grad()
def iter_naive_tokens(model: torch.nn.Module, prompt: Sequence[int], max_new_tokens: int,
                      params: SamplingParams = GREEDY, seed: int = 0, seq: int = 0, stop_ids: Iterable[int] = (),
                      window_keep: Optional[int] = None) -> Iterator[int]:
    """naive_generate one token at a time."""
    bs = model.config.block_size
    _check(prompt, bs, window_keep)
    device = next(model.parameters()).device
    stop_ids = set(stop_ids)
    tokens = list(prompt)
    start = max(0, len(tokens) - bs)
    for step in range(max_new_tokens):
        if window_keep is None:
            start = max(0, len(tokens) - bs)
        else:
            start = next_window_start(start, len(tokens), bs, window_keep)
        idx = torch.tensor([tokens[start:]], dtype=torch.long, device=device)   # (1, <= block_size)
        logits, _ = model(idx)                                                # (1, T, vocab)
        t = sample_from_logits(_last_logits(logits), params, seed, seq, step, history=tokens)
        if t in stop_ids:
            return
        tokens.append(t)
        yield t


def iter_kv_tokens(model: torch.nn.Module, prompt: Sequence[int], max_new_tokens: int,
                   params: SamplingParams = GREEDY, seed: int = 0, seq: int = 0, stop_ids: Iterable[int] = (),
                   window_keep: Optional[int] = None) -> Iterator[int]:
    """kv_generate one token at a time (a stop id ends it and is not yielded).
    `model` is a `gptfast.model.GPT`; its caches are (re)allocated for one sequence."""
    for t, _ in iter_kv_steps(model, prompt, max_new_tokens, params, seed, seq, stop_ids, window_keep):
        yield t


@torch.no_grad()
def iter_kv_steps(model: torch.nn.Module, prompt: Sequence[int], max_new_tokens: int,
                  params: SamplingParams = GREEDY, seed: int = 0, seq: int = 0, stop_ids: Iterable[int] = (),
                  window_keep: Optional[int] = None) -> Iterator[Tuple[int, List[float]]]:
    """iter_kv_tokens, yielding (token, the logits it was sampled from) (what
    `python -m gptfast.generate --show-probs` prints)."""
    bs = model.config.block_size
    window_keep = default_window_keep(bs) if window_keep is None else window_keep
    _check(prompt, bs, window_keep)
    if max_new_tokens <= 0:
        return
    device = next(model.parameters()).device
    if model.max_batch_size < 1 or model.max_seq_len != bs:
        model.setup_caches(1, bs)
    stop_ids = set(stop_ids)
    tokens = list(prompt)
    start = max(0, len(tokens) - bs)

    def prefill() -> List[float]:  # the window tokens[start:] at positions 0.., overwriting the cache
        idx = torch.tensor([tokens[start:]], dtype=torch.long, device=device)
        return _last_logits(model.prefill(idx))

    logits = prefill()
    for step in range(max_new_tokens):
        t = sample_from_logits(logits, params, seed, seq, step, history=tokens)
        if t in stop_ids:
            return
        tokens.append(t)
        yield t, logits
        if step + 1 == max_new_tokens:
            return
        new_start = next_window_start(start, len(tokens), bs, window_keep)
        if new_start != start:
            start = new_start
            logits = prefill()
        else:
            pos = torch.tensor([len(tokens) - 1 - start], device=device)
            logits = _last_logits(model.decode_one_token(torch.tensor([[t]], device=device), pos))


def kv_generate(model: torch.nn.Module, prompt: Sequence[int], max_new_tokens: int,
                params: SamplingParams = GREEDY, seed: int = 0, seq: int = 0, stop_ids: Iterable[int] = (),
                window_keep: Optional[int] = None) -> List[int]:
    """New tokens after `prompt` from the fast model's KV cache; window_keep
    None = default_window_keep(block_size), the C++ engine's default."""
    return list(iter_kv_tokens(model, prompt, max_new_tokens, params, seed, seq, stop_ids, window_keep))
