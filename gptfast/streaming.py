"""Turning a prompt and its generated tokens into the text a user sees, at
once (`render`) or as the tokens come (`TextStream`).

The prompt is decoded together with the new tokens: word-level decoding puts
the space between two words, so decoding them apart would glue the first new
word to the prompt.  Stop strings are looked for in the new text only.

Word-level detokenization looks one token ahead (an apostrophe between two
words hugs both), so the text of the newest token is not final until the
next one arrives.  `TextStream` prints only final text, less the longest
partial stop string at its end, from a stream decoder (Tokenizer.stream_decoder):
each token costs the same however long the stream has run.
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
    """Prints render(tokenizer.decode, context, tokens so far) incrementally
    to `out`, the context's text included; `decoder` is a fresh
    tokenizer.stream_decoder()."""

    def __init__(self, decoder, out: TextIO, stop_strings: Sequence[str] = (), context: Sequence[int] = ()):
        self.decoder = decoder
        self.out = out
        self.stop_strings = [s for s in stop_strings if s]
        # A stop string that begins in the final text may end in text still to
        # come: this many final characters wait before they are printed.
        self.hold = max((len(s) - 1 for s in self.stop_strings), default=0)
        self.shown: List[str] = []            # what was printed, in pieces
        self.unprinted = decoder.add(context)  # final text not printed yet, from offset `printed`
        self.printed = 0
        self.start = len(self.unprinted) + len(decoder.pending())   # where the new text begins
        self.stopped = False   # a stop string was reached: nothing more is printed

    def _emit(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()
            self.shown.append(text)
            self.printed += len(text)

    def _cut_at_stop(self, text: str) -> int:
        """Where in `text` (which begins at offset `printed`) the first stop
        string after the context begins, or -1."""
        begin = max(0, self.start - self.printed)
        cuts = [i for i in (text.find(s, begin) for s in self.stop_strings) if i >= 0]
        return min(cuts) if cuts else -1

    def feed(self, new_tokens: Sequence[int]) -> None:
        if self.stopped or not len(new_tokens):
            return
        self.unprinted += self.decoder.add(new_tokens)
        text = self.unprinted + self.decoder.pending()
        cut = self._cut_at_stop(text) if self.stop_strings else -1
        if cut >= 0:
            self.stopped = True
            self._emit(text[:cut])
            self.unprinted = ""
            return
        ready = max(0, len(self.unprinted) - self.hold)
        self._emit(self.unprinted[:ready])
        self.unprinted = self.unprinted[ready:]

    def finish(self) -> str:
        """Print the rest; returns the whole text shown."""
        if not self.stopped:
            text = self.unprinted + self.decoder.pending()
            cut = self._cut_at_stop(text) if self.stop_strings else -1
            self._emit(text if cut < 0 else text[:cut])
            self.unprinted, self.stopped = "", True
        return "".join(self.shown)
