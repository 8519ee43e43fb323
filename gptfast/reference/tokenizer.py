"""Reference tokenization: Python `re` + a dict, as the seeds do it.

This is the readable ground truth that the C++ scanner in csrc/ is held to.
A token is what ``re.finditer(SPECIALS | PATTERN, text)`` yields: at each
position the special tokens are tried first, in list order, then the
pattern's branches in order; where nothing matches the character is skipped.
Character level is the same with PATTERN = "any single character".
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, List, Optional, Sequence

import numpy as np

# The seed pattern (lad-gpt): a digit, a run of word characters, or any other
# single non-space character.  Whitespace separates tokens and is dropped.
DEFAULT_WORD_PATTERN = r"\d|\w+|[^\s]"
# Char level: every character is a token, newlines included.
CHAR_PATTERN = r"(?s:.)"


def token_regex(pattern: str, specials: Sequence[str]) -> "re.Pattern[str]":
    """Specials first (escaped, in list order), then the user's pattern."""
    alternatives = [re.escape(s) for s in specials] + [f"(?:{pattern})"]
    return re.compile("|".join(alternatives))


def split_tokens(text: str, pattern: str, specials: Sequence[str] = ()) -> List[str]:
    rx = token_regex(pattern, specials)
    if rx.groups == 0:
        return rx.findall(text)
    return [m.group(0) for m in rx.finditer(text)]  # user pattern has groups


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
    ids: List[int] = []
    for m in rx.finditer(text):
        tid = stoi.get(m.group(0), unk_id)
        if tid is None:
            raise UnknownToken(m.group(0), m.start())
        ids.append(tid)
    return np.asarray(ids, dtype=np.int32)


def decode_chars(ids: Iterable[int], itos: Sequence[str]) -> str:
    return "".join(itos[i] for i in ids)
