"""The corpus used when the user gives none: this Python's own docstrings.

Every Python install carries about a megabyte of English prose in the
docstrings of its standard library.  Training on it needs no download and no
third-party text in this repository, so ``python -m gptfast.train`` works
offline with no arguments.

The docstrings are read from the ``.py`` sources with `ast` (importing ~400
modules would be slow and run their code), in sorted file order, so the
corpus is the same on every run of a given Python (it differs between Python
versions, whose docs differ).  Installs that ship no sources fall back to the
``__doc__`` of a fixed list of modules.
"""
from __future__ import annotations

import ast
import functools
import importlib
import inspect
import os
import re
import sysconfig
import warnings
from pathlib import Path
from typing import Iterable, Iterator, List, Optional

from gptfast.errors import InputError

DEFAULT_CORPUS_NAME = "python-docs"
DEFAULT_CORPUS_DESCRIPTION = "docstrings of this Python's standard library (English prose, offline, no download)"

MIN_DOC_CHARS = 40  # shorter ones are mostly "Return self==value." boilerplate

# Folders whose docstrings are not prose worth learning, or not the stdlib at
# all: test suites, GUI code, data tables, third-party packages, templates.
SKIP_DIRS = frozenset({
    "test", "tests", "idle_test", "idlelib", "lib2to3", "tkinter", "turtledemo",
    "ensurepip", "encodings", "site-packages", "dist-packages", "venv",
    "pydoc_data", "__pycache__", "lib-dynload",
})

# Used only when the stdlib sources are missing: modules every Python has.
FALLBACK_MODULES = (
    "builtins", "os", "re", "collections", "functools", "itertools", "string",
    "json", "pathlib", "io", "math", "random", "datetime", "argparse",
    "textwrap", "logging", "subprocess", "shutil", "inspect", "dataclasses",
)


def _stdlib_files(root: Path) -> List[Path]:
    files: List[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        files += [
            Path(dirpath) / f
            for f in sorted(filenames)
            if f.endswith(".py") and not f.startswith(("test_", "."))
        ]
    return files


_DOC_OWNERS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
# Statements that hold other statements; names missing from older Pythons are skipped.
_COMPOUND = tuple(
    getattr(ast, name)
    for name in ("ClassDef", "FunctionDef", "AsyncFunctionDef", "If", "For", "AsyncFor", "While",
                 "With", "AsyncWith", "Try", "TryStar", "ExceptHandler", "Match", "match_case")
    if hasattr(ast, name)
)
_BLOCK_FIELDS = ("body", "orelse", "finalbody", "handlers", "cases")


def _docstrings(tree: ast.AST) -> Iterator[str]:
    """Docstrings of a module and of every class and function in it, in
    source order.  Walks compound statements only (docstrings live nowhere
    else), which is several times faster than `ast.walk`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, _DOC_OWNERS):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield doc
        children: List[ast.AST] = []
        for field in _BLOCK_FIELDS:
            block = getattr(node, field, None)
            if block:
                children += [c for c in block if isinstance(c, _COMPOUND)]
        stack.extend(reversed(children))


_NOT_PRINTABLE_ASCII = re.compile(r"[^\n\x20-\x7e]")


def _clean(doc: str) -> Optional[str]:
    """A docstring as prose, or None when it is too short or not text.

    Doctest examples (paragraphs with ">>>" lines) are dropped: they are code
    and its output, not prose.  Docstrings with non-ASCII or control
    characters are dropped so the default character vocabulary stays small.
    """
    text = inspect.cleandoc(doc)
    paragraphs = [p for p in text.split("\n\n") if p.strip() and ">>>" not in p]
    text = "\n\n".join(p.strip("\n") for p in paragraphs)
    if len(text) < MIN_DOC_CHARS or _NOT_PRINTABLE_ASCII.search(text):
        return None
    return text


def _collect(docs: Iterable[str], max_chars: int) -> str:
    """Join cleaned, de-duplicated docstrings with blank lines, stopping
    before `max_chars` so the corpus never ends mid-docstring."""
    seen = set()
    out: List[str] = []
    size = 0
    for doc in docs:
        text = _clean(doc)
        if text is None or text in seen:
            continue
        if size + len(text) + 2 > max_chars:
            break
        seen.add(text)
        out.append(text)
        size += len(text) + 2
    return "\n\n".join(out) + "\n" if out else ""


def stdlib_docstrings(root: Path) -> Iterator[str]:
    """Raw docstrings from the `.py` files under `root`, in sorted order."""
    for path in _stdlib_files(root):
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, OSError):  # a broken or unreadable file is not our concern
            continue
        yield from _docstrings(tree)


def runtime_docstrings(module_names: Iterable[str] = FALLBACK_MODULES) -> Iterator[str]:
    """`__doc__` of a few modules and their public classes and functions, for
    installs without stdlib sources."""
    for name in module_names:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if module.__doc__:
            yield module.__doc__
        for attr in sorted(dir(module)):
            if attr.startswith("_"):
                continue
            with warnings.catch_warnings():  # some attributes warn when touched (deprecated aliases)
                warnings.simplefilter("ignore")
                obj = getattr(module, attr, None)
            if not (inspect.isclass(obj) or inspect.isroutine(obj)):
                continue
            if isinstance(obj.__doc__, str):
                yield obj.__doc__
            if inspect.isclass(obj):
                for meth in sorted(vars(obj)):
                    doc = getattr(vars(obj)[meth], "__doc__", None)
                    if not meth.startswith("_") and isinstance(doc, str):
                        yield doc


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


@functools.lru_cache(maxsize=4)
def default_corpus(max_chars: int = 1_500_000) -> str:
    """At most `max_chars` characters of English prose from this Python's
    docstrings; the same text on every call for a given Python."""
    text = _collect(stdlib_docstrings(_stdlib_root()), max_chars)
    if not text:
        text = _collect(runtime_docstrings(), max_chars)
    if not text:
        raise InputError(
            f"the default corpus '{DEFAULT_CORPUS_NAME}' is empty: this Python has no docstrings "
            "(sources missing and running with -OO?); expected a text file, e.g. --data path/to/book.txt"
        )
    return text
