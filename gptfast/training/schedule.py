"""Learning-rate schedule: linear warmup, then cosine decay to a floor.

A pure function of the step, so a resumed run needs no scheduler state.
"""
from __future__ import annotations

import math


def lr_at(step: int, lr: float, min_lr: float, warmup_iters: int, decay_iters: int, schedule: str = "cosine") -> float:
    """Learning rate for optimizer step `step` (0-based)."""
    if schedule == "constant":  # the seeds: one fixed learning rate
        return lr
    if step < warmup_iters:
        return lr * (step + 1) / (warmup_iters + 1)
    if step >= decay_iters:
        return min_lr
    progress = (step - warmup_iters) / max(1, decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)
