"""Plain-text readers: files, folders, BOM/CRLF normalization, UTF-8 errors, streaming."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from gptfast.errors import InputError
from gptfast.data.text import iter_text_chunks, list_text_files, read_text, read_texts

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- list_text_files

def test_list_files_and_folders_sorted_recursive_skipping_hidden(tmp_path):
    single = write(tmp_path / "single.txt", b"x")
    book = tmp_path / "books"
    for rel in ["b.txt", "a.txt", "sub/z.txt", "sub/c.txt", ".hidden.txt", ".git/config", "a_dir/x.txt"]:
        write(book / rel, b"x")
    got = list_text_files([single, str(book)])
    rel = [p.relative_to(tmp_path).as_posix() for p in got]
    assert rel == ["single.txt", "books/a.txt", "books/b.txt", "books/a_dir/x.txt", "books/sub/c.txt", "books/sub/z.txt"]
    assert list_text_files([single, str(book)]) == got  # deterministic


def test_list_explicit_hidden_file_is_kept_and_duplicates_dropped(tmp_path):
    hidden = write(tmp_path / ".notes.txt", b"x")
    folder = tmp_path / "f"
    inner = write(folder / "a.txt", b"x")
    assert list_text_files([hidden, inner, folder, hidden]) == [hidden, inner]


def test_list_missing_path(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(InputError) as exc:
        list_text_files([missing])
    assert str(missing) in str(exc.value) and "no such file or directory" in str(exc.value)


def test_list_empty_folder(tmp_path):
    folder = tmp_path / "empty"
    write(folder / ".only_hidden", b"x")
    with pytest.raises(InputError, match="no files"):
        list_text_files([folder])


def test_list_no_paths():
    with pytest.raises(InputError):
        list_text_files([])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs mkfifo")
def test_list_skips_non_regular_files_in_folders(tmp_path):
    write(tmp_path / "a.txt", b"x")
    os.mkfifo(tmp_path / "pipe")
    assert [p.name for p in list_text_files([tmp_path])] == ["a.txt"]


# ---------------------------------------------------------------- read_text

def test_read_strips_bom_and_normalizes_newlines(tmp_path):
    p = write(tmp_path / "t.txt", b"\xef\xbb\xbfuno\r\ndos\rtres\n\r\ncuatro\xc3\xb1\r")
    assert read_text(p) == "uno\ndos\ntres\n\ncuatro\u00f1\n"


def test_read_only_a_leading_bom_is_dropped(tmp_path):
    p = write(tmp_path / "t.txt", "a\ufeffb".encode())
    assert read_text(p) == "a\ufeffb"


def test_read_bad_utf8_names_file_byte_and_line(tmp_path):
    # line 3 starts at byte 3 + 4 + 2 = 9 after the BOM; the bad byte is 2 further on
    p = write(tmp_path / "latin1.txt", b"\xef\xbb\xbfab\r\nc\n" + b"ni\xf1o\n")
    with pytest.raises(InputError) as exc:
        read_text(p)
    msg = str(exc.value)
    assert str(p) in msg
    assert "byte 11, line 3" in msg
    assert "0xf1" in msg and "UTF-8" in msg and "--encoding-errors replace" in msg
    assert "\n" not in msg
    assert exc.value.position == "byte 11, line 3"


def test_read_replace_mode(tmp_path):
    p = write(tmp_path / "latin1.txt", b"ni\xf1o\r\n")
    assert read_text(p, errors="replace") == "ni\ufffdo\n"


def test_read_rejects_unknown_error_mode(tmp_path):
    p = write(tmp_path / "t.txt", b"x")
    with pytest.raises(ValueError):
        read_text(p, errors="ignore")


def test_read_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_text(tmp_path / "nope.txt")


# ---------------------------------------------------------------- iter_text_chunks

def test_chunks_cut_after_newlines(tmp_path):
    p = write(tmp_path / "t.txt", b"aaaa\nbb\ncccccccccc\nd")
    chunks = list(iter_text_chunks(p, chunk_bytes=3))
    assert "".join(chunks) == "aaaa\nbb\ncccccccccc\nd"
    assert all(c.endswith("\n") for c in chunks[:-1])
    assert "cccccccccc\n" in chunks  # a line longer than a chunk comes whole


def test_chunks_crlf_split_across_reads(tmp_path):
    # with chunk_bytes=2 the reads are "a\r" | "\nb" | ...: the pair must stay one break
    p = write(tmp_path / "t.txt", b"a\r\nb\r\rc\r")
    for n in range(1, 10):
        assert "".join(iter_text_chunks(p, chunk_bytes=n)) == "a\nb\n\nc\n"


def test_chunks_error_offset_is_absolute(tmp_path):
    data = b"\xef\xbb\xbf" + b"hello world\r\n" * 1000 + b"caf\xe9\n" + b"more\n" * 10
    p = write(tmp_path / "big.txt", data)
    expected = f"byte {3 + 13 * 1000 + 3}, line 1001"
    for n in (1, 7, 64, 1 << 20):
        with pytest.raises(InputError) as exc:
            list(iter_text_chunks(p, chunk_bytes=n))
        assert exc.value.position == expected
    with pytest.raises(InputError) as exc:
        read_text(p)
    assert exc.value.position == expected


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("chunks") / "f.txt"


def _outcome(fn):
    try:
        return fn()
    except InputError as err:
        return ("error", str(err))


_text = st.text(alphabet=st.sampled_from(list("ab \n\r\t\u00f1\u20ac\U0001f600\ufeff")) | st.characters(), max_size=200)


@settings(max_examples=300, deadline=None)
@given(text=_text, bom=st.booleans(), n=st.integers(1, 12))
def test_chunks_join_equals_read_text_on_text(scratch, text, bom, n):
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates are not encodable text
        return
    scratch.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    whole = read_text(scratch)
    assert "".join(iter_text_chunks(scratch, chunk_bytes=n)) == whole
    assert "\r" not in whole


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200) | st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b"\xc3", b"\xb1", b"\xef\xbb\xbf", b"\xff"]), max_size=60).map(b"".join),
       n=st.integers(1, 12), errors=st.sampled_from(["strict", "replace"]))
def test_chunks_join_equals_read_text_on_bytes(scratch, data, n, errors):
    # same text, or the same error (same absolute byte offset and line)
    scratch.write_bytes(data)
    whole = _outcome(lambda: read_text(scratch, errors))
    assert _outcome(lambda: "".join(iter_text_chunks(scratch, chunk_bytes=n, errors=errors))) == whole


# ---------------------------------------------------------------- read_texts

def test_read_texts_joins_with_newlines(tmp_path):
    a = write(tmp_path / "d" / "a.txt", b"one")
    write(tmp_path / "d" / "b.txt", b"")
    write(tmp_path / "d" / "c.txt", b"two\r\n")
    e = write(tmp_path / "e.txt", b"\xef\xbb\xbfthree")
    assert read_texts([tmp_path / "d", e]) == "one\ntwo\nthree\n"
    assert read_texts([a]) == "one\n"


def test_read_texts_empty_corpus(tmp_path):
    a = write(tmp_path / "a.txt", b"")
    b = write(tmp_path / "b.txt", b" \r\n\t\n")
    with pytest.raises(InputError) as exc:
        read_texts([a, b])
    assert "empty corpus" in str(exc.value) and "a.txt" in str(exc.value) and "b.txt" in str(exc.value)
    with pytest.raises(InputError) as exc:
        read_texts([b])
    assert str(exc.value).startswith(str(b)) and "empty corpus" in str(exc.value)


def test_read_texts_bad_byte_names_the_file(tmp_path):
    write(tmp_path / "a.txt", b"fine\n")
    bad = write(tmp_path / "b.txt", b"ok\n\xff\n")
    with pytest.raises(InputError) as exc:
        read_texts([tmp_path])
    assert str(bad) in str(exc.value) and "byte 3, line 2" in str(exc.value)
    assert "\ufffd" in read_texts([tmp_path], errors="replace")


# ---------------------------------------------------------------- the shared corpora

@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="shared/data not present")
@pytest.mark.parametrize("name", ["el_quijote.txt", "whatsapp_sample_ios.txt", "tinyshakespeare.txt"])
def test_shared_files_stream_like_they_read(name):
    path = SHARED_DATA / name
    whole = read_text(path)
    assert "\r" not in whole and whole
    assert "".join(iter_text_chunks(path, chunk_bytes=1 << 16)) == whole
    if name == "tinyshakespeare.txt":
        assert len(whole) == 1_115_394 and len(set(whole)) == 65
