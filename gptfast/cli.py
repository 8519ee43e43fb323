"""Shared pieces of the command-line entry points."""
from __future__ import annotations

import argparse
import sys


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's bad-input contract: one line, exit code 2
    (argparse's own error prints the whole usage block first)."""

    def error(self, message: str):  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def number(kind, lo=None, lo_open=False, what="number", hi=None):
    """An argparse type: `kind(text)`, at least (or above, lo_open) `lo`, and
    at most `hi`."""

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v
    return parse


# Counts go to the C++ core as C ints.
INT_MAX = 2**31 - 1
POS_INT = number(int, 1, what=f"a positive integer up to {INT_MAX}", hi=INT_MAX)
NONNEG_INT = number(int, 0, what=f"an integer in 0..{INT_MAX}", hi=INT_MAX)
POS_FLOAT = number(float, 0, lo_open=True, what="a positive number")
NONNEG_FLOAT = number(float, 0, what="a number >= 0")
