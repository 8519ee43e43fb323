"""Printing generated text as it comes, without ever printing text that a
later token would change.

Word-level detokenization looks one token ahead (an apostrophe between two
words hugs both) and decides each token's leading space from its neighbours,
so the text of the newest token is not final until the next one arrives.
`TextStream` therefore holds back the newest token's piece (and any partial
stop string) and prints the rest; `finish` prints what is left.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, TextIO


class TextStream:
    def __init__(self, decode: Callable[[List[int]], str], out: TextIO, stop_strings: Sequence[str] = (),
                 vocab: Optional[Sequence[str]] = None):
        self.decode = decode
        self.out = out
        self.stop_strings = [s for s in stop_strings if s]
        self.vocab = vocab
        self.tokens: List[int] = []
        self.printed = ""
        self.stopped = False   # a stop string was reached: nothing more is printed

    def _visible(self, text: str) -> str:
        """`text` cut before the first stop string (and `stopped` set)."""
        cuts = [i for i in (text.find(s) for s in self.stop_strings) if i >= 0]
        if cuts:
            self.stopped = True
            return text[: min(cuts)]
        return text

    def _emit(self, text: str) -> None:
        if text.startswith(self.printed) and len(text) > len(self.printed):
            self.out.write(text[len(self.printed):])
            self.out.flush()
            self.printed = text

    def feed(self, new_tokens: Sequence[int]) -> None:
        if self.stopped or not new_tokens:
            return
        self.tokens.extend(int(t) for t in new_tokens)
        text = self._visible(self.decode(self.tokens))
        if self.stopped:
            self._emit(text)
            return
        # Hold back the newest token's piece (at most its text, a space and a
        # line break) and the longest prefix of a stop string at the end.
        last = self.decode(self.tokens[-1:])
        hold = len(last) + 2
        for s in self.stop_strings:
            hold = max(hold, len(s) - 1)
        self._emit(text[: max(0, len(text) - hold)])

    def finish(self, final_text: Optional[str] = None) -> str:
        """Print the rest; `final_text` (the engine's own cut text) wins when given."""
        text = final_text if final_text is not None else self._visible(self.decode(self.tokens))
        self._emit(text)
        return text
