"""Which implementation runs: the C++ extension `gptfast._C`, or the reference.

The fast path is used when the extension imported; otherwise gptfast runs on
its pure-Python reference and warns once.  ``GPTFAST_REFERENCE=1`` forces the
reference everywhere (useful to compare, or to rule the fast path out when
debugging).
"""
from __future__ import annotations

import os
import warnings

FORCE_REFERENCE_ENV = "GPTFAST_REFERENCE"

try:
    from gptfast import _C  # type: ignore[attr-defined]

    _IMPORT_ERROR = None
except ImportError as exc:  # not built: no compiler, or the build failed
    _C = None
    _IMPORT_ERROR = exc

_warned = False


def reference_forced() -> bool:
    return os.environ.get(FORCE_REFERENCE_ENV, "") not in ("", "0")


def extension():
    """The `_C` module, or None (after one warning) when it cannot be used."""
    global _warned
    if reference_forced():
        return None
    if _C is None and not _warned:
        _warned = True
        warnings.warn(
            f"gptfast: the C++ extension gptfast._C is not available ({_IMPORT_ERROR}); "
            "running on the pure-Python reference, which is much slower. "
            "Reinstall with a C++17 compiler (pip install -e .) to build it.",
            RuntimeWarning,
            stacklevel=3,
        )
    return _C


def extension_available() -> bool:
    return _C is not None
