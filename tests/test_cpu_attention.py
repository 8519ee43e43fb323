"""The C++ CPU attention with dropout (csrc/cpu_attention.h) against the
reference attention in float64 under the same mask, on odd shapes; the
mask's statistics; seeding; and its use by the model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gptfast import _backend, cpu_attention
from gptfast.config import preset
from gptfast.model import GPT

pytestmark = pytest.mark.skipif(_backend._C is None or _backend.reference_forced(),
                                reason="needs the C++ extension")

SHAPES = [  # (B, H, T, D)
    (2, 3, 1, 16),
    (2, 3, 17, 16),
    (1, 2, 64, 42),
    (2, 2, 130, 64),
    (1, 3, 33, 20),
]


def reference_with_mask(q, k, v, keep: torch.Tensor, p: float):
    """gptfast.model.reference_attention's math with an explicit keep mask (B, H, T, T)."""
    T = q.shape[-2]
    att = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5                # (B, H, T, T)
    att = att.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf")).softmax(-1)
    return (att * keep / (1.0 - p)) @ v                                   # (B, H, T, D)


@pytest.mark.parametrize("B,H,T,D", SHAPES)
@pytest.mark.parametrize("p", [0.0, 0.2])
def test_matches_reference_in_float64(B, H, T, D, p):
    torch.manual_seed(T * D)
    q, k, v = (torch.randn(B, H, T, D, dtype=torch.float64) for _ in range(3))
    grad = torch.randn(B, H, T, D, dtype=torch.float64)
    seed = 1234 + T
    keep = torch.from_numpy(cpu_attention.reference_keep_mask(B * H, T, p, seed)).view(B, H, T, T)

    ref_in = [t.clone().requires_grad_() for t in (q, k, v)]
    ref_out = reference_with_mask(*ref_in, keep, p)
    ref_out.backward(grad)
    got_in = [t.float().requires_grad_() for t in (q, k, v)]
    got_out = cpu_attention.attention(*got_in, p, seed=seed)
    got_out.backward(grad.float())

    for name, got, ref in [("out", got_out, ref_out)] + [(f"d{n}", g.grad, r.grad)
                                                       for n, g, r in zip("qkv", got_in, ref_in)]:
        assert got.dtype == torch.float32 and got.shape == ref.shape
        err = (got.double() - ref).abs().max().item()
        assert err <= 1e-4 * ref.abs().max().item() + 1e-6, f"{name}: max error {err:.3e}"


def test_keep_mask_statistics():
    p, n_rows, T = 0.2, 64, 128
    keep = cpu_attention.reference_keep_mask(n_rows, T, p, seed=7)   # 1M draws
    n = keep.size
    sigma = np.sqrt(p * (1 - p) / n)
    assert abs((1 - keep.mean()) - p) < 5 * sigma
    # Neighbouring draws are independent: the correlation of adjacent keys is ~0.
    flat = keep.reshape(-1).astype(np.float64)
    corr = np.corrcoef(flat[:-1], flat[1:])[0, 1]
    assert abs(corr) < 5 / np.sqrt(n)
    # Another seed gives another mask.
    assert not np.array_equal(keep, cpu_attention.reference_keep_mask(n_rows, T, p, seed=8))


def test_kept_fraction_seen_through_the_kernel():
    """With v = identity rows summed, out_i . 1 = (kept probability mass) / (1 - p)."""
    B, H, T, p = 2, 2, 96, 0.3
    q = torch.zeros(B, H, T, 16)   # uniform attention: P_ij = 1 / (i + 1)
    v = torch.ones(B, H, T, 16)
    out = cpu_attention.attention(q, q.clone(), v, p, seed=99)
    keep = cpu_attention.reference_keep_mask(B * H, T, p, 99).reshape(B, H, T, T)
    causal = np.tril(np.ones((T, T), dtype=bool))
    expected = (keep & causal).sum(-1) / np.arange(1, T + 1) / (1 - p)    # (B, H, T)
    np.testing.assert_allclose(out[..., 0].numpy(), expected, rtol=1e-5)


def test_seeding_repeats_and_varies():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 40, 16) for _ in range(3))
    a = cpu_attention.attention(q, k, v, 0.5, seed=3)
    assert torch.equal(a, cpu_attention.attention(q, k, v, 0.5, seed=3))
    assert not torch.equal(a, cpu_attention.attention(q, k, v, 0.5, seed=4))
    torch.manual_seed(11)   # without a seed: drawn from torch's generator
    b = cpu_attention.attention(q, k, v, 0.5)
    torch.manual_seed(11)
    assert torch.equal(b, cpu_attention.attention(q, k, v, 0.5))


def test_strided_views_give_the_same_bits():
    """The model passes q, k, v as views into one (B, T, 3C) projection; the
    kernel reads them in place and writes (B, T, H, D)-ordered results."""
    B, H, T, D = 2, 3, 37, 20
    torch.manual_seed(1)
    qkv = torch.randn(B, T, 3 * H * D, requires_grad=True)
    views = [t.view(B, T, H, D).transpose(1, 2) for t in qkv.split(H * D, dim=2)]   # 3 x (B, H, T, D)
    dense = [t.detach().contiguous().requires_grad_() for t in views]
    grad = torch.randn(B, H, T, D)
    y_views = cpu_attention.attention(*views, 0.25, seed=5)
    y_views.backward(grad)
    y_dense = cpu_attention.attention(*dense, 0.25, seed=5)
    y_dense.backward(grad)
    assert torch.equal(y_views, y_dense)
    assert torch.equal(y_views.transpose(1, 2).reshape(B, T, H * D),        # a view: no copy needed
                       y_views.transpose(1, 2).contiguous().view(B, T, H * D))
    assert y_views.transpose(1, 2).is_contiguous()
    assert torch.equal(qkv.grad, torch.cat([t.grad.transpose(1, 2).reshape(B, T, H * D) for t in dense], dim=2))


def test_bfloat16_runs_in_float32_and_returns_bfloat16():
    """Under CPU autocast (--dtype bfloat16) q, k, v come in bfloat16: the
    kernel computes in float32 and the output and gradients are bfloat16,
    equal to the float32 call on the same values, rounded."""
    B, H, T, D = 2, 3, 29, 16
    torch.manual_seed(2)
    q, k, v = (torch.randn(B, H, T, D).to(torch.bfloat16) for _ in range(3))
    grad = torch.randn(B, H, T, D).to(torch.bfloat16)
    half = [t.clone().requires_grad_() for t in (q, k, v)]
    full = [t.float().requires_grad_() for t in (q, k, v)]
    assert cpu_attention.applies(half[0], 0.2, None)
    y_half = cpu_attention.attention(*half, 0.2, seed=8)
    y_half.backward(grad)
    y_full = cpu_attention.attention(*full, 0.2, seed=8)
    y_full.backward(grad.float())
    assert y_half.dtype == torch.bfloat16 and torch.equal(y_half, y_full.to(torch.bfloat16))
    for h, f in zip(half, full):
        assert h.grad.dtype == torch.bfloat16 and torch.equal(h.grad, f.grad.to(torch.bfloat16))


def test_model_under_bfloat16_autocast_matches_float32(monkeypatch):
    """The training step of --dtype bfloat16 on the CPU: the model's attention
    and dropout take their C++ paths and the loss stays near float32's."""
    model = GPT(preset("tiny", vocab_size=13, n_layer=2, dropout=0.1), backend="sdpa").train()
    x = torch.randint(0, 13, (2, 40))
    torch.manual_seed(3)
    _, loss32 = model(x, x)
    calls = []
    real = cpu_attention.attention
    monkeypatch.setattr(cpu_attention, "attention", lambda *a, **kw: calls.append(a[0].dtype) or real(*a, **kw))
    torch.manual_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, loss16 = model(x, x)
    loss16.backward()
    assert calls == [torch.bfloat16] * 2
    assert abs(loss16.item() - loss32.item()) < 0.05 * loss32.item()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_rejects_bad_arrays():
    q = np.zeros((1, 2, 8, 16), np.float32)
    out, lse = np.zeros_like(q), np.zeros((2, 8), np.float32)
    with pytest.raises(ValueError, match="float32"):
        _backend._C.attention_forward(q.astype(np.float64), q, q, out, lse, 0.25, 0.1, 0)
    with pytest.raises(ValueError, match="contiguous last axis"):
        _backend._C.attention_forward(q, q, q, np.zeros((1, 2, 16, 8), np.float32).transpose(0, 1, 3, 2), lse,
                                      0.25, 0.1, 0)
    with pytest.raises(ValueError, match="shape"):
        _backend._C.attention_forward(q, q, q, out, np.zeros((2, 9), np.float32), 0.25, 0.1, 0)
    with pytest.raises(ValueError, match="read-only"):
        frozen = np.zeros_like(q)
        frozen.flags.writeable = False
        _backend._C.attention_forward(q, q, q, frozen, lse, 0.25, 0.1, 0)
    with pytest.raises(ValueError, match="dropout p"):
        _backend._C.attention_forward(q, q, q, out, lse, 0.25, 1.0, 0)


def test_model_uses_it_for_training_dropout_only(monkeypatch):
    calls = []
    real = cpu_attention.attention
    monkeypatch.setattr(cpu_attention, "attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    model = GPT(preset("tiny", vocab_size=11, n_layer=2, dropout=0.1), backend="sdpa")
    x = torch.randint(0, 11, (2, 24))

    model.train()
    torch.manual_seed(5)
    _, loss = model(x, x)
    loss.backward()
    assert len(calls) == 2                      # one per layer
    torch.manual_seed(5)
    _, again = model(x, x)
    assert again.item() == loss.item()          # seeded through torch's generator

    calls.clear()
    model.eval()
    model(x, x)
    assert calls == []                          # no dropout: PyTorch's SDPA
