"""Token datasets: a corpus turned into memory-mapped token ids.

A dataset directory holds

    train.bin, val.bin   token ids, uint16 when the vocabulary fits, else uint32
    meta.json            tokenizer, specials, contacts, split, statistics, and
                         the key (source fingerprint + options) that tells
                         whether it is stale

Preparing streams the corpus in pieces cut after newlines: one pass counts
tokens to fit the vocabulary, one pass encodes (the C++ tokenizer splits each
piece over threads) and appends ids to disk, so memory stays a small multiple
of the piece size whatever the corpus size.  Chat exports and shuffled
corpora are prepared in memory (they need the whole text at once).  Files
are written in a temporary folder and renamed into place at the end: an
error or Ctrl-C never damages a dataset already in `out_dir`.
"""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np

from gptfast.data import corpus as corpus_mod
from gptfast.data.chat import END_TOKEN, build_chat_corpus
from gptfast.data.shuffle import shuffle_sentence_chunks
from gptfast.data.text import check_not_empty, read_text
from gptfast.data.whatsapp import parse_whatsapp
from gptfast.errors import InputError
from gptfast.io_utils import atomic_write_text, fsync_dir
from gptfast.tokenizer import KINDS, Tokenizer

FORMAT = "gptfast.dataset"
VERSION = 1
SPLITS = ("train", "val")
_COPY_BLOCK = 1 << 24  # tokens per block when moving the validation tail


@dataclass
class PrepareOptions:
    tokenizer: Optional[str] = None   # "char" | "word"; None: word for chats, char otherwise
    format: str = "auto"              # "auto" | "text" | "whatsapp"
    val_fraction: float = 0.1         # the seeds' 90/10 split, validation at the end
    shuffle_sentences: int = 0        # > 0: shuffle chunks of this many sentences first
    seed: int = 1337
    lowercase: bool = False
    min_count_chars: int = 1          # rarer characters are dropped from the text
    min_count_tokens: int = 1         # rarer tokens become <UNK>
    pattern: Optional[str] = None     # word level regex (default: the seed's)
    specials: Sequence[str] = ()
    encoding_errors: str = "strict"   # "replace": undecodable bytes become U+FFFD
    threads: Optional[int] = None
    chunk_bytes: int = corpus_mod.DEFAULT_CHUNK_BYTES

    def validate(self) -> None:
        if self.tokenizer is not None and self.tokenizer not in KINDS:
            raise InputError(f"unknown tokenizer {self.tokenizer!r}; expected one of {', '.join(KINDS)}")
        corpus_mod.check_format(self.format)
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        for name in ("min_count_chars", "min_count_tokens"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.shuffle_sentences < 0:
            raise InputError(f"shuffle_sentences must be >= 0, got {self.shuffle_sentences}")
        if any(not s or "\n" in s for s in self.specials):
            raise InputError("special tokens must be non-empty and hold no newline")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise InputError(f"invalid word pattern '{self.pattern}' ({exc}); "
                                 "expected a Python regular expression") from None

    def key(self) -> dict:
        """The options that change the dataset (not threads or piece size)."""
        d = dataclasses.asdict(self)
        d["specials"] = list(self.specials)
        for k in ("threads", "chunk_bytes"):
            d.pop(k)
        return d


@dataclass
class DatasetInfo:
    path: Path
    meta: dict
    tokenizer: Tokenizer = field(repr=False)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.meta["dtype"])

    def tokens(self, split: str) -> np.ndarray:
        """The ids of one split as a read-only memory map."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}")
        n = self.meta["splits"][split]["tokens"]
        if n == 0:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(self.path / f"{split}.bin", dtype=self.dtype, mode="r", shape=(n,))

    def summary(self) -> str:
        m = self.meta
        st = m["stats"]
        tok = self.tokenizer
        lines = [
            f"dataset      {self.path}",
            f"source       {m['source']['description']} ({m['source']['format']})",
            f"text         {st['chars']:,} characters, {st['bytes']:,} bytes",
            f"tokenizer    {tok.kind} level, vocabulary {tok.vocab_size:,} "
            f"({len(tok.specials)} special tokens{', with ' + tok.unk_token if tok.unk_token else ''})",
            f"tokens       {st['tokens']:,} ({m['dtype']}): train {m['splits']['train']['tokens']:,}, "
            f"val {m['splits']['val']['tokens']:,}",
        ]
        if tok.unk_token:
            share = st["unk_tokens"] / max(1, st["tokens"])
            lines.append(f"unknown      {st['unk_tokens']:,} tokens became {tok.unk_token} ({share:.2%})")
        if m.get("contacts"):
            shown = ", ".join(m["contacts"][:8]) + (" ..." if len(m["contacts"]) > 8 else "")
            lines.append(f"contacts     {len(m['contacts'])}: {shown}")
        lines.append(f"prepared in  {st['seconds']:.2f} s ({st['bytes'] / 1e6 / max(st['seconds'], 1e-9):.1f} MB/s)")
        return "\n".join(lines)


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


# --------------------------------------------------------------------- load
def load_dataset(path: Union[str, Path]) -> DatasetInfo:
    path = Path(path)
    meta_path = path / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("not a prepared dataset (no meta.json); run python -m gptfast.prepare", path=str(path)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"corrupt dataset metadata ({exc})", path=str(meta_path)) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f'not a gptfast dataset (expected "format": "{FORMAT}")', path=str(meta_path))
    info = DatasetInfo(path, meta, Tokenizer.from_dict(meta.get("tokenizer"), source=str(meta_path)))
    try:
        sizes = {split: int(meta["splits"][split]["tokens"]) * info.dtype.itemsize for split in SPLITS}
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"corrupt dataset metadata (bad or missing splits/dtype: {exc!r}); "
                         "prepare the dataset again", path=str(meta_path)) from None
    # Ids are unsigned integers wide enough for the vocabulary; anything else
    # would be read as garbage ids (or ids past the embedding table).
    if (info.dtype not in (np.dtype(np.uint16), np.dtype(np.uint32))
            or np.iinfo(info.dtype).max < info.tokenizer.vocab_size - 1):
        raise InputError(f"corrupt dataset metadata (dtype {info.dtype} cannot hold the ids of a "
                         f"{info.tokenizer.vocab_size}-token vocabulary; expected uint16 or uint32); "
                         "prepare the dataset again", path=str(meta_path))
    for split, expected in sizes.items():
        f = path / f"{split}.bin"
        size = f.stat().st_size if f.exists() else -1
        if size != expected:
            raise InputError(f"{split}.bin holds {size} bytes, meta.json says {expected}; prepare the dataset again",
                             path=str(path))
    return info


def find_reusable(path: Union[str, Path], data: Optional[Sequence[str]], options: PrepareOptions) -> Optional[DatasetInfo]:
    """The dataset at `path` if it was prepared from the same, unchanged
    source with the same options; None when it must be prepared (again)."""
    try:
        info = load_dataset(path)
        source = corpus_mod.resolve(data)
        return info if info.meta.get("key") == _dataset_key(source, options) else None
    except (InputError, OSError, KeyError):
        return None


def _dataset_key(source: corpus_mod.CorpusSource, options: PrepareOptions) -> dict:
    return {"source": source.fingerprint(), "options": options.key()}


# ------------------------------------------------------------------ prepare
def prepare_dataset(
    data: Optional[Sequence[str]],
    out_dir: Union[str, Path],
    options: Optional[PrepareOptions] = None,
    log: Callable[[str], None] = lambda msg: None,
) -> DatasetInfo:
    """Turn a corpus (paths, a named dataset, or None for the embedded
    default) into a dataset directory; returns its `DatasetInfo`."""
    options = options or PrepareOptions()
    options.validate()
    t0 = time.perf_counter()
    source = corpus_mod.resolve(data)
    fmt = corpus_mod.detect_format(source) if options.format == "auto" else options.format
    kind = options.tokenizer or ("word" if fmt == "whatsapp" else "char")
    log(f"reading {source.describe()} as {fmt}, {kind}-level tokens")

    specials = list(options.specials)
    contacts: List[str] = []
    line_breaks: List[str] = []
    if fmt == "whatsapp":
        chat = _read_chat(source, options)
        contacts, line_breaks = chat.contacts, [END_TOKEN]
        specials = chat.specials + [s for s in specials if s not in chat.specials]
        pieces = _in_memory(chat.text)
    else:
        pieces = _text_pieces(source, options, kind, specials)

    tokenizer = Tokenizer.fit(
        pieces(), kind=kind, specials=specials, min_count=options.min_count_tokens,
        pattern=options.pattern, line_breaks=line_breaks, threads=options.threads,
    )
    log(f"vocabulary: {tokenizer.vocab_size:,} tokens")

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".prepare-", dir=out_dir))
    except OSError as err:  # a file in the way, no permission
        raise _write_error(err, out_dir) from None
    try:
        meta = _write_splits(work, pieces, tokenizer, options, log)
        meta.update(
            source={"name": source.name, "description": source.describe(), "format": fmt},
            key=_dataset_key(source, options),
            options=options.key(),
            contacts=contacts,
            specials=tokenizer.specials,
        )
        meta["stats"]["seconds"] = time.perf_counter() - t0
        # Everything is written (and may fail, e.g. a full disk) before the
        # first file in out_dir is touched.  Then: the old meta.json goes
        # first, ids next, metadata last, all renames: meta.json marks a
        # complete dataset, and a crash in between leaves a folder that
        # load_dataset refuses, never old metadata beside new ids.
        atomic_write_text(work / "meta.json", json.dumps(meta, ensure_ascii=False, indent=1))
        (out_dir / "meta.json").unlink(missing_ok=True)
        fsync_dir(out_dir)
        for split in SPLITS:
            (work / f"{split}.bin").replace(out_dir / f"{split}.bin")
        (work / "meta.json").replace(out_dir / "meta.json")
        fsync_dir(out_dir)
    except OSError as err:  # a full disk, a folder made read-only meanwhile
        raise _write_error(err, out_dir) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return DatasetInfo(out_dir, meta, tokenizer)


def _write_error(err: OSError, out_dir: Path) -> InputError:
    return InputError(f"cannot write the dataset ({err.strerror or err}); expected a writable folder "
                      "with free space", path=str(err.filename or out_dir))


def _read_chat(source: corpus_mod.CorpusSource, options: PrepareOptions):
    messages = []
    for path in source.files:
        messages += parse_whatsapp(read_text(path, options.encoding_errors), path=str(path))
    return build_chat_corpus(messages, lowercase=options.lowercase, min_count_chars=options.min_count_chars)


def _in_memory(text: str) -> Callable[[], Iterator[str]]:
    def pieces() -> Iterator[str]:
        yield text

    return pieces


def _text_pieces(source, options: PrepareOptions, kind: str, specials: Sequence[str]) -> Callable[[], Iterator[str]]:
    """A re-iterable stream of the corpus text with the options applied."""
    probe = Tokenizer(kind, list(specials), specials, options.pattern)
    streaming = options.shuffle_sentences == 0 and probe.can_stream()

    def raw() -> Iterator[str]:
        if streaming:
            yield from corpus_mod.iter_chunks(source, options.encoding_errors, options.chunk_bytes)
        else:
            yield corpus_mod.read_all(source, options.encoding_errors)

    lower = (lambda t: t.lower()) if options.lowercase else (lambda t: t)
    drop = None
    if options.min_count_chars > 1:  # one counting pass to find the rare characters
        counts: Counter = Counter()
        counter = Tokenizer("char", [])
        for piece in raw():
            counts.update(counter.count(lower(piece), threads=options.threads))
        rare = [c for c, n in counts.items() if n < options.min_count_chars and c not in "\n "]
        drop = str.maketrans("", "", "".join(rare)) if rare else None

    def transformed() -> Iterator[str]:
        for piece in raw():
            piece = lower(piece)
            yield piece.translate(drop) if drop else piece

    if streaming:
        _check_not_empty(transformed(), source)
        return transformed
    text = "".join(transformed())
    check_not_empty(text, source.files or [source.name])
    if options.shuffle_sentences:
        text = shuffle_sentence_chunks(text, options.shuffle_sentences, options.seed)
    return _in_memory(text)


def _check_not_empty(pieces: Iterable[str], source) -> None:
    for piece in pieces:
        if piece.strip():
            return
    check_not_empty("", source.files or [source.name])


def _write_splits(work: Path, pieces, tokenizer: Tokenizer, options: PrepareOptions, log) -> dict:
    """Encode every piece into work/all.bin, then cut it into train and val."""
    dtype = token_dtype(tokenizer.vocab_size)
    # The tokenizer writes uint16 directly; larger vocabularies come as int32,
    # whose non-negative ids are the same bytes as uint32.
    encode_dtype = np.uint16 if dtype == np.uint16 else np.int32
    total = unk = chars = nbytes = 0
    all_path = work / "all.bin"
    with open(all_path, "wb") as f:
        for piece in pieces():
            ids = tokenizer.encode(piece, threads=options.threads, dtype=encode_dtype)
            ids.view(dtype).tofile(f)
            total += len(ids)
            chars += len(piece)
            nbytes += len(piece.encode("utf-8")) if not piece.isascii() else len(piece)
            if tokenizer.unk_id is not None:
                unk += int(np.count_nonzero(ids == tokenizer.unk_id))
            log(f"encoded {total:,} tokens")
    if total == 0:
        raise InputError("the corpus produced no tokens; expected some text the tokenizer can split")
    n_train = int(total * (1.0 - options.val_fraction))
    _cut(all_path, work / "train.bin", work / "val.bin", n_train, dtype)
    return {
        "format": FORMAT,
        "version": VERSION,
        "tokenizer": tokenizer.to_dict(),
        "dtype": dtype.name,
        "vocab_size": tokenizer.vocab_size,
        "splits": {"train": {"tokens": n_train}, "val": {"tokens": total - n_train}},
        "val_fraction": options.val_fraction,
        "stats": {"chars": chars, "bytes": nbytes, "tokens": total, "unk_tokens": unk},
    }


def _cut(all_path: Path, train_path: Path, val_path: Path, n_train: int, dtype: np.dtype) -> None:
    """Move the tail after n_train tokens to val_path; the head becomes train_path."""
    size = dtype.itemsize
    with open(all_path, "r+b") as src, open(val_path, "wb") as dst:
        src.seek(n_train * size)
        shutil.copyfileobj(src, dst, _COPY_BLOCK)
        src.truncate(n_train * size)
    all_path.replace(train_path)
