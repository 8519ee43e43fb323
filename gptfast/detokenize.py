"""Readable text from word-level tokens.

Word-level tokenization drops whitespace, so decoding must put spaces back:
a space between tokens, except before closing punctuation, after opening
punctuation (including Spanish ``¿ ¡``), between the digits of a number
(the seed pattern splits numbers into single digits), and around an
apostrophe inside a word (``don't``).  Straight double quotes alternate
between opening and closing.  Tokens listed in ``line_breaks`` (the chat
recipe's ``<END>``) end a line.
"""
from __future__ import annotations

from typing import Iterable, Sequence

NO_SPACE_BEFORE = frozenset(".,;:!?)]}»…%”’")
NO_SPACE_AFTER = frozenset("¿¡([{«“‘")
APOSTROPHES = frozenset("'’")


def _is_word(token: str) -> bool:
    return bool(token) and (token[-1].isalnum() or token[-1] == "_")


def detokenize(tokens: Sequence[str], line_breaks: Iterable[str] = ()) -> str:
    line_breaks = frozenset(line_breaks)
    out: list = []
    prev = ""
    open_quote = False
    for i, tok in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        space = bool(out) and not out[-1].endswith("\n")
        if tok in NO_SPACE_BEFORE or prev in NO_SPACE_AFTER:
            space = False
        elif tok.isdigit() and prev.isdigit():
            space = False
        elif tok in APOSTROPHES and _is_word(prev) and _is_word(nxt):
            space = False
        elif prev in APOSTROPHES and _is_word(tok) and i >= 2 and _is_word(tokens[i - 2]):
            space = False
        elif tok == '"':
            space = space and not open_quote  # a closing quote hugs the word before it
        elif prev == '"' and open_quote:
            space = False  # an opening quote hugs the word after it
        if tok == '"':
            open_quote = not open_quote
        out.append((" " if space else "") + tok)
        if tok in line_breaks:
            out.append("\n")
        prev = tok
    return "".join(out)
