"""Reference tokenization: Python `re` + a dict, as the seeds do it.

This is the readable ground truth that the C++ scanner in csrc/ is held to.
A token is what ``re.finditer(SPECIALS | PATTERN, text)`` yields: at each
position the special tokens are tried first, in list order, then the
pattern's branches in order; where nothing matches the character is skipped.
Character level is the same with PATTERN = "any single character".
"""
from __future__ import annotations

import re
from array import array
from collections import Counter
from typing import Iterable, List, Optional, Sequence

import numpy as np

# The seed pattern (lad-gpt): a digit, a run of word characters, or any other
# single non-space character.  Whitespace separates tokens and is dropped.
DEFAULT_WORD_PATTERN = r"\d|\w+|[^\s]"
# Char level: every character is a token, newlines included.
CHAR_PATTERN = r"(?s:.)"


# Global inline flags such as "(?s)" or "(?x)" must open the whole regex, so
# a pattern that starts with them is rewritten as a scoped group "(?s:...)".
_LEADING_FLAGS = re.compile(r"^\(\?([aiLmsux]+)\)")


def token_regex(pattern: str, specials: Sequence[str]) -> "re.Pattern[str]":
    """Specials first (escaped, in list order), then the user's pattern."""
    m = _LEADING_FLAGS.match(pattern)
    if m:
        # In verbose mode a trailing comment would swallow the ")": end the line first.
        tail = "\n" if "x" in m.group(1) else ""
        body = f"(?{m.group(1)}:{pattern[m.end():]}{tail})"
    else:
        body = f"(?:{pattern})"
    return re.compile("|".join([re.escape(s) for s in specials] + [body]))


def split_tokens(text: str, pattern: str, specials: Sequence[str] = ()) -> List[str]:
    """Every non-empty match (a pattern that can match "" would otherwise
    yield empty tokens between characters)."""
    rx = token_regex(pattern, specials)
    if rx.groups == 0:
        return [t for t in rx.findall(text) if t]
    return [m.group(0) for m in rx.finditer(text) if m.end() > m.start()]


def count_tokens(text: str, pattern: str, specials: Sequence[str] = ()) -> Counter:
    return Counter(split_tokens(text, pattern, specials))


class UnknownToken(Exception):
    """A token missing from a vocabulary without <UNK>; `position` counts characters."""

    def __init__(self, token: str, position: int):
        super().__init__(token, position)
        self.token = token
        self.position = position


def encode(
    text: str,
    pattern: str,
    specials: Sequence[str],
    stoi: dict,
    unk_id: Optional[int],
) -> np.ndarray:
    rx = token_regex(pattern, specials)
    ids = array("i")   # 4 bytes per id (a list holds 8-byte pointers): prepare's memory bound
    for m in rx.finditer(text):
        if m.end() == m.start():
            continue  # empty match: no token
        tid = stoi.get(m.group(0), unk_id)
        if tid is None:
            raise UnknownToken(m.group(0), m.start())
        ids.append(tid)
    return np.frombuffer(ids, dtype=np.int32) if ids else np.zeros(0, np.int32)   # no copy


def decode_chars(ids: Iterable[int], itos: Sequence[str]) -> str:
    return "".join(itos[i] for i in ids)
