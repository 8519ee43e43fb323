"""The LitteraGPT recipe: shuffle fixed-size chunks of sentences before the
train/validation split, so validation text comes from all over the corpus
(every book, every chapter) instead of only its last tenth."""
from __future__ import annotations

import random
import re

# A sentence ends at . ! ? or … followed by whitespace; the whitespace stays
# with the sentence so that joining shuffled chunks never glues two words.
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


def split_sentences(text: str) -> list:
    cuts = [m.end() for m in _SENTENCE_END.finditer(text)]
    bounds = [0] + cuts + ([len(text)] if not cuts or cuts[-1] != len(text) else [])
    return [text[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def shuffle_sentence_chunks(text: str, sentences_per_chunk: int, seed: int) -> str:
    """Cut `text` into chunks of `sentences_per_chunk` sentences and return
    them in a seeded random order (the same seed gives the same text)."""
    if sentences_per_chunk < 1:
        raise ValueError("sentences_per_chunk must be >= 1")
    sentences = split_sentences(text)
    chunks = ["".join(sentences[i : i + sentences_per_chunk]) for i in range(0, len(sentences), sentences_per_chunk)]
    if chunks and not chunks[-1][-1:].isspace():
        chunks[-1] += "\n"  # the last chunk may land mid-text after shuffling
    random.Random(seed).shuffle(chunks)
    return "".join(chunks)
