"""Turning a prompt and its generated tokens into the text a user sees, at
once (`render`) or as the tokens come (`TextStream`).

The prompt is decoded together with the new tokens: word-level decoding puts
the space between two words, so decoding them apart would glue the first new
word to the prompt.  Stop strings are looked for in the new text only.

Word-level detokenization also looks one token ahead (an apostrophe between
two words hugs both) and decides each token's leading space from its
neighbours, so the text of the newest token is not final until the next one
arrives.  `TextStream` therefore holds back the newest token's piece (and any
partial stop string) and prints the rest; `finish` prints what is left.
"""
from __future__ import annotations

from typing import Callable, List, Sequence, TextIO, Tuple

Decode = Callable[[List[int]], str]


def render(decode: Decode, context: Sequence[int], tokens: Sequence[int],
           stop_strings: Sequence[str] = ()) -> Tuple[str, bool]:
    """(decode(context + tokens) cut before the first stop string found after
    the context's text, whether one was found)."""
    start = len(decode(list(context))) if context else 0
    text = decode(list(context) + list(tokens))
    cuts = [i for i in (text.find(s, start) for s in stop_strings if s) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


class TextStream:
    """Prints render(decode, context, tokens so far) incrementally to `out`,
    the context's text included."""

    def __init__(self, decode: Decode, out: TextIO, stop_strings: Sequence[str] = (),
                 context: Sequence[int] = ()):
        self.decode = decode
        self.out = out
        self.stop_strings = [s for s in stop_strings if s]
        self.context = list(context)
        self.tokens: List[int] = []
        self.printed = ""
        self.stopped = False   # a stop string was reached: nothing more is printed

    def _emit(self, text: str) -> None:
        if text.startswith(self.printed) and len(text) > len(self.printed):
            self.out.write(text[len(self.printed):])
            self.out.flush()
            self.printed = text

    def feed(self, new_tokens: Sequence[int]) -> None:
        if self.stopped or not new_tokens:
            return
        self.tokens.extend(int(t) for t in new_tokens)
        text, self.stopped = render(self.decode, self.context, self.tokens, self.stop_strings)
        if self.stopped:
            self._emit(text)
            return
        # Hold back the newest token's piece (at most its text, a space and a
        # line break) and the longest prefix of a stop string at the end.
        hold = len(self.decode(self.tokens[-1:])) + 2
        for s in self.stop_strings:
            hold = max(hold, len(s) - 1)
        self._emit(text[: max(0, len(text) - hold)])

    def finish(self) -> str:
        """Print the rest; returns the whole text shown."""
        text, _ = render(self.decode, self.context, self.tokens, self.stop_strings)
        self._emit(text)
        return text
