"""The embedded default corpus: this Python's stdlib docstrings."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from gptfast.data import default_corpus as dc
from gptfast.errors import InputError

HAS_SOURCES = (dc._stdlib_root() / "os.py").is_file()
needs_sources = pytest.mark.skipif(not HAS_SOURCES, reason="this Python ships no stdlib sources")


@pytest.fixture(scope="module")
def corpus() -> str:
    return dc.default_corpus()


def test_names():
    assert dc.DEFAULT_CORPUS_NAME == "python-docs"
    assert dc.DEFAULT_CORPUS_DESCRIPTION and "\n" not in dc.DEFAULT_CORPUS_DESCRIPTION


@needs_sources
def test_size_and_budget(corpus):
    assert 900_000 <= len(corpus) <= 1_500_000  # 1.35M on CPython 3.11; 3.13 dropped ~135K with distutils etc.
    small = dc.default_corpus(50_000)
    assert 40_000 < len(small) <= 50_000
    assert corpus.startswith(small)  # a smaller budget is a prefix: same order every time


def test_deterministic_cached_and_fast(corpus):
    assert dc.default_corpus() is corpus  # in-process cache
    dc.default_corpus.cache_clear()
    start = time.perf_counter()
    again = dc.default_corpus()  # rebuilt from scratch: the same text
    elapsed = time.perf_counter() - start
    print(f"default corpus built in {elapsed:.2f} s")
    assert again == corpus
    assert elapsed < 10  # ~1.5 s on an idle laptop; generous for loaded CI machines


def test_printable_prose(corpus):
    assert corpus.isascii()
    assert all(c == "\n" or c.isprintable() for c in corpus)
    assert ">>>" not in corpus
    assert corpus.endswith("\n") and "\n\n\n" not in corpus
    assert len(set(corpus)) <= 96  # printable ASCII and "\n": a small char vocabulary
    words = corpus.split()
    assert sum(w.isalpha() for w in words) / len(words) > 0.5  # mostly words, not code
    for word in ("the", "return", "function", "file"):
        assert f" {word} " in corpus


@needs_sources
def test_skipped_folders_do_not_contribute():
    files = dc._stdlib_files(dc._stdlib_root())
    parts = {part for f in files for part in f.relative_to(dc._stdlib_root()).parts[:-1]}
    assert not parts & dc.SKIP_DIRS
    assert not any(f.name.startswith("test_") for f in files)


def test_fallback_without_sources(monkeypatch, tmp_path):
    monkeypatch.setattr(dc, "_stdlib_root", lambda: tmp_path)  # an "install" with no .py files
    dc.default_corpus.cache_clear()
    try:
        text = dc.default_corpus()
        assert len(text) > 50_000 and text.isascii() and ">>>" not in text
        assert dc.default_corpus() == text
    finally:
        dc.default_corpus.cache_clear()


def test_nothing_at_all_is_an_input_error(monkeypatch, tmp_path):
    monkeypatch.setattr(dc, "_stdlib_root", lambda: tmp_path)
    monkeypatch.setattr(dc, "runtime_docstrings", lambda: iter(()))
    dc.default_corpus.cache_clear()
    try:
        with pytest.raises(InputError, match="python-docs"):
            dc.default_corpus()
    finally:
        dc.default_corpus.cache_clear()


def test_clean_drops_doctests_and_short_docs():
    doc = """Summary line that is long enough to be kept as prose here.

        >>> 1 + 1
        2

        More prose after the example.
        """
    assert dc._clean(doc) == "Summary line that is long enough to be kept as prose here.\n\nMore prose after the example."
    assert dc._clean("Return self==value.") is None
    assert dc._clean("Caf\u00e9 is not ASCII, and this docstring is long enough to count.") is None


def test_docstrings_found_in_nested_blocks():
    import ast

    src = '''"""Module doc."""
if True:
    class A:
        """Class doc."""
        def f(self):
            """Method doc."""
            def g():
                """Inner doc."""
try:
    def h():
        """Try doc."""
except ImportError:
    pass
'''
    assert list(dc._docstrings(ast.parse(src))) == [
        "Module doc.", "Class doc.", "Method doc.", "Inner doc.", "Try doc."]
