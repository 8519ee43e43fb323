"""Shared test helpers."""
from __future__ import annotations

import os
from pathlib import Path

import torch

if not torch.cuda.is_available():
    # Without a GPU the Triton kernels run in Triton's interpreter on CPU
    # tensors. Triton reads this variable when triton is first imported and
    # when each kernel module is imported, so it must be set before both.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

# The shared corpora live next to the repository (/work/shared/data for /work/main);
# tests that need them skip where the folder is absent (e.g. a fresh clone).
SHARED_DATA: Path = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The shared data folder; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found: {SHARED_DATA}")
    return SHARED_DATA
