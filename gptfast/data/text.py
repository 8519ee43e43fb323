"""Plain UTF-8 text that the user brings: files, folders of files.

Every reader here gives the same text for the same bytes:

* a leading UTF-8 byte order mark is dropped (Windows editors add one);
* line breaks are normalized to ``"\\n"`` (``"\\r\\n"`` and a lone ``"\\r"``),
  so a corpus saved on Windows trains the same model as one saved on Linux;
* bytes that are not UTF-8 are an `InputError` naming the file, the byte
  offset and the line, unless the caller asked for ``errors="replace"``
  (the CLI's ``--encoding-errors replace``), which decodes them as U+FFFD.

`iter_text_chunks` streams a big file in pieces cut right after a line
break; ``"".join(iter_text_chunks(p, n)) == read_text(p)`` for every ``n``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, List, Sequence, Union

from gptfast.errors import InputError

PathLike = Union[str, Path]

BOM = b"\xef\xbb\xbf"
# No "ignore": dropping a bad byte can join a "\r" and a "\n" that the bytes
# kept apart (b"\r\xc3\n"), so the text would depend on where a stream was
# cut.  "replace" keeps every position, and the user still sees where.
ERROR_MODES = ("strict", "replace")
REPLACE_HINT = "pass --encoding-errors replace to decode bad bytes as U+FFFD"


# --------------------------------------------------------------------------
# finding the files
# --------------------------------------------------------------------------

def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _walk_folder(folder: Path) -> List[Path]:
    """Regular, non-hidden files under `folder`, depth first, sorted by name
    at every level so the corpus (and so the model) is the same on every run."""
    found: List[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not _is_hidden(name) and path.is_file():  # skips sockets, fifos, broken links
                found.append(path)
    return found


def list_text_files(paths: Sequence[PathLike]) -> List[Path]:
    """The files to read, in order: files as given, folders expanded recursively.

    A file named twice (or also found inside a named folder) is kept once, at
    its first place, so a corpus is never silently doubled.
    """
    if isinstance(paths, (str, Path)):  # a lone path is an easy mistake to make
        paths = [paths]
    if not paths:
        raise InputError("no input files given: expected at least one text file or folder")
    files: List[Path] = []
    seen = set()
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise InputError("no such file or directory", path=str(given))
        if path.is_dir():
            found = _walk_folder(path)
            if not found:
                raise InputError("folder has no files to read (hidden files are skipped)", path=str(given))
        elif path.is_file():
            found = [path]
        else:
            raise InputError("not a regular file or folder", path=str(given))
        for f in found:
            key = os.path.realpath(f)
            if key not in seen:
                seen.add(key)
                files.append(f)
    return files


# --------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------

def _count_breaks(data: bytes) -> int:
    """Line breaks in raw bytes, counting "\\r\\n" once and a lone "\\r" too."""
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


def _normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _check_errors(errors: str) -> None:
    if errors not in ERROR_MODES:
        raise ValueError(f"errors must be one of {ERROR_MODES}, not {errors!r}")


def _decode(data: bytes, path: PathLike, errors: str, offset: int = 0, lines_before: int = 0) -> str:
    """Decode one piece of a file whose first byte sits at absolute `offset`
    and which follows `lines_before` line breaks; normalize its line breaks."""
    try:
        text = data.decode("utf-8", errors)
    except UnicodeDecodeError as err:
        bad = data[err.start:err.start + 1].hex()
        line = lines_before + _count_breaks(data[:err.start]) + 1
        raise InputError(
            f"not valid UTF-8 (byte 0x{bad}): expected UTF-8 text; "
            f"convert the file to UTF-8 or {REPLACE_HINT}",
            path=str(path),
            position=f"byte {offset + err.start}, line {line}",
        ) from None
    return _normalize_newlines(text)


def _open(path: PathLike):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise InputError("no such file or directory", path=str(path)) from None
    except IsADirectoryError:
        raise InputError("is a folder, expected a text file", path=str(path)) from None
    except PermissionError:
        raise InputError("permission denied: cannot read the file", path=str(path)) from None


def read_text(path: PathLike, errors: str = "strict") -> str:
    """The whole file as text (BOM dropped, line breaks normalized to "\\n")."""
    _check_errors(errors)
    with _open(path) as f:
        data = f.read()
    offset = 0
    if data.startswith(BOM):
        data, offset = data[len(BOM):], len(BOM)
    return _decode(data, path, errors, offset)


def _last_break_end(buf: bytearray, start: int) -> int:
    """Index just past the last line break in ``buf[start:]``, or -1.

    A "\\r" in the last byte does not count: the next read may bring its
    "\\n", and cutting between the two would turn one break into two.
    "\\n" and "\\r" never occur inside a UTF-8 multibyte sequence, so a cut
    right after one never splits a character.
    """
    lf = buf.rfind(b"\n", start)
    cr = buf.rfind(b"\r", start, len(buf) - 1)  # its successor is known and, if lf < cr, not "\n"
    cut = max(lf, cr)
    return cut + 1 if cut >= 0 else -1


def iter_text_chunks(path: PathLike, chunk_bytes: int = 16 << 20, errors: str = "strict") -> Iterator[str]:
    """Stream a file in pieces of about `chunk_bytes`, each ending right after
    a line break (a line longer than `chunk_bytes` comes whole); same text,
    normalization and errors (with absolute byte offsets) as `read_text`."""
    _check_errors(errors)
    if chunk_bytes < 1:
        raise ValueError("chunk_bytes must be at least 1")
    with _open(path) as f:
        head = f.read(len(BOM))
        offset = len(BOM) if head == BOM else 0  # absolute position of buf[0]
        buf = bytearray() if head == BOM else bytearray(head)
        lines = 0
        scanned = 0  # buf[:scanned] holds no cut point (but maybe a final "\r")
        while True:
            block = f.read(chunk_bytes)
            if not block:
                if buf:
                    yield _decode(bytes(buf), path, errors, offset, lines)
                return
            buf += block
            cut = _last_break_end(buf, max(0, scanned - 1))
            scanned = len(buf)
            if cut < 0:
                continue  # a long line: keep reading until it ends
            piece = bytes(buf[:cut])
            del buf[:cut]
            scanned = len(buf)
            text = _decode(piece, path, errors, offset, lines)
            offset += cut
            lines += text.count("\n")
            yield text


def check_not_empty(text: str, paths: Sequence[PathLike]) -> None:
    """An `InputError` when a corpus holds nothing but whitespace."""
    if text.strip():
        return
    names = [str(p) for p in paths]
    if len(names) == 1:
        raise InputError("empty corpus: the file is empty or whitespace only; expected some text", path=names[0])
    shown = ", ".join(names[:5]) + (f", ... ({len(names)} files)" if len(names) > 5 else "")
    raise InputError(f"empty corpus: every file is empty or whitespace only ({shown}); expected some text")


def read_texts(paths: Sequence[PathLike], errors: str = "strict") -> str:
    """Several files and folders as one text, in `list_text_files` order.

    Each non-empty file is made to end with "\\n" before the next begins, so
    the last line of one book never runs into the first line of the next.
    """
    files = list_text_files(paths)
    parts = []
    for path in files:
        text = read_text(path, errors)
        if text and not text.endswith("\n"):
            text += "\n"
        parts.append(text)
    corpus = "".join(parts)
    check_not_empty(corpus, files)
    return corpus
