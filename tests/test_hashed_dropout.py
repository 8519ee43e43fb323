"""The hashed CPU dropout (csrc/dropout.h) against its numpy reference mask:
values, gradients, statistics, seeding, and nn.Dropout's contract."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gptfast import _backend, hashed_dropout
from gptfast.hashed_dropout import Dropout, dropout, reference_keep_mask

pytestmark = pytest.mark.skipif(_backend._C is None or _backend.reference_forced(),
                                reason="needs the C++ extension")


@pytest.mark.parametrize("shape", [(1,), (7, 3), (3, 65537), (2, 300, 385)])   # around the 64K chunks
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_values_and_gradient_follow_the_reference_mask(shape, p):
    torch.manual_seed(0)
    x = (torch.rand(shape) + 0.5).requires_grad_()          # no zeros: a zero output means dropped
    y = dropout(x, p, seed=42)
    keep = torch.from_numpy(reference_keep_mask(x.numel(), p, 42)).view(shape)
    assert torch.equal(y != 0, keep)
    torch.testing.assert_close(y[keep], x.detach()[keep] / (1 - p), rtol=1e-6, atol=0)
    grad = torch.randn(shape)
    y.backward(grad)
    torch.testing.assert_close(x.grad, grad * keep / (1 - p), rtol=1e-6, atol=0)


def test_mask_statistics_and_independence():
    n, p = 1 << 20, 0.2
    keep = reference_keep_mask(n, p, seed=3)
    assert abs((1 - keep.mean()) - p) < 5 * np.sqrt(p * (1 - p) / n)
    flat = keep.astype(np.float64)
    assert abs(np.corrcoef(flat[:-1], flat[1:])[0, 1]) < 5 / np.sqrt(n)


def test_seeded_by_torch_generator():
    x = torch.ones(1000)
    torch.manual_seed(1)
    a = dropout(x, 0.3)
    torch.manual_seed(1)
    assert torch.equal(a, dropout(x, 0.3))
    assert not torch.equal(a, dropout(x, 0.3))              # the next call draws a new seed


def test_module_keeps_nn_dropout_contract():
    m = Dropout(0.25)
    assert isinstance(m, torch.nn.Dropout) and m.state_dict() == {} and "p=0.25" in repr(m)
    x = torch.randn(4, 8)
    m.eval()
    assert m(x) is x
    m.train()
    assert Dropout(0.0)(x) is x
    # Where the hashed path does not apply (float64 here), nn.Dropout's own runs.
    assert not hashed_dropout.applies(x.double())
    y = m(x.double())
    assert y.dtype == torch.float64 and ((y == 0) | torch.isclose(y, x.double() / 0.75)).all()


def test_non_contiguous_input():
    x = torch.rand(6, 10).t() + 0.5                          # (10, 6), not contiguous
    y = dropout(x, 0.4, seed=9)
    keep = torch.from_numpy(reference_keep_mask(60, 0.4, 9)).view(10, 6)   # over the contiguous copy
    assert torch.equal(y != 0, keep)


def test_bfloat16_uses_the_same_mask_and_keeps_its_dtype():
    """CPU autocast (--dtype bfloat16) hands dropout bfloat16 activations:
    masked in float32 with the same mask, returned (and differentiated) in bfloat16."""
    x = (torch.rand(5, 77) + 0.5).to(torch.bfloat16).requires_grad_()
    y = dropout(x, 0.3, seed=21)
    assert hashed_dropout.applies(x) and y.dtype == torch.bfloat16
    keep = torch.from_numpy(reference_keep_mask(x.numel(), 0.3, 21)).view(5, 77)
    assert torch.equal(y != 0, keep)
    assert torch.equal(y, (x.detach().float() * keep / 0.7).to(torch.bfloat16))
    y.backward(torch.ones_like(y))
    assert x.grad.dtype == torch.bfloat16
    assert torch.equal(x.grad, (keep / 0.7).to(torch.bfloat16))
