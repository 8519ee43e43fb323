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


def test_bad_targets_are_refused(monkeypatch):
    monkeypatch.setattr(cpu_cross_entropy, "CHUNK_LOGITS", 20)     # chunks of 2 rows: row 2 starts the second
    x, w = torch.randn(4, 10), torch.randn(10, 3)
    for bad in (10, -2):
        targets = torch.tensor([0, 1, bad, 3])
        with pytest.raises(ValueError, match=f"target {bad} of row 2 is outside \\[0, 10\\)"):
            cpu_cross_entropy.cross_entropy(x, targets, ignore_index=-1)
        with pytest.raises(ValueError, match=f"target {bad} of row 2 is outside \\[0, 10\\)"):
            cpu_cross_entropy.linear_cross_entropy(x[:, :3], w, None, targets, ignore_index=-1)


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


# -- the lm-head and the loss fused (no logits) ------------------------------------

@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("chunk", [1 << 22, 500])        # 500 logits: chunks of 3 rows and a tail
def test_linear_cross_entropy_matches_torch_in_float64(monkeypatch, bias, chunk):
    monkeypatch.setattr(cpu_cross_entropy, "CHUNK_LOGITS", chunk)
    torch.manual_seed(7)
    N, C, V = 40, 24, 150
    x, w = torch.randn(N, C, dtype=torch.float64), torch.randn(V, C, dtype=torch.float64) * 0.3
    b = torch.randn(V, dtype=torch.float64) if bias else None
    t = torch.randint(0, V, (N,))
    t[5] = t[17] = -1
    ref_in = [v.clone().requires_grad_() for v in (x, w)] + ([b.clone().requires_grad_()] if bias else [])
    got_in = [v.float().requires_grad_() for v in (x, w)] + ([b.float().requires_grad_()] if bias else [])
    ref = F.cross_entropy(F.linear(*ref_in), t, ignore_index=-1)
    got = cpu_cross_entropy.linear_cross_entropy(got_in[0], got_in[1], got_in[2] if bias else None, t, ignore_index=-1)
    ref.backward(torch.tensor(0.6, dtype=torch.float64))
    got.backward(torch.tensor(0.6))
    assert abs(got.item() - ref.item()) <= 1e-5 * abs(ref.item())
    for name, g, r in zip(["dx", "dW", "db"], got_in, ref_in):
        err = (g.grad.double() - r.grad).abs().max().item()
        assert err <= 1e-5 * r.grad.abs().max().item() + 1e-9, (name, err)
    assert not got_in[0].grad[5].any()


def test_linear_cross_entropy_without_grad_mode_forms_no_gradients(monkeypatch):
    formed = []
    real = _backend._C.cross_entropy_backward
    monkeypatch.setattr(_backend._C, "cross_entropy_backward", lambda *a: formed.append(1) or real(*a))
    x, w = torch.randn(6, 8, requires_grad=True), torch.randn(30, 8, requires_grad=True)
    t = torch.randint(0, 30, (6,))
    with torch.no_grad():
        loss = cpu_cross_entropy.linear_cross_entropy(x, w, None, t)
    assert formed == [] and abs(loss.item() - F.cross_entropy(x @ w.t(), t).item()) < 1e-5


@pytest.mark.parametrize("tie", [False, True])
def test_model_without_logits_gives_the_same_loss_and_gradients(tie):
    """model(x, y, return_logits=False), what training calls: (None, loss),
    the loss and every gradient as with the logits; tied embeddings too."""
    torch.manual_seed(2)
    model = GPT(preset("tiny", vocab_size=70, n_layer=1, tie_weights=tie), backend="sdpa")
    x, y = torch.randint(0, 70, (3, 33)), torch.randint(0, 70, (3, 33))
    y[0, :4] = -1
    logits, loss = model(x, y)
    loss.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    none, fused = model(x, y, return_logits=False)
    fused.backward()
    assert none is None and abs(fused.item() - loss.item()) < 1e-5
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want[n], rtol=1e-4, atol=1e-6, msg=n)
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):     # --dtype bfloat16: the matmuls in bfloat16
        none16, loss16 = model(x, y, return_logits=False)
    loss16.backward()
    assert none16 is None and abs(loss16.item() - loss.item()) < 0.02 * loss.item()
    assert model.lm_head.weight.grad.dtype == torch.float32 and torch.isfinite(model.lm_head.weight.grad).all()


def test_linear_cross_entropy_under_bfloat16_autocast_is_bfloat16_matmuls_exactly():
    """Under autocast the logits are the bfloat16 product, the loss and the
    gradient float32 math on them: the same as F.linear under autocast
    followed by the C++ loss, up to float32 summation order."""
    torch.manual_seed(8)
    x, w, b = torch.randn(50, 32), torch.randn(300, 32) * 0.2, torch.randn(300)
    t = torch.randint(0, 300, (50,))
    got_in, ref_in = [[v.clone().requires_grad_() for v in (x, w, b)] for _ in range(2)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = cpu_cross_entropy.linear_cross_entropy(*got_in, t)
        ref = cpu_cross_entropy.cross_entropy(F.linear(*ref_in), t)
    got.backward()
    ref.backward()
    assert abs(got.item() - ref.item()) < 1e-5 * ref.item()
    for g, r in zip(got_in, ref_in):   # ref's gradients go through bfloat16 matmuls too, summed differently
        torch.testing.assert_close(g.grad, r.grad, rtol=0.02, atol=2e-3 * r.grad.abs().max().item())
