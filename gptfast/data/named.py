"""Named public-domain corpora: downloaded once, verified, cached.

``--data shakespeare`` fetches karpathy's tiny-shakespeare the first time and
reads it from the cache after that.  Every URL is pinned to a commit so the
bytes never change, and every file is checked against a sha256 before it is
used, so a name always means exactly the same text (and the same model).

The hash is of the *normalized* text: the download with a UTF-8 BOM removed,
CRLF turned into LF and, where an entry says so, its first `skip_lines` lines
dropped.  This is the text the cache holds; it equals the copies under
``shared/data`` in the project's development tree, which lets the tests check
the registry without a network.

Downloads use urllib only.  Offline, a download fails with one clear line
that says to pass a text file instead.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional
from urllib.request import urlopen

from gptfast.errors import InputError
from gptfast.io_utils import atomic_write_bytes

CACHE_ENV = "GPTFAST_CACHE"
MAX_DOWNLOAD_BYTES = 64 << 20  # far above any entry; stops a wrong URL from filling the disk


@dataclass(frozen=True)
class NamedDataset:
    name: str
    url: str
    sha256: str  # of the normalized UTF-8 bytes, see normalize()
    description: str
    filename: str  # name of the file in the cache
    skip_lines: int = 0  # leading lines the normalizer drops (a source's metadata header)


DATASETS: Dict[str, NamedDataset] = {
    d.name: d
    for d in [
        NamedDataset(
            name="shakespeare",
            url="https://raw.githubusercontent.com/karpathy/char-rnn/"
            "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/data/tinyshakespeare/input.txt",
            sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            description="tiny-shakespeare (karpathy/char-rnn): 1.1M chars of Shakespeare's plays, English",
            filename="tinyshakespeare.txt",
        ),
        NamedDataset(
            # Project Gutenberg #2000 with the PG header and licence footer
            # already cut by the source repository's notebook; the file has a
            # BOM and CRLF line ends, which normalize() removes.
            name="quijote",
            url="https://raw.githubusercontent.com/Notrito/quijote-gpt/"
            "a2be6ba08ced46f1ea6fbcb13f75fb2e4a3b2774/quijote.txt",
            sha256="29c9b396a9662d661a3d9b42cae5b3d1bce746923e075aca8033171576c95857",
            description="Cervantes, Don Quijote (parts I and II): 2.1M chars, Spanish",
            filename="el_quijote.txt",
        ),
        NamedDataset(
            # The source file starts with 7 lines of Project Gutenberg metadata
            # (Title, Author, blank, Posting Date, Release Date, blank,
            # Language) and then 2 blank lines before the text; the shared copy
            # starts at "LA VIDA DE LAZARILLO...", so 9 lines are skipped.  The
            # count was checked against an indexed copy of the source (header
            # length + the shared text + one CR per line equals the source's
            # length exactly), not against a live download.
            name="lazarillo",
            url="https://raw.githubusercontent.com/migueleiva/uba-nlp-1/"
            "3fa436ad888411178cee97171b3f5f343a9a1cfc/lazarillo.txt",
            sha256="bf7611b96972b6ae54a8e504d4bf726be1bfed26e7997fb000291519e7679104",
            description="Anonymous, Lazarillo de Tormes (1554): 107K chars, Spanish",
            filename="lazarillo.txt",
            skip_lines=9,
        ),
        NamedDataset(
            name="misericordia",
            url="https://raw.githubusercontent.com/cligs/textbox/"
            "1b91e940475c8a7e866457a3953fed5edb0a29f1/spanish/novela-espanola/"
            "txt_author-title/Galdos_Misericordia-ne0002.txt",
            sha256="891d9cf19e51aee16d2f223e83e00214e4137392003c6d9801bee6529a94a410",
            description="Perez Galdos, Misericordia (1897; CLiGS corpus): 480K chars, Spanish",
            filename="galdos_misericordia.txt",
        ),
    ]
}


def cache_dir() -> Path:
    """Where datasets are cached: $GPTFAST_CACHE, else ~/.cache/gptfast/datasets
    (under $XDG_CACHE_HOME when that is set)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gptfast" / "datasets"


def is_named_dataset(spec: str) -> bool:
    """Whether `spec` names a registered dataset.  Callers that also accept
    paths should let an existing file or folder of the same name win."""
    return str(spec).strip().lower() in DATASETS


def normalize(data: bytes, skip_lines: int = 0) -> bytes:
    """The bytes a dataset's sha256 is taken of: no BOM, LF line ends, and the
    first `skip_lines` lines dropped."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    data = data.replace(b"\r\n", b"\n")
    for _ in range(skip_lines):
        cut = data.find(b"\n")
        data = b"" if cut < 0 else data[cut + 1:]
    return data


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _lookup(name: str) -> NamedDataset:
    key = str(name).strip().lower()
    if key not in DATASETS:
        known = ", ".join(sorted(DATASETS))
        raise InputError(f"unknown dataset '{name}': expected one of {known}, or a path to a text file")
    return DATASETS[key]


def _download(ds: NamedDataset, timeout: float) -> bytes:
    """The raw bytes at `ds.url`, or an InputError saying what went wrong."""
    offline_hint = f"pass a text file instead, e.g. --data path/to/{ds.name}.txt"
    try:
        with urlopen(ds.url, timeout=timeout) as response:
            data = response.read(MAX_DOWNLOAD_BYTES + 1)
    except urllib.error.HTTPError as err:  # reached the server: not an offline problem
        raise InputError(
            f"could not download dataset '{ds.name}' from {ds.url} (HTTP {err.code} {err.reason}); {offline_hint}"
        ) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:  # no network, DNS, timeout, cut off
        reason = getattr(err, "reason", None) or err
        raise InputError(
            f"could not download dataset '{ds.name}' ({reason}); you appear to be offline: {offline_hint}"
        ) from None
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise InputError(f"could not download dataset '{ds.name}': {ds.url} is larger than expected; {offline_hint}")
    return data


def fetch(name: str, *, cache: Optional[Path] = None, timeout: float = 30) -> Path:
    """The path of the verified cached copy of dataset `name`, downloading it
    the first time.  A cached file whose hash no longer matches is fetched
    again; a download whose hash does not match leaves nothing behind."""
    ds = _lookup(name)
    folder = Path(cache) if cache is not None else cache_dir()
    target = folder / ds.filename
    if target.is_file() and _sha256_file(target) == ds.sha256:
        return target

    data = normalize(_download(ds, timeout), ds.skip_lines)
    got = hashlib.sha256(data).hexdigest()
    if got != ds.sha256:
        raise InputError(
            f"downloaded dataset '{ds.name}' does not match its pinned sha256 "
            f"(expected {ds.sha256}, got {got}); nothing was cached: pass a text file instead"
        )

    try:
        # Temp file beside the target, then rename: a reader never sees half a file.
        atomic_write_bytes(target, data)
    except OSError as err:
        raise InputError(f"cannot write the dataset cache ({err.strerror}); set {CACHE_ENV} to a writable folder",
                         path=str(folder)) from None
    return target
