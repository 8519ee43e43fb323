"""The C++ cross-entropy (csrc/cross_entropy.h) against F.cross_entropy in
float64: loss and gradient on odd shapes, ignored targets, bfloat16 logits,
bad targets, and its use by the model."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gptfast import _backend, cpu_cross_entropy
from gptfast.config import preset
from gptfast.model import GPT

pytestmark = pytest.mark.skipif(_backend._C is None or _backend.reference_forced(),
                                reason="needs the C++ extension (not built, or GPTFAST_REFERENCE=1)")


@pytest.mark.parametrize("N,V", [(1, 1), (1, 92), (7, 5), (37, 1001), (130, 20011)])
def test_matches_torch_in_float64(N, V):
    torch.manual_seed(N + V)
    x = torch.randn(N, V, dtype=torch.float64) * 4
    t = torch.randint(0, V, (N,))
    if N > 2:
        t[1] = -1                                   # ignored rows count neither in the mean nor the gradient
    got_in, ref_in = x.float().requires_grad_(), x.clone().requires_grad_()
    got = cpu_cross_entropy.cross_entropy(got_in, t, ignore_index=-1)
    ref = F.cross_entropy(ref_in, t, ignore_index=-1)
    got.backward(torch.tensor(1.7))
    ref.backward(torch.tensor(1.7, dtype=torch.float64))
    assert got.dtype == torch.float32 and got.shape == ()
    assert abs(got.item() - ref.item()) <= 1e-5 * abs(ref.item()) + 1e-6
    err = (got_in.grad.double() - ref_in.grad).abs().max().item()
    assert err <= 1e-5 * ref_in.grad.abs().max().item() + 1e-9, err
    if N > 2:
        assert not got_in.grad[1].any()


def test_every_target_ignored_gives_nan_like_torch():
    x = torch.randn(3, 10, requires_grad=True)
    t = torch.full((3,), -1)
    loss = cpu_cross_entropy.cross_entropy(x, t, ignore_index=-1)
    assert math.isnan(loss.item()) and math.isnan(F.cross_entropy(x, t, ignore_index=-1).item())


def test_bfloat16_logits_are_computed_in_float32():
    torch.manual_seed(4)
    x = torch.randn(9, 300).to(torch.bfloat16).requires_grad_()
    t = torch.randint(0, 300, (9,))
    loss = cpu_cross_entropy.cross_entropy(x, t)
    assert cpu_cross_entropy.applies(x) and loss.dtype == torch.float32
    ref = F.cross_entropy(x.detach().float(), t)
    assert abs(loss.item() - ref.item()) < 1e-5
    loss.backward()
    assert x.grad.dtype == torch.bfloat16


def test_bad_targets_are_refused():
    x = torch.randn(4, 10)
    for bad in (10, -2):
        with pytest.raises(ValueError, match=f"target {bad} of row 2 is outside \\[0, 10\\)"):
            cpu_cross_entropy.cross_entropy(x, torch.tensor([0, 1, bad, 3]), ignore_index=-1)


def test_model_uses_it_on_the_cpu(monkeypatch):
    """The fast model's loss on the CPU comes from here, and equals torch's."""
    calls = []
    real = cpu_cross_entropy.cross_entropy
    monkeypatch.setattr(cpu_cross_entropy, "cross_entropy", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    model = GPT(preset("tiny", vocab_size=50, n_layer=1), backend="sdpa")
    x = torch.randint(0, 50, (2, 20))
    logits, loss = model(x, x)
    assert calls == [1]
    assert abs(loss.item() - F.cross_entropy(logits.view(-1, 50), x.view(-1)).item()) < 1e-5
