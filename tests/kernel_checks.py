"""The tolerance rule every Triton kernel test applies (flash-attention style).

float32: error under `fp32_rtol` of the reference's largest magnitude.
float16 / bfloat16: error no more than 2x (outputs) or 3x (gradients) the
error of PyTorch's own math in that precision.  Both plus a small absolute
`abs_floor` against 0-vs-0 noise.  Every diff is printed before asserting.
"""
from __future__ import annotations

from typing import Container, Dict, Tuple

import torch

FP32_RTOL = 1e-4
FWD_FACTOR, GRAD_FACTOR = 2.0, 3.0


def max_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return (x.double() - ref.double()).abs().max().item()


def check_against_reference(
    results: Dict[str, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    dtype: torch.dtype,
    label: str,
    *,
    forward_names: Container[str],
    abs_floor: float,
    check_dtype: bool = False,
) -> None:
    """results: name -> (kernel output, torch in `dtype`, float64 reference)."""
    failures = []
    for name, (got, torch_lp, ref) in results.items():
        assert got.shape == ref.shape, (name, got.shape, ref.shape)
        if check_dtype:
            assert got.dtype == dtype, (name, got.dtype)
        err = max_err(got, ref)
        if dtype == torch.float32:
            tol = FP32_RTOL * ref.abs().max().item() + abs_floor
            print(f"{label} {name}: max err {err:.3e}, rel {err / max(ref.abs().max().item(), 1e-30):.3e}, "
                  f"tol {tol:.3e}")
        else:
            base = max_err(torch_lp, ref)
            factor = FWD_FACTOR if name in forward_names else GRAD_FACTOR
            tol = factor * base + abs_floor
            print(f"{label} {name}: max err {err:.3e}, torch {str(dtype)[6:]} err {base:.3e}, "
                  f"ratio {err / max(base, 1e-30):.2f}, tol {tol:.3e}")
        if not err <= tol:  # also catches NaN
            failures.append(f"{name}: err {err:.3e} > tol {tol:.3e}")
    assert not failures, f"{label}: " + "; ".join(failures)
