"""The sampler of `gptfast.sampling` on tensors, for a whole batch at once on
the model's device (the CUDA engine samples without copying logits to the
host).

Same steps, same counter-based random numbers (`uniform_tensor` equals
`gptfast.sampling.uniform` bit for bit), float64 arithmetic.  Greedy picks
are identical to the Python/C++ sampler; sampled picks follow the same
distribution, and the same ids except where a different summation order
moves a cumulative sum across the random target (rare, float64 rounding).
"""
from __future__ import annotations

from typing import Optional

import torch

from gptfast.sampling import MASK64, SamplingParams, splitmix64


def _signed(c: int) -> int:
    """A uint64 constant as the int64 with the same bits."""
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN, _MUL1, _MUL2 = _signed(0x9E3779B97F4A7C15), _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's >> is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def splitmix64_tensor(x: torch.Tensor) -> torch.Tensor:
    """splitmix64 on int64 tensors holding uint64 bits (integer ops wrap mod 2**64)."""
    x = x + _GOLDEN
    z = (x ^ _shr(x, 30)) * _MUL1
    z = (z ^ _shr(z, 27)) * _MUL2
    return z ^ _shr(z, 31)


def uniform_tensor(seed: int, seq: torch.Tensor, step: int) -> torch.Tensor:
    """uniform(seed, seq[b], step) for every b: (B,) float64 in [0, 1)."""
    base = _signed(splitmix64(seed & MASK64))
    x = splitmix64_tensor(seq ^ base)
    x = splitmix64_tensor(x ^ _signed(step & MASK64))
    return _shr(x, 11).double() * 2.0 ** -53


def sample_tensor(logits: torch.Tensor, params: SamplingParams, seed: int, seq: torch.Tensor, step: int,
                  seen: Optional[torch.Tensor] = None, banned: Optional[torch.Tensor] = None) -> torch.Tensor:
    """logits (B, V) -> chosen ids (B,) int64, on the logits' device.

    seq (B,) int64: each row's sequence index; seen (B, V) bool: ids already in
    each row (for the repetition penalty); banned (n,) int64 ids."""
    l = logits.double()
    l = torch.nan_to_num(l, nan=-torch.inf, posinf=torch.inf, neginf=-torch.inf)
    r = params.repetition_penalty
    if r != 1.0 and seen is not None:
        l = torch.where(seen, torch.where(l > 0, l / r, l * r), l)
    if banned is not None and banned.numel():
        l = l.index_fill(1, banned, -torch.inf)
    if params.greedy:
        return l.argmax(dim=1)                                            # first maximum: lowest id
    p = torch.softmax(l / params.temperature, dim=1)                      # (B, V)
    B, V = p.shape
    if 0 < params.top_k < V or params.top_p < 1.0:
        p_sorted, order = torch.sort(p, dim=1, descending=True, stable=True)  # ties: lowest id first
    else:  # nothing filtered: every id, in id order (step 6 of gptfast.sampling)
        p_sorted, order = p, torch.arange(V, device=p.device).expand(B, V)
    kept = torch.full((B,), V, dtype=torch.long, device=p.device)
    if 0 < params.top_k < V:
        kept.fill_(params.top_k)
    rank = torch.arange(V, device=p.device)[None, :]                     # (1, V)
    in_top = rank < kept[:, None]
    if params.top_p < 1.0:
        k_mass = (p_sorted * in_top).sum(dim=1, keepdim=True)
        cum = torch.cumsum(p_sorted / k_mass, dim=1)
        # the shortest prefix whose running sum reaches top_p
        kept = torch.minimum(kept, (cum < params.top_p).sum(dim=1) + 1)
        in_top = rank < kept[:, None]
    p_kept = p_sorted * in_top
    cum = torch.cumsum(p_kept, dim=1)                                     # (B, V)
    target = uniform_tensor(seed, seq, step) * cum[:, -1]                 # (B,)
    # the first kept rank whose running sum exceeds the target
    pick = (cum <= target[:, None]).sum(dim=1)
    pick = torch.minimum(pick, kept - 1)
    return order.gather(1, pick[:, None]).squeeze(1)
