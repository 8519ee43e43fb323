"""What the user brings, resolved into a stream of text.

A corpus spec is a list of paths (files and folders of UTF-8 text, or
WhatsApp exports), a named public-domain dataset (``quijote``), or nothing,
which means the embedded default (this Python's own docstrings, offline).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

from gptfast.data import named
from gptfast.data.default_corpus import DEFAULT_CORPUS_NAME, default_corpus
from gptfast.data.text import iter_text_chunks, list_text_files, read_text
from gptfast.data.whatsapp import looks_like_whatsapp
from gptfast.errors import InputError

FORMATS = ("auto", "text", "whatsapp")
# Streaming granularity.  Preparing holds about 15x one piece at its peak (the
# read buffers, the str, its UTF-8 copy for the C++ scanner, the ids), so
# 4 MB pieces keep it near 70 MB whatever the corpus size; larger pieces are
# no faster (measured: 2-16 MB pieces encode at the same speed).
DEFAULT_CHUNK_BYTES = 4 << 20


@dataclass
class CorpusSource:
    name: str                       # for output folders and messages
    files: List[Path] = field(default_factory=list)
    embedded: bool = False          # the built-in default corpus

    def describe(self) -> str:
        if self.embedded:
            return f"embedded default corpus '{DEFAULT_CORPUS_NAME}'"
        if len(self.files) == 1:
            return str(self.files[0])
        return f"{len(self.files)} files ({self.files[0]}, ...)"

    def fingerprint(self) -> list:
        """What identifies this input for 'is the prepared dataset stale?'."""
        if self.embedded:
            import sys

            return [["embedded", DEFAULT_CORPUS_NAME, sys.version.split()[0]]]
        out = []
        for p in self.files:
            st = p.stat()
            out.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
        return out

    def total_bytes(self) -> int:
        if self.embedded:
            return len(default_corpus().encode("utf-8"))
        return sum(p.stat().st_size for p in self.files)


def resolve(specs: Optional[Sequence[str]]) -> CorpusSource:
    """Paths win over dataset names: a local file called 'quijote' is used as is."""
    specs = [str(s) for s in (specs or [])]
    if not specs:
        return CorpusSource(name=DEFAULT_CORPUS_NAME, embedded=True)
    if len(specs) == 1 and not os.path.exists(specs[0]) and named.is_named_dataset(specs[0]):
        path = named.fetch(specs[0].strip().lower())
        return CorpusSource(name=specs[0].strip().lower(), files=[path])
    files = list_text_files(specs)
    first = Path(specs[0])
    name = first.stem if first.is_file() else first.resolve().name
    return CorpusSource(name=name or "corpus", files=files)


def detect_format(source: CorpusSource, errors: str = "strict") -> str:
    """'whatsapp' when the first file looks like a chat export, else 'text'."""
    if source.embedded:
        return "text"
    with open(source.files[0], "rb") as f:
        head = f.read(64 << 10)
    # Cut at the last newline so a multi-byte character is never split.
    cut = head.rfind(b"\n")
    head = head[: cut + 1] if cut > 0 else head
    return "whatsapp" if looks_like_whatsapp(head.decode("utf-8", errors="replace")) else "text"


def iter_chunks(source: CorpusSource, errors: str = "strict", chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[str]:
    """The corpus as text pieces that each end at a line break, file by file
    (every file is made to end with a newline, as `read_texts` does)."""
    if source.embedded:
        text = default_corpus()
        start = 0
        while start < len(text):
            end = text.find("\n", start + chunk_bytes)
            end = len(text) if end < 0 else end + 1
            yield text[start:end]
            start = end
        return
    for path in source.files:
        last = ""
        for piece in iter_text_chunks(path, chunk_bytes, errors):
            yield piece
            last = piece or last
        if last and not last.endswith("\n"):
            yield "\n"


def read_all(source: CorpusSource, errors: str = "strict") -> str:
    if source.embedded:
        return default_corpus()
    parts = []
    for path in source.files:
        text = read_text(path, errors)
        parts.append(text if not text or text.endswith("\n") else text + "\n")
    return "".join(parts)


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise InputError(f"unknown corpus format {fmt!r}; expected one of {', '.join(FORMATS)}")
