"""CPU training with dropout: the C++ attention and hashed dropout vs PyTorch.

    python -m pytest benchmarks/test_cpu_dropout.py -q

Shapes of the `quijote` preset's training step (batch 16, T 256, 6 heads of
64, n_embd 384, dropout 0.2), forward + backward, float32, torch's threads:
- attention: gptfast.cpu_attention (csrc/cpu_attention.h) vs SDPA with
  dropout (its math path: PyTorch's CPU flash kernel has no dropout) vs the
  masked-softmax math written out with F.dropout; SDPA without dropout (its
  flash kernel) as the floor.  q, k, v are views into one qkv projection, as
  in the model.
- dropout of a (16, 256, 384) activation: gptfast.hashed_dropout vs F.dropout.
Figures are tokens (batch x T) per second of the median round.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gptfast import _backend, cpu_attention, hashed_dropout
from gptfast.model import reference_attention

B, T, H, D, P = 16, 256, 6, 64, 0.2
TOKENS = B * T
ROUNDS = dict(rounds=7, iterations=1, warmup_rounds=2)

PERF_REPORT = [
    ("attention with dropout: C++ / SDPA math", "attention C++", "attention SDPA math", None),
    ("attention with dropout: C++ / written-out math", "attention C++", "attention written-out math", None),
    ("attention: C++ with dropout / SDPA flash without", "attention C++", "attention SDPA flash, no dropout", None),
    ("dropout: hashed / F.dropout", "dropout hashed", "dropout F.dropout", None),
]


@pytest.fixture(scope="module", autouse=True)
def _needs_extension():
    if _backend.extension() is None:
        pytest.skip("needs the C++ extension")


def _qkv():
    qkv = torch.randn(B, T, 3 * H * D, requires_grad=True)
    return qkv, [t.view(B, T, H, D).transpose(1, 2) for t in qkv.split(H * D, dim=2)]   # 3 x (B, H, T, D)


ATTENTION = {
    "attention C++": lambda q, k, v: cpu_attention.attention(q, k, v, P),
    "attention SDPA math": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, dropout_p=P, is_causal=True),
    "attention written-out math": lambda q, k, v: reference_attention(q, k, v, P),
    "attention SDPA flash, no dropout": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
}


@pytest.mark.parametrize("name", list(ATTENTION))
def test_attention_fwd_bwd(benchmark, perf, name):
    qkv, (q, k, v) = _qkv()
    grad = torch.randn(B, H, T, D)

    def step():
        qkv.grad = None
        ATTENTION[name](q, k, v).backward(grad)

    benchmark.pedantic(step, **ROUNDS)
    assert qkv.grad is not None and torch.isfinite(qkv.grad).all()
    perf.rate(name, TOKENS, benchmark, unit="tokens/s")


@pytest.mark.parametrize("name,fn", [("dropout hashed", hashed_dropout.dropout), ("dropout F.dropout", F.dropout)])
def test_dropout_fwd_bwd(benchmark, perf, name, fn):
    x = torch.randn(B, T, H * D, requires_grad=True)
    grad = torch.randn(B, T, H * D)

    def step():
        x.grad = None
        fn(x, P, True).backward(grad)

    benchmark.pedantic(step, **ROUNDS)
    assert 0.75 < (x.grad != 0).float().mean().item() < 0.85
    perf.rate(name, TOKENS, benchmark, unit="tokens/s")
