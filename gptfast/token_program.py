"""Compile a tokenizer regex into the program the C++ scanner runs.

The C++ scanner supports the subset of `re` that tokenizer patterns use, with
exactly `re`'s semantics (first matching alternative wins, greedy runs):

* an alternation ``A|B|...`` at the top level, tried in order, where each
  alternative is either
  - a literal string (``<END>``, ``'s``, ``\\.\\.\\.``), or
  - one character class, optionally repeated ``+``, ``{m,}`` or ``{m,n}``
    with m >= 1: ``\\w+``, ``\\d``, ``[^\\s]``, ``[a-zA-Z0-9_]+``, ``.``;
* character classes built from literals, ranges, negation and
  ``\\w \\W \\d \\D \\s \\S`` (with Python's Unicode meaning of each);
* the flags DOTALL and VERBOSE; non-capturing or capturing groups around a
  single alternative's atom.

Anything else (lookarounds, backreferences, IGNORECASE, ASCII, optional or
starred atoms that can match the empty string, sequences of classes) is
reported as unsupported, and the tokenizer falls back to the reference.
Special tokens are never parsed: they are literal alternatives put first.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

try:  # Python >= 3.11 moved the parser; it is the parser `re` itself uses.
    import re._constants as sre_c
    import re._parser as sre_parse
except ImportError:  # pragma: no cover - Python < 3.11
    import sre_constants as sre_c  # type: ignore[no-redef]
    import sre_parse  # type: ignore[no-redef]

# Category bits shared with csrc/tokenizer.h (CharClass::categories).
CAT_WORD, CAT_DIGIT, CAT_SPACE = 1, 2, 4
CAT_NOT_WORD, CAT_NOT_DIGIT, CAT_NOT_SPACE = 8, 16, 32
CAT_ANY_BUT_NEWLINE, CAT_ANY = 64, 128
UNLIMITED = -1

_CATEGORIES = {
    sre_c.CATEGORY_WORD: CAT_WORD,
    sre_c.CATEGORY_DIGIT: CAT_DIGIT,
    sre_c.CATEGORY_SPACE: CAT_SPACE,
    sre_c.CATEGORY_NOT_WORD: CAT_NOT_WORD,
    sre_c.CATEGORY_NOT_DIGIT: CAT_NOT_DIGIT,
    sre_c.CATEGORY_NOT_SPACE: CAT_NOT_SPACE,
}
_ALLOWED_FLAGS = re.UNICODE | re.DOTALL | re.VERBOSE


class Unsupported(Exception):
    """The pattern is valid `re` but outside the C++ scanner's subset."""


@dataclass(frozen=True)
class CharClass:
    negate: bool
    categories: int
    ranges: Tuple[Tuple[int, int], ...]  # inclusive code point ranges

    def matches(self, ch: str) -> bool:
        """Python twin of the C++ test, used to find chunk separators."""
        cp = ord(ch)
        hit = any(lo <= cp <= hi for lo, hi in self.ranges)
        checks = {
            CAT_WORD: lambda: bool(re.match(r"\w", ch)),
            CAT_DIGIT: lambda: bool(re.match(r"\d", ch)),
            CAT_SPACE: lambda: bool(re.match(r"\s", ch)),
            CAT_NOT_WORD: lambda: not re.match(r"\w", ch),
            CAT_NOT_DIGIT: lambda: not re.match(r"\d", ch),
            CAT_NOT_SPACE: lambda: not re.match(r"\s", ch),
            CAT_ANY_BUT_NEWLINE: lambda: ch != "\n",
            CAT_ANY: lambda: True,
        }
        hit = hit or any(check() for bit, check in checks.items() if self.categories & bit)
        return hit != self.negate


@dataclass(frozen=True)
class LiteralBranch:
    text: str


@dataclass(frozen=True)
class ClassBranch:
    cls: CharClass
    min_repeat: int
    max_repeat: int  # UNLIMITED for +


Branch = Union[LiteralBranch, ClassBranch]

# Characters at which a long text may be cut for parallel encoding, best first.
_SEPARATOR_CANDIDATES = "\n \t\r\x0b\x0c"


@dataclass(frozen=True)
class Program:
    branches: Tuple[Branch, ...]
    # ASCII characters no token can extend past: cutting right after one of
    # them cannot change the tokens, so encoding may split the text there.
    separators: str

    def as_tuples(self) -> list:
        """The plain form the C++ `Scanner` constructor takes."""
        out = []
        for b in self.branches:
            if isinstance(b, LiteralBranch):
                out.append(("literal", b.text, (False, 0, []), 0, 0))
            else:
                c = b.cls
                out.append(("class", "", (c.negate, c.categories, list(c.ranges)), b.min_repeat, b.max_repeat))
        return out


def _char_class(items: list, dotall: bool) -> CharClass:
    """One single-character atom (IN, ANY, LITERAL, NOT_LITERAL) as a CharClass."""
    op, av = items
    if op is sre_c.LITERAL:
        return CharClass(False, 0, ((av, av),))
    if op is sre_c.NOT_LITERAL:
        return CharClass(True, 0, ((av, av),))
    if op is sre_c.ANY:
        return CharClass(False, CAT_ANY if dotall else CAT_ANY_BUT_NEWLINE, ())
    if op is sre_c.IN:
        negate, cats, ranges = False, 0, []
        for sub_op, sub_av in av:
            if sub_op is sre_c.NEGATE:
                negate = True
            elif sub_op is sre_c.LITERAL:
                ranges.append((sub_av, sub_av))
            elif sub_op is sre_c.RANGE:
                ranges.append(tuple(sub_av))
            elif sub_op is sre_c.CATEGORY and sub_av in _CATEGORIES:
                cats |= _CATEGORIES[sub_av]
            else:
                raise Unsupported(f"character set item {sub_op} {sub_av}")
        return CharClass(negate, cats, tuple(ranges))
    raise Unsupported(f"{op} is not a single-character class")


def _unwrap_group(items: list, dotall: bool) -> Tuple[list, bool]:
    """Strip groups around one alternative; ``(?s:...)`` switches DOTALL on."""
    while len(items) == 1 and items[0][0] is sre_c.SUBPATTERN:
        _group, add_flags, del_flags, sub = items[0][1]
        if (add_flags | del_flags) & ~re.DOTALL:
            raise Unsupported("inline flags other than DOTALL inside a group")
        dotall = bool(add_flags & re.DOTALL) or (dotall and not del_flags & re.DOTALL)
        items = list(sub)
    return items, dotall


def _branch(items: list, dotall: bool) -> Branch:
    items, dotall = _unwrap_group(list(items), dotall)
    if items and all(op is sre_c.LITERAL for op, _ in items):
        return LiteralBranch("".join(chr(av) for _, av in items))
    if len(items) != 1:
        raise Unsupported("an alternative must be one literal string or one (repeated) character class")
    op, av = items[0]
    if op is sre_c.MAX_REPEAT:
        lo, hi, sub = av
        sub, dotall = _unwrap_group(list(sub), dotall)
        if lo < 1:
            raise Unsupported("repeats that can match the empty string (*, ?, {0,n})")
        if len(sub) != 1:
            raise Unsupported("a repeat must apply to one character class")
        return ClassBranch(_char_class(sub[0], dotall), lo, UNLIMITED if hi is sre_c.MAXREPEAT else hi)
    return ClassBranch(_char_class(items[0], dotall), 1, 1)


def compile_program(pattern: str, specials: Sequence[str]) -> Program:
    """Raise `Unsupported` (with the reason) when the C++ scanner cannot run it."""
    parsed = sre_parse.parse(pattern)
    flags = parsed.state.flags
    if flags & ~_ALLOWED_FLAGS:
        raise Unsupported("flags other than DOTALL and VERBOSE")
    dotall = bool(flags & re.DOTALL)
    data = list(parsed.data)
    if len(data) == 1 and data[0][0] is sre_c.BRANCH:
        alternatives = data[0][1][1]
    else:
        alternatives = [data]
    branches: List[Branch] = [LiteralBranch(s) for s in specials]
    branches += [_branch(alt, dotall) for alt in alternatives]
    return Program(tuple(branches), _separators(branches))


def _separators(branches: Sequence[Branch]) -> str:
    def can_be_in_token(ch: str) -> bool:
        """Could a token start before `ch` and end after it?"""
        for b in branches:
            if isinstance(b, LiteralBranch) and ch in b.text:
                return True
            # A class matched once ends right after `ch`; only runs can span it.
            if isinstance(b, ClassBranch) and b.max_repeat != 1 and b.cls.matches(ch):
                return True
        return False

    return "".join(ch for ch in _SEPARATOR_CANDIDATES if not can_be_in_token(ch))


def try_compile(pattern: str, specials: Sequence[str]) -> Tuple[Optional[Program], Optional[str]]:
    try:
        return compile_program(pattern, specials), None
    except Unsupported as exc:
        return None, str(exc)
