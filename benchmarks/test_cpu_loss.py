"""CPU training loss: the C++ cross-entropy vs F.cross_entropy.

    python -m pytest benchmarks/test_cpu_loss.py -q

Forward + backward of the mean cross-entropy over float32 logits, torch's
threads, at two training shapes:
- word level: the `chat` preset's batch (64 x 32 = 2048 rows) over a
  20,000-word vocabulary (a WhatsApp export's order of magnitude), where the
  (rows, vocab) array is 164 MB and F.cross_entropy's passes over it go to
  DRAM;
- char level: the `quijote` preset's batch (16 x 256 rows) over its 92
  characters.
Each round first produces the logits with ``leaf * 1`` (one elementwise pass,
the same for both), as the model's lm_head would.
And the lm-head with its loss at the word-level shape (x (2048, 256) @ W
(20k, 256)^T + b): gptfast.cpu_cross_entropy.linear_cross_entropy (what
training runs on the CPU: no logits) vs F.linear + the C++ loss vs F.linear
+ F.cross_entropy.  Figures are rows (tokens) per second of the median round.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gptfast import _backend, cpu_cross_entropy

SHAPES = {"word": (2048, 20_000), "char": (4096, 92)}
ROUNDS = dict(rounds=7, iterations=1, warmup_rounds=2)
LOSSES = {"C++": cpu_cross_entropy.cross_entropy, "F.cross_entropy": F.cross_entropy}

PERF_REPORT = [
    (f"cross-entropy {kind}, vocab {V:,}: C++ / F.cross_entropy", f"{kind} C++", f"{kind} F.cross_entropy", None)
    for kind, (_, V) in SHAPES.items()
] + [
    ("lm-head + loss, vocab 20,000: fused / F.linear + F.cross_entropy", "lm-head fused", "lm-head torch", None),
    ("lm-head + loss, vocab 20,000: fused / F.linear + C++ loss", "lm-head fused", "lm-head C++ loss", None),
]
LM_HEAD = {
    "lm-head fused": lambda x, w, b, t: cpu_cross_entropy.linear_cross_entropy(x, w, b, t),
    "lm-head C++ loss": lambda x, w, b, t: cpu_cross_entropy.cross_entropy(F.linear(x, w, b), t),
    "lm-head torch": lambda x, w, b, t: F.cross_entropy(F.linear(x, w, b), t),
}


@pytest.fixture(scope="module", autouse=True)
def _needs_extension():
    if _backend.extension() is None:
        pytest.skip("needs the C++ extension")


@pytest.mark.parametrize("loss_name", list(LOSSES))
@pytest.mark.parametrize("kind", list(SHAPES))
def test_cross_entropy_fwd_bwd(benchmark, perf, kind, loss_name):
    N, V = SHAPES[kind]
    g = torch.Generator().manual_seed(0)
    leaf = torch.randn(N, V, generator=g).requires_grad_()
    targets = torch.randint(0, V, (N,), generator=g)
    loss_fn = LOSSES[loss_name]

    def step():
        leaf.grad = None
        loss_fn(leaf * 1, targets).backward()

    benchmark.pedantic(step, **ROUNDS)
    assert leaf.grad is not None and abs(leaf.grad.sum().item()) < 1e-3   # softmax minus one-hot rows sum to 0
    perf.rate(f"{kind} {loss_name}", N, benchmark, unit="tokens/s")


@pytest.mark.parametrize("name", list(LM_HEAD))
def test_lm_head_and_loss_fwd_bwd(benchmark, perf, name):
    (N, V), C = SHAPES["word"], 256
    g = torch.Generator().manual_seed(0)
    leaf = torch.randn(N, C, generator=g).requires_grad_()
    w = (torch.randn(V, C, generator=g) * 0.05).requires_grad_()
    b = torch.zeros(V, requires_grad=True)
    targets = torch.randint(0, V, (N,), generator=g)

    def step():
        leaf.grad = w.grad = b.grad = None
        LM_HEAD[name](leaf * 1, w, b, targets).backward()

    benchmark.pedantic(step, **ROUNDS)
    assert w.grad is not None and abs(b.grad.sum().item()) < 1e-3
    perf.rate(name, N, benchmark, unit="tokens/s")
