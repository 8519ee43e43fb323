"""Character-level and regex word-level tokenizers: one API, two backends.

    tok = Tokenizer.fit(text, kind="word", specials=["Ana:", "<END>"], min_count=2)
    ids = tok.encode(text)          # numpy int32 array
    tok.decode(ids[:50])            # readable text
    tok.save("tokenizer.json"); Tokenizer.load("tokenizer.json")

The fast path is the C++ scanner (`gptfast._C.Scanner`); the reference is
Python's `re` + a dict (`gptfast.reference.tokenizer`).  Both give identical
ids.  Patterns outside the scanner's subset (see `gptfast.token_program`)
run on the reference with one warning.  ``GPTFAST_REFERENCE=1`` forces the
reference.

Vocabulary order: special tokens first (in the order given), then ``<UNK>``
when there is one, then characters sorted by code point (char level, as the
seeds' ``sorted(set(text))``) or words by decreasing count, ties sorted.
"""
from __future__ import annotations

import json
import os
import re
import warnings
from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np

from gptfast import _backend
from gptfast.detokenize import Detokenizer, detokenize
from gptfast.errors import InputError
from gptfast.reference import tokenizer as ref
from gptfast.token_program import try_compile

DEFAULT_WORD_PATTERN = ref.DEFAULT_WORD_PATTERN
CHAR_PATTERN = ref.CHAR_PATTERN
UNK_TOKEN = "<UNK>"
KINDS = ("char", "word")
FORMAT = "gptfast.tokenizer"
BACKENDS = ("auto", "cpp", "reference")

_warned_patterns: set = set()


def default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


class Tokenizer:
    def __init__(
        self,
        kind: str,
        vocab: Sequence[str],
        specials: Sequence[str] = (),
        pattern: Optional[str] = None,
        unk_token: Optional[str] = None,
        line_breaks: Sequence[str] = (),
        backend: str = "auto",
    ):
        if kind not in KINDS:
            raise ValueError(f"tokenizer kind must be one of {KINDS}, got {kind!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if any(not s for s in specials):
            raise ValueError("special tokens must be non-empty strings")
        self.kind = kind
        self.vocab: List[str] = list(vocab)
        self.specials: List[str] = list(specials)
        self.pattern = CHAR_PATTERN if kind == "char" else (pattern or DEFAULT_WORD_PATTERN)
        self.unk_token = unk_token
        self.line_breaks: List[str] = list(line_breaks)
        self.stoi: Dict[str, int] = {t: i for i, t in enumerate(self.vocab)}
        if len(self.stoi) != len(self.vocab):
            raise ValueError("the vocabulary has duplicate tokens")
        missing = [s for s in self.specials + ([unk_token] if unk_token else []) if s not in self.stoi]
        if missing:
            raise ValueError(f"special tokens missing from the vocabulary: {missing}")
        self.unk_id: Optional[int] = self.stoi[unk_token] if unk_token else None
        try:
            ref.token_regex(self.pattern, self.specials)
        except re.error as exc:
            raise ValueError(f"invalid tokenizer pattern {self.pattern!r}: {exc}") from None
        # The C++ scanner reads UTF-8; a token holding a lone surrogate has none.
        encodable = all(_encodable(t) for t in self.vocab)
        self._scanner = _make_scanner(self.pattern, self.specials, backend) if encodable else None
        if self._scanner is not None:
            self._scanner.set_vocab(self.vocab, -1 if self.unk_id is None else self.unk_id)

    # ------------------------------------------------------------------ fit
    @classmethod
    def fit(
        cls,
        texts: Union[str, Iterable[str]],
        kind: str = "char",
        specials: Sequence[str] = (),
        min_count: int = 1,
        pattern: Optional[str] = None,
        unk_token: Optional[str] = "default",
        line_breaks: Sequence[str] = (),
        backend: str = "auto",
        threads: Optional[int] = None,
    ) -> "Tokenizer":
        """Build the vocabulary from a text or an iterable of text chunks.

        Tokens seen fewer than `min_count` times are left out and encode as
        the unknown token.  `unk_token="default"` means ``<UNK>`` for word
        level (unseen words are normal at inference) and, for char level,
        ``<UNK>`` only when `min_count` left characters out.
        """
        if min_count < 1:
            raise ValueError("min_count must be >= 1")
        counter = cls(kind, list(specials), specials, pattern, None, backend=backend)
        counts: Counter = Counter()
        for chunk in [texts] if isinstance(texts, str) else texts:
            counts.update(counter.count(chunk, threads=threads))
        for s in specials:
            counts.pop(s, None)
        kept = [t for t, c in counts.items() if c >= min_count]
        if kind == "char":
            kept.sort()
        else:
            kept.sort(key=lambda t: (-counts[t], t))
        if unk_token == "default":
            unk_token = UNK_TOKEN if (kind == "word" or len(kept) < len(counts)) else None
        head = list(specials) + ([unk_token] if unk_token and unk_token not in specials else [])
        kept = [t for t in kept if t not in head]
        return cls(kind, head + kept, specials, pattern, unk_token, line_breaks, backend)

    # ------------------------------------------------------------- encoding
    @property
    def backend(self) -> str:
        return "cpp" if self._scanner is not None else "reference"

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def split(self, text: str) -> List[str]:
        """The token strings of `text` (no vocabulary involved)."""
        tokens = self._scan("split", text)
        if tokens is not None:
            return tokens
        return ref.split_tokens(text, self.pattern, self.specials)

    def unknown_words(self, text: str) -> List[str]:
        """The tokens of `text` that the vocabulary lacks, once each in order
        of appearance: what `encode` turns into ``<UNK>`` (or rejects, when
        there is no unknown token)."""
        return list(dict.fromkeys(t for t in self.split(text) if t not in self.stoi))

    def count(self, text: str, threads: Optional[int] = None) -> Dict[str, int]:
        counts = self._scan("count", text, threads or default_threads())
        if counts is not None:
            return counts
        return dict(ref.count_tokens(text, self.pattern, self.specials))

    def encode(
        self,
        text: str,
        threads: Optional[int] = None,
        source: Optional[str] = None,
        dtype: Optional[np.dtype] = None,
    ) -> np.ndarray:
        """Token ids as an int32 array (``dtype=np.uint16`` for vocabularies up
        to 65536 halves the memory; the C++ path writes it directly).  A token
        missing from a vocabulary without ``<UNK>`` raises `InputError` naming
        `source` and the character position."""
        dtype = np.dtype(np.int32 if dtype is None else dtype)
        if dtype not in (np.dtype(np.int32), np.dtype(np.uint16)):
            raise ValueError(f"dtype must be int32 or uint16, got {dtype}")
        if dtype == np.uint16 and self.vocab_size > 1 << 16:
            raise ValueError(f"a vocabulary of {self.vocab_size} tokens does not fit in uint16")
        scanned = self._scan("encode", text, threads or default_threads(), dtype == np.uint16)
        if scanned is not None:
            ids, unknown = scanned
            if unknown is not None:
                self._raise_unknown(unknown[1], unknown[0], source)
            return ids
        try:
            return ref.encode(text, self.pattern, self.specials, self.stoi, self.unk_id).astype(dtype, copy=False)
        except ref.UnknownToken as exc:
            self._raise_unknown(exc.token, exc.position, source)

    def can_stream(self) -> bool:
        """Whether encoding a text piece by piece, cut right after newlines,
        gives the same ids as encoding it whole (no token can span a "\n")."""
        program, _ = try_compile(self.pattern, self.specials)
        return program is not None and "\n" in program.separators

    def _scan(self, method: str, text: str, *args):
        """The C++ scanner's `method` on `text`, or None without a scanner or
        when `text` has lone surrogates (no UTF-8: the reference takes it).
        Asking is cheaper than checking first: the scanner reads the UTF-8
        that CPython caches in the str, while a check by encoding would copy
        the whole text on every call (24 ms of a 20 MB encode)."""
        if self._scanner is None:
            return None
        try:
            return getattr(self._scanner, method)(text, *args)
        except UnicodeEncodeError:
            return None

    def _raise_unknown(self, token: str, position: int, source: Optional[str]):
        what = f"character {token!r} (U+{ord(token):04X})" if len(token) == 1 else f"token {token!r}"
        raise InputError(
            f"{what} is not in the tokenizer's vocabulary, which has no {UNK_TOKEN}; "
            "use only characters the model was trained on",
            path=source or "<text>",
            position=f"character {position}",
        )

    def decode(self, ids: Iterable[int]) -> str:
        tokens = [self.vocab[int(i)] for i in ids]
        if self.kind == "char":
            return "".join(tokens)
        return detokenize(tokens, self.line_breaks)

    def stream_decoder(self) -> "StreamDecoder":
        """Decodes ids as they come, in O(1) per id: `add(ids)` returns the
        text that became final, `pending()` the rest of decode(all ids so far)."""
        return StreamDecoder(self.vocab, None if self.kind == "char" else Detokenizer(self.line_breaks))

    # -------------------------------------------------------- serialization
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": 1,
            "kind": self.kind,
            "pattern": self.pattern if self.kind == "word" else None,
            "specials": self.specials,
            "unk_token": self.unk_token,
            "line_breaks": self.line_breaks,
            "vocab": self.vocab,
        }

    @classmethod
    def from_dict(cls, d: dict, source: str = "<tokenizer>", backend: str = "auto") -> "Tokenizer":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise InputError(f"not a gptfast tokenizer (expected \"format\": \"{FORMAT}\")", path=source)
        def is_str_list(v) -> bool:
            return isinstance(v, list) and all(isinstance(t, str) for t in v)

        for name in ("vocab", "specials", "line_breaks"):
            if name in d and not is_str_list(d[name]):
                raise InputError(f"invalid tokenizer: {name!r} must be a list of strings", path=source)
        for name in ("pattern", "unk_token"):
            if d.get(name) is not None and not isinstance(d[name], str):
                raise InputError(f"invalid tokenizer: {name!r} must be a string or null", path=source)
        try:
            return cls(
                d["kind"], d["vocab"], d.get("specials", []), d.get("pattern"),
                d.get("unk_token"), d.get("line_breaks", []), backend,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"invalid tokenizer: {exc}", path=source) from None

    def save(self, path: Union[str, Path]) -> None:
        from gptfast.io_utils import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=1))

    @classmethod
    def load(cls, path: Union[str, Path], backend: str = "auto") -> "Tokenizer":
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError("no such file", path=str(path)) from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"not a JSON tokenizer file ({exc})", path=str(path)) from None
        return cls.from_dict(d, source=str(path), backend=backend)

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, specials={len(self.specials)}, backend={self.backend!r})"


def _encodable(text: str) -> bool:
    """The C++ path reads UTF-8; a str with lone surrogates has none."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _make_scanner(pattern: str, specials: Sequence[str], backend: str):
    if backend == "reference":
        return None
    native = _backend.extension() if backend == "auto" else _backend._C
    if native is None:
        if backend == "cpp":
            raise RuntimeError("backend='cpp' asked for, but gptfast._C is not available")
        return None
    program, reason = try_compile(pattern, specials)
    if program is None:
        if backend == "cpp":
            raise ValueError(f"pattern {pattern!r} is outside the C++ scanner's subset: {reason}")
        if pattern not in _warned_patterns:
            _warned_patterns.add(pattern)
            warnings.warn(
                f"gptfast: tokenizer pattern {pattern!r} is not supported by the C++ scanner "
                f"({reason}); using the Python reference (slower). See gptfast/token_program.py.",
                RuntimeWarning,
                stacklevel=3,
            )
        return None
    return native.Scanner(program.as_tuples(), program.separators)


class StreamDecoder:
    """Tokenizer.stream_decoder(): characters are final at once; words wait
    for the next word (see gptfast.detokenize)."""

    def __init__(self, vocab: Sequence[str], words: Optional[Detokenizer]):
        self.vocab = vocab
        self.words = words

    def add(self, ids: Iterable[int]) -> str:
        tokens = [self.vocab[int(i)] for i in ids]
        return self.words.add(tokens) if self.words is not None else "".join(tokens)

    def pending(self) -> str:
        return self.words.pending() if self.words is not None else ""
