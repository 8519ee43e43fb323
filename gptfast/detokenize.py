"""Readable text from word-level tokens, all at once or as they come.

Word-level tokenization drops whitespace, so decoding must put spaces back:
a space between tokens, except before closing punctuation, after opening
punctuation (including Spanish ``¿ ¡``), between the digits of a number
(the seed pattern splits numbers into single digits), and around an
apostrophe inside a word (``don't``).  Straight double quotes alternate
between opening and closing.  Tokens listed in ``line_breaks`` (the chat
recipe's ``<END>``) end a line.

A token's piece of text (its leading space, itself, its line break) depends
on the two tokens before it, the one after it, whether a quote is open and
whether the text so far ends a line.  So `Detokenizer` turns a token's piece
final as soon as the next token arrives, and a stream of n tokens costs O(n),
not the O(n^2) of decoding everything again for each token.
"""
from __future__ import annotations

from typing import Iterable, Sequence

NO_SPACE_BEFORE = frozenset(".,;:!?)]}»…%”’")
NO_SPACE_AFTER = frozenset("¿¡([{«“‘")
APOSTROPHES = frozenset("'’")


def _is_word(token: str) -> bool:
    return bool(token) and (token[-1].isalnum() or token[-1] == "_")


class Detokenizer:
    """Word-level tokens in, text out: `add` returns the text that became
    final; `pending` is the text of the newest token as it would read if the
    stream ended now.  All the `add` results plus `pending()` equal
    `detokenize` of all the tokens."""

    def __init__(self, line_breaks: Iterable[str] = ()):
        self.line_breaks = frozenset(line_breaks)
        # The unfinished token (None before the first) and the two before it.
        self.before2, self.prev, self.newest = "", "", None
        self.open_quote = False       # an opening straight quote has no closing one yet
        self.at_line_start = True     # nothing written yet, or the text ends a line

    def _piece(self, before2: str, prev: str, tok: str, nxt: str) -> str:
        """The text of `tok` between `prev` (and `before2` before it) and `nxt`."""
        space = not self.at_line_start
        if tok in NO_SPACE_BEFORE or prev in NO_SPACE_AFTER:
            space = False
        elif tok.isdigit() and prev.isdigit():
            space = False
        elif tok in APOSTROPHES and _is_word(prev) and _is_word(nxt):
            space = False
        elif prev in APOSTROPHES and _is_word(tok) and _is_word(before2):
            space = False
        elif tok == '"':
            space = space and not self.open_quote  # a closing quote hugs the word before it
        elif prev == '"' and self.open_quote:
            space = False  # an opening quote hugs the word after it
        return (" " if space else "") + tok + ("\n" if tok in self.line_breaks else "")

    def _finish_newest(self, nxt: str) -> str:
        """The piece of the unfinished token now that `nxt` follows it (or
        nothing does: ""), with the state moved past it."""
        tok = self.newest
        piece = self._piece(self.before2, self.prev, tok, nxt)
        if tok == '"':
            self.open_quote = not self.open_quote
        self.at_line_start = piece.endswith("\n")
        return piece

    def add(self, tokens: Sequence[str]) -> str:
        out = []
        for tok in tokens:
            if self.newest is not None:
                out.append(self._finish_newest(tok))
                self.before2, self.prev = self.prev, self.newest
            self.newest = tok
        return "".join(out)

    def pending(self) -> str:
        if self.newest is None:
            return ""
        state = (self.open_quote, self.at_line_start)
        piece = self._finish_newest("")
        self.open_quote, self.at_line_start = state
        return piece


def detokenize(tokens: Sequence[str], line_breaks: Iterable[str] = ()) -> str:
    d = Detokenizer(line_breaks)
    return d.add(tokens) + d.pending()
