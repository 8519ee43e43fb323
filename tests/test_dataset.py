"""Token datasets (gptfast.data.dataset): prepare, stream, split, reuse, load.

Every prepared dataset is checked against the reference semantics of the
seeds: the ids of train + val are ``tokenizer.encode(whole corpus text)``
and train is the first ``int(N * (1 - val_fraction))`` of them.
"""
from __future__ import annotations

import json
import os
import socket
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from gptfast.data import dataset as dataset_mod
from gptfast.data.chat import END_TOKEN, build_chat_corpus
from gptfast.data.dataset import (
    PrepareOptions,
    find_reusable,
    load_dataset,
    prepare_dataset,
    token_dtype,
)
from gptfast.data.shuffle import split_sentences
from gptfast.data.text import read_texts
from gptfast.data.whatsapp import parse_whatsapp
from gptfast.errors import InputError
from gptfast.tokenizer import UNK_TOKEN, Tokenizer

HUGE = 1 << 30  # chunk_bytes that makes every file a single piece

SPANISH = (
    "En un lugar de la Mancha, de cuyo nombre no quiero acordarme, no ha mucho tiempo\n"
    "que vivía un hidalgo de los de lanza en astillero, adarga antigua, rocín flaco y galgo corredor.\n"
    "Don Quijote: ¿Qué te parece, Sancho? ¡Pardiez! Aquí está la aventura… ¿verdad?\n"
    "Sancho: Señor, mire vuestra merced que aquellos no son gigantes, sino molinos de viento.\n"
    "\n"
    "Capítulo 2 — 1605 ñandú: «comillas», números 12345 y emoji 🤓 al final\n"
)


def _all_ids(info) -> np.ndarray:
    return np.concatenate([np.asarray(info.tokens("train")), np.asarray(info.tokens("val"))])


def _bins(folder: Path) -> dict:
    return {name: (folder / name).read_bytes() for name in ("train.bin", "val.bin")}


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _no_temp_left(folder: Path) -> None:
    left = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert not left, f"temporary files left behind in {folder}: {left}"


@pytest.fixture
def text_file(tmp_path) -> Path:
    p = tmp_path / "quijote.txt"
    p.write_text(SPANISH, encoding="utf-8")
    return p


# ---------------------------------------------------------------- basics
@pytest.mark.parametrize("kind", ["char", "word"])
@pytest.mark.parametrize("val_fraction", [0.1, 0.0, 0.25])
def test_prepare_matches_reference_split(tmp_path, text_file, kind, val_fraction):
    out = tmp_path / "ds"
    info = prepare_dataset([str(text_file)], out, PrepareOptions(tokenizer=kind, val_fraction=val_fraction))
    for name in ("train.bin", "val.bin", "meta.json"):
        assert (out / name).is_file(), name
    _no_temp_left(out)
    assert info.dtype == np.uint16 and info.meta["dtype"] == "uint16"
    assert token_dtype(info.tokenizer.vocab_size) == np.uint16

    text = read_texts([text_file])
    tok = info.tokenizer
    reference = tok.encode(text)
    ids = _all_ids(info)
    n_train = int(len(reference) * (1 - val_fraction))
    np.testing.assert_array_equal(ids, reference)
    assert len(info.tokens("train")) == n_train
    assert len(info.tokens("val")) == len(reference) - n_train
    assert info.meta["stats"]["tokens"] == len(reference)
    assert info.meta["stats"]["chars"] == len(text)
    assert info.meta["stats"]["bytes"] == len(text.encode("utf-8"))
    if val_fraction == 0.0:
        assert len(info.tokens("val")) == 0
    # the vocabulary is the reference fit of the whole text
    assert tok.vocab == Tokenizer.fit(text, kind=kind).vocab
    if kind == "char":
        assert tok.vocab == sorted(set(text))
        assert tok.decode(info.tokens("train")) == text[:n_train]

    # what load_dataset reads back is the same dataset
    loaded = load_dataset(out)
    assert loaded.meta == json.loads((out / "meta.json").read_text(encoding="utf-8"))
    assert loaded.tokenizer.vocab == tok.vocab
    np.testing.assert_array_equal(_all_ids(loaded), reference)
    summary = loaded.summary()
    assert f"vocabulary {tok.vocab_size:,}" in summary and f"{len(reference):,}" in summary


# ------------------------------------------------ streaming == in memory
def _corpus_files(tmp_path: Path) -> list:
    """Two files and a folder, CRLF and lone CR, a file without a final
    newline, an empty file, a BOM and a special token with a space."""
    root = tmp_path / "corpus"
    (root / "folder" / "sub").mkdir(parents=True)
    a = root / "a.txt"
    a.write_text(SPANISH * 3, encoding="utf-8")
    b = root / "b_crlf.txt"
    crlf = "Don Quijote: hola,\r\nDon Quijote: adiós.\r\n" * 20 + "sin salto final Don Quijote:"
    b.write_bytes(crlf.encode("utf-8"))
    bom = b"\xef\xbb\xbf" + ("línea con BOM\rretorno solo\r" * 10).encode("utf-8")
    (root / "folder" / "1_bom.txt").write_bytes(bom)
    (root / "folder" / "2_empty.txt").write_bytes(b"")
    (root / "folder" / "sub" / "3.txt").write_text("Don Quijote:\n" + "Sancho: ¿y yo? " * 30, encoding="utf-8")
    return [str(a), str(b), str(root / "folder")]


@pytest.mark.parametrize("kind", ["char", "word"])
def test_streaming_equals_in_memory(tmp_path, kind):
    data = _corpus_files(tmp_path)
    specials = ["Don Quijote:", "<END>"]
    small = prepare_dataset(data, tmp_path / "small",
                            PrepareOptions(tokenizer=kind, specials=specials, chunk_bytes=64))
    whole = prepare_dataset(data, tmp_path / "whole",
                            PrepareOptions(tokenizer=kind, specials=specials, chunk_bytes=HUGE))
    assert _bins(tmp_path / "small") == _bins(tmp_path / "whole")
    assert small.tokenizer.vocab == whole.tokenizer.vocab
    assert small.meta["stats"] == {**whole.meta["stats"], "seconds": small.meta["stats"]["seconds"]}
    assert small.meta["key"] == whole.meta["key"]  # chunk size is not part of the key

    # both are the reference: the whole text of the files, each ending with "\n"
    text = read_texts(data)
    assert "\r" not in text and not text.startswith("\ufeff") and "final Don Quijote:\n" in text
    ref = Tokenizer.fit(text, kind=kind, specials=specials)
    assert small.tokenizer.vocab == ref.vocab
    assert small.tokenizer.vocab[:2] == specials
    np.testing.assert_array_equal(_all_ids(small), ref.encode(text))
    assert int(np.count_nonzero(_all_ids(small) == 0)) == text.count("Don Quijote:")


@pytest.mark.parametrize("kind", ["char", "word"])
def test_streaming_equals_the_in_memory_path(tmp_path, kind, monkeypatch):
    """The same corpus through the whole-text path (taken when a tokenizer
    cannot stream) gives the same bytes as streaming in tiny pieces."""
    data = _corpus_files(tmp_path)
    opts = dict(tokenizer=kind, specials=["Don Quijote:"], chunk_bytes=64)
    prepare_dataset(data, tmp_path / "stream", PrepareOptions(**opts))
    monkeypatch.setattr(Tokenizer, "can_stream", lambda self: False)
    prepare_dataset(data, tmp_path / "memory", PrepareOptions(**opts))
    assert _bins(tmp_path / "stream") == _bins(tmp_path / "memory")
    m1 = json.loads((tmp_path / "stream" / "meta.json").read_text(encoding="utf-8"))
    m2 = json.loads((tmp_path / "memory" / "meta.json").read_text(encoding="utf-8"))
    assert m1["tokenizer"] == m2["tokenizer"] and m1["splits"] == m2["splits"]


@pytest.mark.parametrize("pattern", [r"[^.]+", r"\s+|\S+", r"(?s:.{2})", r"[a-z]+\n?"])
def test_patterns_spanning_newlines_are_not_streamed(tmp_path, pattern):
    data = _corpus_files(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a pattern outside the C++ subset
        info = prepare_dataset(data, tmp_path / "ds", PrepareOptions(tokenizer="word", pattern=pattern, chunk_bytes=16))
        text = read_texts(data)
        ref = Tokenizer.fit(text, kind="word", pattern=pattern)
        np.testing.assert_array_equal(_all_ids(info), ref.encode(text))
    assert info.tokenizer.vocab == ref.vocab


def test_crlf_file_prepares_like_lf(tmp_path):
    lf = tmp_path / "lf.txt"
    crlf = tmp_path / "crlf.txt"
    lf.write_text(SPANISH, encoding="utf-8")
    crlf.write_bytes(SPANISH.replace("\n", "\r\n").encode("utf-8"))
    for chunk in (7, HUGE):
        prepare_dataset([str(lf)], tmp_path / f"lf{chunk}", PrepareOptions(chunk_bytes=chunk))
        prepare_dataset([str(crlf)], tmp_path / f"crlf{chunk}", PrepareOptions(chunk_bytes=chunk))
        assert _bins(tmp_path / f"lf{chunk}") == _bins(tmp_path / f"crlf{chunk}")


# ------------------------------------------------------------------ dtype
def test_uint32_when_vocab_exceeds_uint16(tmp_path):
    n = (1 << 16) + 500
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(n)]
    order = rng.permutation(n)
    lines = [" ".join(words[j] for j in order[i:i + 20]) for i in range(0, n, 20)]
    p = tmp_path / "many_words.txt"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    info = prepare_dataset([str(p)], tmp_path / "ds", PrepareOptions(tokenizer="word", val_fraction=0.1))
    assert info.tokenizer.vocab_size > 1 << 16
    assert info.dtype == np.uint32 and info.meta["dtype"] == "uint32"
    ids = _all_ids(load_dataset(tmp_path / "ds"))
    assert ids.dtype == np.uint32
    assert (tmp_path / "ds" / "train.bin").stat().st_size == 4 * len(info.tokens("train"))
    assert ids.max() >= 1 << 16  # ids past uint16 really occur, and round trip
    tokens = [info.tokenizer.vocab[i] for i in ids]
    assert tokens == " ".join(lines).split()
    np.testing.assert_array_equal(ids, info.tokenizer.encode(p.read_text(encoding="utf-8")).astype(np.uint32))


# ------------------------------------------------------ text options
def test_lowercase(tmp_path, text_file):
    info = prepare_dataset([str(text_file)], tmp_path / "ds", PrepareOptions(lowercase=True, val_fraction=0))
    text = SPANISH.lower()
    assert info.tokenizer.vocab == sorted(set(text))
    assert info.tokenizer.decode(info.tokens("train")) == text


@pytest.mark.parametrize("chunk", [5, HUGE])
def test_min_count_chars_drops_rare_chars_but_never_space_or_newline(tmp_path, chunk):
    # "x" and "é" occur once, space and newline once each, "a" and "b" often.
    p = tmp_path / "t.txt"
    p.write_text("aaaabbbxé bbbaaaaaaaaabbbaaaaa\n", encoding="utf-8")
    info = prepare_dataset([str(p)], tmp_path / "ds",
                           PrepareOptions(min_count_chars=2, val_fraction=0, chunk_bytes=chunk))
    assert info.tokenizer.vocab == ["\n", " ", "a", "b"]
    assert info.tokenizer.unk_token is None
    assert info.tokenizer.decode(info.tokens("train")) == "aaaabbb bbbaaaaaaaaabbbaaaaa\n"
    assert info.meta["stats"]["chars"] == len("aaaabbb bbbaaaaaaaaabbbaaaaa\n")


@pytest.mark.parametrize("kind", ["word", "char"])
def test_min_count_tokens_become_unk(tmp_path, kind):
    p = tmp_path / "t.txt"
    p.write_text("el perro y el gato y el loro\nel perro y el gato\nzorro\n", encoding="utf-8")
    info = prepare_dataset([str(p)], tmp_path / "ds",
                           PrepareOptions(tokenizer=kind, min_count_tokens=2, val_fraction=0))
    tok = info.tokenizer
    assert tok.unk_token == UNK_TOKEN and tok.vocab[0] == UNK_TOKEN
    ids = _all_ids(info)
    text = p.read_text(encoding="utf-8")
    counts = Counter(tok.split(text))
    rare = {t for t, c in counts.items() if c < 2}
    assert rare and not rare & set(tok.vocab)
    expected_unk = sum(c for t, c in counts.items() if c < 2)
    assert int(np.count_nonzero(ids == tok.unk_id)) == expected_unk
    assert info.meta["stats"]["unk_tokens"] == expected_unk
    assert UNK_TOKEN in info.summary()


# ------------------------------------------------------------- WhatsApp
CHAT = (
    "[12.03.18, 16:03:59] Alice: Hola, ¿qué tal?\n"
    "[12.03.18, 16:05:36] Bob Smith: Bien, gracias.\n"
    "segunda línea del mismo mensaje\n"
    "[12.03.18, 16:06:00] Bob Smith: \u200eimage omitted\n"
    "[12.03.18, 16:07:14] Alice: Nos vemos mañana, Bob Smith: a las 5.\n"
    "[12.03.18, 16:08:00] Carla: ok\n"
)


def _check_chat(info, raw_text, path):
    chat = build_chat_corpus(parse_whatsapp(raw_text, path=str(path)))
    tok = info.tokenizer
    assert info.meta["source"]["format"] == "whatsapp"
    assert tok.kind == "word"
    assert info.meta["contacts"] == chat.contacts
    assert tok.specials == chat.specials == [f"{c}:" for c in chat.contacts] + [END_TOKEN]
    assert tok.vocab[: len(tok.specials)] == tok.specials
    assert tok.line_breaks == [END_TOKEN]
    ids = _all_ids(info)
    np.testing.assert_array_equal(ids, tok.encode(chat.text))
    assert int(np.count_nonzero(ids == tok.stoi[END_TOKEN])) == chat.text.count("\n") + 1
    return chat


def test_whatsapp_export_autodetected(tmp_path):
    p = tmp_path / "chat.txt"
    p.write_text(CHAT, encoding="utf-8")
    info = prepare_dataset([str(p)], tmp_path / "ds", PrepareOptions(val_fraction=0))
    chat = _check_chat(info, CHAT, p)
    assert chat.contacts == ["Alice", "Bob Smith", "Carla"]
    assert "image omitted" not in chat.text
    assert info.tokenizer.decode(info.tokens("train")).count("\n") == 4  # one line per message
    assert load_dataset(tmp_path / "ds").tokenizer.line_breaks == [END_TOKEN]


def test_whatsapp_shared_sample(tmp_path, shared_data):
    p = shared_data / "whatsapp_sample_ios.txt"
    info = prepare_dataset([str(p)], tmp_path / "ds", PrepareOptions())
    chat = _check_chat(info, p.read_text(encoding="utf-8"), p)
    assert {"Alice", "Tom", "Sandra", "Paul", "Anna", "Brokovski"} <= set(chat.contacts)
    assert "Contacts" in info.summary() or "contacts" in info.summary()


def test_format_text_forces_plain_text(tmp_path):
    p = tmp_path / "chat.txt"
    p.write_text(CHAT, encoding="utf-8")
    info = prepare_dataset([str(p)], tmp_path / "ds", PrepareOptions(format="text", val_fraction=0))
    assert info.meta["source"]["format"] == "text"
    assert info.tokenizer.kind == "char" and info.meta["contacts"] == []
    assert info.tokenizer.line_breaks == []
    assert info.tokenizer.decode(info.tokens("train")) == CHAT  # headers and all


# -------------------------------------------------------------- shuffle
def test_shuffle_sentences(tmp_path):
    sentences = [f"Frase número {i} con ñ y acentos: qué{'!' if i % 3 else '.'} " for i in range(60)]
    text = "".join(sentences).rstrip() + "\n"
    p = tmp_path / "t.txt"
    p.write_text(text, encoding="utf-8")

    def run(seed, name):
        info = prepare_dataset([str(p)], tmp_path / name,
                               PrepareOptions(shuffle_sentences=3, seed=seed, val_fraction=0.2))
        return info, info.tokenizer.decode(_all_ids(info))

    a, text_a = run(1, "a")
    b, text_b = run(1, "b")
    c, text_c = run(2, "c")
    assert _bins(tmp_path / "a") == _bins(tmp_path / "b")
    assert text_a == text_b != text_c
    assert text_a != text
    assert a.meta["key"] != c.meta["key"]
    assert Counter(text_a) == Counter(text_c) == Counter(text)
    assert sorted(s.strip() for s in split_sentences(text_a)) == sorted(s.strip() for s in split_sentences(text))
    assert sorted(s.strip() for s in split_sentences(text_c)) == sorted(s.strip() for s in split_sentences(text))
    # the validation tail comes from all over the text, not from its end
    n_train = len(a.tokens("train"))
    assert text_a[n_train:] != text[n_train:]


# --------------------------------------------------------- find_reusable
def test_find_reusable(tmp_path, text_file):
    out = tmp_path / "ds"
    opts = PrepareOptions(tokenizer="char")
    assert find_reusable(out, [str(text_file)], opts) is None  # nothing there yet
    prepare_dataset([str(text_file)], out, opts)
    reused = find_reusable(out, [str(text_file)], PrepareOptions(tokenizer="char"))
    assert reused is not None and reused.path == out
    # threads and piece size do not change the dataset
    assert find_reusable(out, [str(text_file)], PrepareOptions(tokenizer="char", threads=1, chunk_bytes=99)) is not None
    # any option that changes the ids does
    for changed in (dict(tokenizer="word"), dict(lowercase=True), dict(val_fraction=0.2),
                    dict(specials=["Sancho:"]), dict(shuffle_sentences=2), dict(min_count_tokens=2)):
        assert find_reusable(out, [str(text_file)], PrepareOptions(**{"tokenizer": "char", **changed})) is None, changed
    assert find_reusable(out, [str(tmp_path / "other.txt")], opts) is None  # another (missing) source

    st = text_file.stat()
    touched = st.st_mtime_ns + 5_000_000_000
    os.utime(text_file, ns=(st.st_atime_ns, touched))  # touched: same bytes, new mtime
    assert find_reusable(out, [str(text_file)], opts) is None
    prepare_dataset([str(text_file)], out, opts)
    assert find_reusable(out, [str(text_file)], opts) is not None
    with open(text_file, "a", encoding="utf-8") as f:  # edited: the size changes ...
        f.write("más\n")
    os.utime(text_file, ns=(st.st_atime_ns, touched))  # ... even with the mtime put back
    assert find_reusable(out, [str(text_file)], opts) is None
    # a damaged dataset is never reused
    prepare_dataset([str(text_file)], out, opts)
    with open(out / "val.bin", "ab") as f:
        f.write(b"\0\0")
    assert find_reusable(out, [str(text_file)], opts) is None


# ------------------------------------------------------ embedded default
def test_embedded_default_offline(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the embedded default must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr("gptfast.data.named.urlopen", no_network)
    out = tmp_path / "ds"
    info = prepare_dataset(None, out, PrepareOptions())
    assert info.tokenizer.kind == "char"
    assert 20 < info.tokenizer.vocab_size <= 96
    assert info.meta["source"]["format"] == "text"
    assert len(info.tokens("train")) > 100_000
    assert find_reusable(out, None, PrepareOptions()) is not None
    assert find_reusable(out, None, PrepareOptions(lowercase=True)) is None


# ---------------------------------------------------------- failure safety
def _good_dataset(tmp_path: Path, text_file: Path) -> tuple:
    out = tmp_path / "ds"
    prepare_dataset([str(text_file)], out, PrepareOptions(tokenizer="char"))
    return out, _snapshot(out)


def _assert_untouched(out: Path, before: dict) -> None:
    _no_temp_left(out)
    assert _snapshot(out) == before
    info = load_dataset(out)
    assert info.tokenizer.decode(_all_ids(info)) == SPANISH


def test_failure_midway_keeps_existing_dataset(tmp_path, text_file, monkeypatch):
    out, before = _good_dataset(tmp_path, text_file)
    other = tmp_path / "other.txt"
    other.write_text("otro texto\n" * 200, encoding="utf-8")
    real_encode = Tokenizer.encode
    calls = []

    def failing_encode(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("boom after the first piece")
        return real_encode(self, *args, **kwargs)

    monkeypatch.setattr(Tokenizer, "encode", failing_encode)
    with pytest.raises(RuntimeError, match="boom"):
        prepare_dataset([str(other)], out, PrepareOptions(tokenizer="char", chunk_bytes=64))
    assert len(calls) == 2
    _assert_untouched(out, before)


def test_interrupt_midway_keeps_existing_dataset(tmp_path, text_file, monkeypatch):
    out, before = _good_dataset(tmp_path, text_file)
    real_encode = Tokenizer.encode
    calls = []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real_encode(self, *args, **kwargs)

    monkeypatch.setattr(Tokenizer, "encode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset([str(text_file)], out, PrepareOptions(tokenizer="word", chunk_bytes=32))
    _assert_untouched(out, before)


def test_bad_utf8_keeps_existing_dataset(tmp_path, text_file):
    out, before = _good_dataset(tmp_path, text_file)
    bad = tmp_path / "bad.txt"
    good_part = ("línea buena\n" * 50).encode("utf-8")
    bad.write_bytes(good_part + b"mala \xff\xfe\n")
    with pytest.raises(InputError) as exc:
        prepare_dataset([str(bad)], out, PrepareOptions(tokenizer="char", chunk_bytes=64))
    msg = str(exc.value)
    assert str(bad) in msg and f"byte {len(good_part) + 5}" in msg and "line 51" in msg
    _assert_untouched(out, before)
    # and with errors="replace" the bad bytes become U+FFFD
    info = prepare_dataset([str(bad)], tmp_path / "replaced", PrepareOptions(encoding_errors="replace"))
    assert "\ufffd" in info.tokenizer.vocab


def test_full_disk_when_writing_metadata_keeps_existing_dataset(tmp_path, text_file, monkeypatch):
    out, before = _good_dataset(tmp_path, text_file)
    other = tmp_path / "other.txt"  # same length, other characters: same token counts
    other.write_text(SPANISH.upper(), encoding="utf-8")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dataset_mod, "atomic_write_text", full_disk)
    with pytest.raises(InputError, match="No space left on device"):
        prepare_dataset([str(other)], out, PrepareOptions(tokenizer="char"))
    _assert_untouched(out, before)


def test_crash_while_committing_never_mixes_old_metadata_with_new_ids(tmp_path, text_file, monkeypatch):
    out, _ = _good_dataset(tmp_path, text_file)
    other = tmp_path / "other.txt"
    other.write_text(SPANISH.upper(), encoding="utf-8")
    real_replace = Path.replace

    def crash_on_val(self, target):
        if Path(target).name == "val.bin":
            raise OSError(5, "Input/output error")
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", crash_on_val)
    with pytest.raises(InputError, match="Input/output error"):
        prepare_dataset([str(other)], out, PrepareOptions(tokenizer="char"))
    monkeypatch.undo()
    _no_temp_left(out)
    try:
        info = load_dataset(out)
    except InputError:
        return  # refused as incomplete: fine
    text = info.tokenizer.decode(_all_ids(info))  # else it must be one whole dataset
    assert text in (SPANISH, SPANISH.upper())


# ------------------------------------------------------------ load errors
def test_load_missing_dir(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(InputError) as exc:
        load_dataset(missing)
    assert str(missing) in str(exc.value) and "prepare" in str(exc.value)


def test_load_foreign_meta(tmp_path):
    d = tmp_path / "foreign"
    d.mkdir()
    (d / "meta.json").write_text(json.dumps({"vocab_size": 65, "itos": {}}), encoding="utf-8")  # nanoGPT style
    with pytest.raises(InputError) as exc:
        load_dataset(d)
    assert str(d / "meta.json") in str(exc.value)
    (d / "meta.json").write_bytes(b"\x80\x04 pickle, not json")
    with pytest.raises(InputError) as exc:
        load_dataset(d)
    assert str(d / "meta.json") in str(exc.value)


def test_load_meta_missing_fields(tmp_path, text_file):
    out, _ = _good_dataset(tmp_path, text_file)
    meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    for broken in ({k: v for k, v in meta.items() if k != "splits"},
                   {k: v for k, v in meta.items() if k != "dtype"},
                   {**meta, "dtype": "notadtype"},
                   {**meta, "dtype": "float64"},      # trusted blindly, these would read as garbage ids
                   {**meta, "dtype": "int16"},
                   {**meta, "dtype": "uint8"},
                   {**meta, "splits": {"train": {}}}):
        (out / "meta.json").write_text(json.dumps(broken), encoding="utf-8")
        with pytest.raises(InputError) as exc:
            load_dataset(out)
        assert str(out / "meta.json") in str(exc.value)


@pytest.mark.parametrize("split", ["train", "val"])
def test_load_truncated_bin(tmp_path, text_file, split):
    out, _ = _good_dataset(tmp_path, text_file)
    f = out / f"{split}.bin"
    f.write_bytes(f.read_bytes()[:-2])
    with pytest.raises(InputError) as exc:
        load_dataset(out)
    assert str(out) in str(exc.value) and f"{split}.bin" in str(exc.value)
    f.unlink()
    with pytest.raises(InputError):
        load_dataset(out)


def test_out_dir_that_cannot_be_written(tmp_path, text_file):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for out in (blocker, blocker / "sub"):
        with pytest.raises(InputError) as exc:
            prepare_dataset([str(text_file)], out, PrepareOptions())
        assert str(blocker) in str(exc.value) and "cannot write" in str(exc.value)
    assert blocker.read_text() == "not a folder"


def test_invalid_options():
    for bad in (dict(tokenizer="bpe"), dict(format="csv"), dict(val_fraction=1.0), dict(val_fraction=-0.1),
                dict(val_fraction=float("nan")), dict(min_count_chars=0), dict(min_count_tokens=0),
                dict(shuffle_sentences=-1), dict(specials=[""]), dict(specials=["a\nb"]), dict(pattern="(")):
        with pytest.raises(InputError):
            PrepareOptions(**bad).validate()


def test_empty_corpus(tmp_path):
    p = tmp_path / "ws.txt"
    p.write_text(" \n\t\n\n", encoding="utf-8")
    for opts in (PrepareOptions(), PrepareOptions(shuffle_sentences=2), PrepareOptions(tokenizer="word")):
        with pytest.raises(InputError) as exc:
            prepare_dataset([str(p)], tmp_path / "ds", opts)
        assert str(p) in str(exc.value) and "empty" in str(exc.value)
    assert not (tmp_path / "ds").exists() or not any((tmp_path / "ds").iterdir())
