"""The C++ scanner classifies every code point as this Python's `re` does.

csrc/gen_unicode_tables.py bakes `re`'s \\w, \\d and \\s into two-level tables
at build time; these tests hold the built tables (and the scanner's class
tests built on them) to `re` for all 0x110000 code points.  Surrogates
(U+D800..U+DFFF) cannot occur in UTF-8 input, so they are left out.

Vectorized: one string of every code point, and `re.finditer` over it gives
the positions of the members of a class in one pass.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from gptfast import _backend

N_CODEPOINTS = 0x110000
WORD, DIGIT, SPACE = 1, 2, 4  # bits of gptfast._C.unicode_flags_table()

# Every code point but the surrogates, in order, and the code point at each index.
CODEPOINTS = np.r_[0:0xD800, 0xE000:N_CODEPOINTS]
ALL_CHARS = "".join(map(chr, CODEPOINTS.tolist()))


@pytest.fixture(scope="module")
def native():
    """gptfast._C; a missing extension fails (skips only under GPTFAST_REFERENCE=1)."""
    if _backend.reference_forced():
        pytest.skip("GPTFAST_REFERENCE=1 forces the reference: nothing native to check")
    if _backend._C is None:
        pytest.fail(f"gptfast._C is not built ({_backend._IMPORT_ERROR}); run pip install -e .")
    return _backend._C


def members(pattern: str) -> np.ndarray:
    """Code points (surrogates excluded) that `re` matches with a one-character pattern."""
    positions = np.fromiter((m.start() for m in re.finditer(pattern, ALL_CHARS)), dtype=np.int64)
    return CODEPOINTS[positions]


def expected_flags() -> np.ndarray:
    table = np.zeros(N_CODEPOINTS, dtype=np.uint8)
    for bit, pattern in ((WORD, r"\w"), (DIGIT, r"\d"), (SPACE, r"\s")):
        table[members(pattern)] |= bit
    return table


def describe(cps: np.ndarray, got: np.ndarray, want: np.ndarray, limit: int = 12) -> str:
    rows = [f"U+{cp:04X} got {g:03b} want {w:03b}" for cp, g, w in zip(cps[:limit], got[:limit], want[:limit])]
    return f"{len(cps)} code points differ (bits: space digit word):\n" + "\n".join(rows)


def test_flags_table_equals_re_for_every_code_point(native):
    got = np.frombuffer(native.unicode_flags_table(), dtype=np.uint8)
    assert got.shape == (N_CODEPOINTS,)
    want = expected_flags()
    got, want = got[CODEPOINTS], want[CODEPOINTS]
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, describe(CODEPOINTS[bad], got[bad], want[bad])


def test_flags_table_knows_the_tricky_characters(native):
    """Spot checks that document what `re` says (and that the table is not trivially empty)."""
    table = native.unicode_flags_table()
    cases = {
        "_": WORD,
        "a": WORD, "ñ": WORD, "日": WORD, "\u0303": 0,  # a combining tilde is not \w in re
        "5": WORD | DIGIT, "٣": WORD | DIGIT, "𝟘": WORD | DIGIT,  # Arabic-Indic, math digits
        "²": WORD, "½": WORD, "Ⅻ": WORD,  # numeric but not decimal: \w, not \d
        " ": SPACE, "\n": SPACE, "\x1c": SPACE, "\x1f": SPACE, "\x85": SPACE,
        "\u00a0": SPACE, "\u2028": SPACE, "\u3000": SPACE,
        "\u200b": 0, "\ufeff": 0, "🤓": 0, "-": 0, "\x00": 0,
    }
    for ch, flags in cases.items():
        expected = (
            (WORD if re.match(r"\w", ch) else 0)
            | (DIGIT if re.match(r"\d", ch) else 0)
            | (SPACE if re.match(r"\s", ch) else 0)
        )
        assert flags == expected, f"the test's own expectation for U+{ord(ch):04X} is wrong"
        assert table[ord(ch)] == flags, f"U+{ord(ch):04X}"


@pytest.mark.parametrize(
    "cls",
    [r"\w", r"\d", r"\s", r"\W", r"\D", r"\S", r"[^\w\s]", r"[^\W\d]", r"[\d\s]", r".", r"[^a-z\d]"],
)
def test_scanner_classes_equal_re_on_every_code_point(native, cls):
    """End to end through the scanner: runs of a class (``cls+``) over the
    string of every code point are exactly `re`'s runs, so the scanner's class
    test (ASCII table, 8-byte run loop, Unicode slow path) picks exactly the
    characters `re` picks."""
    from gptfast.token_program import compile_program

    pattern = cls + "+"
    program = compile_program(pattern, [])
    scanner = native.Scanner(program.as_tuples(), program.separators)
    got = scanner.split(ALL_CHARS)
    want = re.findall(pattern, ALL_CHARS)
    if got != want:
        first = next((i for i, (g, w) in enumerate(zip(got, want)) if g != w), min(len(got), len(want)))
        g, w = (got[first:first + 1] or [""])[0], (want[first:first + 1] or [""])[0]
        pytest.fail(
            f"{pattern}: run {first} differs: scanner U+{ord(g[0]) if g else 0:04X}..({len(g)} chars), "
            f"re U+{ord(w[0]) if w else 0:04X}..({len(w)} chars)"
        )
