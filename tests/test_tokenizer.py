"""The public Tokenizer API, run on both backends (markupsafe style).

Every test takes the `backend` fixture: "cpp" (the C++ scanner, gptfast._C)
and "reference" (Python `re` + dict).  A missing extension fails the "cpp"
runs; GPTFAST_REFERENCE=1 skips them.  Cross-backend equality on corpora and
random text lives in test_tokenizer_parity.py.
"""
from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptfast import _backend
from gptfast.errors import InputError
from gptfast.reference.tokenizer import DEFAULT_WORD_PATTERN
from gptfast.tokenizer import UNK_TOKEN, Tokenizer

CONTACT = "+34 600 11 22 33:"


@pytest.fixture(params=["cpp", "reference"])
def backend(request) -> str:
    if request.param == "cpp":
        if _backend.reference_forced():
            pytest.skip("GPTFAST_REFERENCE=1 forces the reference")
        if _backend._C is None:
            pytest.fail(f"gptfast._C is not built ({_backend._IMPORT_ERROR}); run pip install -e .")
    return request.param


def fit(text, backend, **kw) -> Tokenizer:
    tok = Tokenizer.fit(text, backend=backend, **kw)
    assert tok.backend == backend
    return tok


def tokens(tok: Tokenizer, text: str) -> list:
    """Token strings through encode (ids -> vocab); without unknowns they are split's."""
    out = [tok.vocab[i] for i in tok.encode(text)]
    if tok.unk_token not in out:
        assert out == tok.split(text)
    return out


# ------------------------------------------------------------------- basics
def test_backend_property_and_repr(backend):
    tok = fit("abc", backend)
    assert tok.backend == backend
    assert f"backend={backend!r}" in repr(tok)


def test_encode_returns_int32_array(backend):
    tok = fit("hola mundo", backend, kind="word")
    ids = tok.encode("hola mundo hola")
    assert isinstance(ids, np.ndarray) and ids.dtype == np.int32 and ids.ndim == 1
    assert ids.tolist() == [tok.stoi["hola"], tok.stoi["mundo"], tok.stoi["hola"]]


@pytest.mark.parametrize("kind", ["char", "word"])
def test_empty_text(backend, kind):
    tok = fit("abc \n\t", backend, kind=kind)
    ids = tok.encode("")
    assert ids.dtype == np.int32 and ids.shape == (0,)
    assert tok.split("") == [] and tok.count("") == {}
    assert tok.decode([]) == ""
    assert tok.encode("   \n\t ").shape == ((0,) if kind == "word" else (6,))


def test_threads_argument_changes_nothing(backend):
    text = "En un lugar de la Mancha, de cuyo nombre no quiero acordarme\n" * 50
    tok = fit(text, backend, kind="word")
    one = tok.encode(text, threads=1)
    for threads in (2, 4, 64):
        assert np.array_equal(tok.encode(text, threads=threads), one)
        assert tok.count(text, threads=threads) == tok.count(text, threads=1)


# A child whose address space has room for ~3 more thread stacks encodes
# 24 MB (up to 16 parts, one thread each) on 16 threads.
FEW_THREADS = """
import resource
import numpy as np
from gptfast.tokenizer import Tokenizer
text = "En un lugar de la Mancha, de cuyo nombre no quiero acordarme\\n" * 400_000
tok = Tokenizer.fit(text[:10_000], kind="word", backend="cpp")
one = tok.encode(text, threads=1)
many = np.empty_like(one)   # the output, allocated before the limit
size = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
room = 4 * len(text) + 30 * 2**20   # the encoder's id buffer (4 bytes per input byte), and ~3 thread stacks
resource.setrlimit(resource.RLIMIT_AS, (size + room, resource.getrlimit(resource.RLIMIT_AS)[1]))
many[:] = tok.encode(text, threads=16)
print("same" if np.array_equal(many, one) else "different")
"""


@pytest.mark.skipif(_backend._C is None or _backend.reference_forced(),
                    reason="the C++ scanner's threads (the reference encodes on one thread)")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="provoked with Linux's RLIMIT_AS and /proc")
def test_threads_the_system_refuses_change_nothing():
    """When the system will not start all the encoding threads, the calling
    thread encodes the parts left: the same ids (it used to abort)."""
    import subprocess

    child = subprocess.run([sys.executable, "-c", FEW_THREADS], capture_output=True, text=True, timeout=300)
    assert (child.returncode, child.stdout.strip()) == (0, "same"), child.stderr[-2000:]


def test_bad_arguments(backend):
    with pytest.raises(ValueError, match="kind"):
        Tokenizer.fit("abc", kind="bpe", backend=backend)
    with pytest.raises(ValueError, match="backend"):
        Tokenizer.fit("abc", backend="gpu")
    with pytest.raises(ValueError, match="non-empty"):
        Tokenizer.fit("abc", specials=["<END>", ""], backend=backend)
    with pytest.raises(ValueError, match="min_count"):
        Tokenizer.fit("abc", min_count=0, backend=backend)
    with pytest.raises(ValueError, match="duplicate"):
        Tokenizer("char", ["a", "b", "a"], backend=backend)
    with pytest.raises(ValueError, match="missing"):
        Tokenizer("char", ["a", "b"], specials=["<END>"], backend=backend)


def test_reference_forced_by_environment(monkeypatch):
    monkeypatch.setenv("GPTFAST_REFERENCE", "1")
    assert Tokenizer.fit("abc").backend == "reference"
    assert Tokenizer.fit("abc", kind="word").backend == "reference"


# ------------------------------------------------------------- vocabulary
def test_char_vocab_order(backend):
    tok = fit("banana\n", backend, specials=["<END>", "an"])
    # Specials first in the given order; then characters by code point; no
    # <UNK> at char level unless min_count dropped something.
    assert tok.vocab == ["<END>", "an", "\n", "a", "b"]
    assert tok.unk_token is None and tok.unk_id is None
    assert tokens(tok, "banana\n") == ["b", "an", "an", "a", "\n"]


def test_char_vocab_min_count_adds_unk(backend):
    tok = fit("banana", backend, min_count=2, specials=["<END>"])
    # b occurs once: dropped; <UNK> right after the specials.
    assert tok.vocab == ["<END>", UNK_TOKEN, "a", "n"]
    assert tok.encode("bandana<END>").tolist() == [1, 2, 3, 1, 2, 3, 2, 0]


def test_word_vocab_order(backend):
    text = "b a a c c b d ! ! ! <END> <END>"
    tok = fit(text, backend, kind="word", specials=["<END>", "Ana:"])
    # Specials, <UNK>, then words by count desc, ties by the string.
    assert tok.vocab == ["<END>", "Ana:", UNK_TOKEN, "!", "a", "b", "c", "d"]
    assert tok.unk_id == 2


def test_word_min_count(backend):
    text = "el perro y el gato y el ratón"
    tok = fit(text, backend, kind="word", min_count=2)
    assert tok.vocab == [UNK_TOKEN, "el", "y"]
    assert tokens(tok, "el gato") == ["el", UNK_TOKEN]
    assert tok.split("el gato") == ["el", "gato"]  # split is vocabulary-free


def test_word_vocab_counts_match_count(backend):
    text = "uno dos dos tres tres tres 1 22 333."
    tok = fit(text, backend, kind="word")
    assert tok.count(text) == {"uno": 1, "dos": 2, "tres": 3, "1": 1, "2": 2, "3": 3, ".": 1}
    assert tok.vocab == [UNK_TOKEN, "3", "tres", "2", "dos", ".", "1", "uno"]


def test_fit_on_chunks_equals_fit_on_the_whole(backend):
    chunks = ["En un lugar de la Mancha,\n", "de cuyo nombre no quiero acordarme,\n", "no ha mucho tiempo\n"]
    for kind in ("char", "word"):
        assert fit(iter(chunks), backend, kind=kind).vocab == fit("".join(chunks), backend, kind=kind).vocab


def test_specials_never_counted_as_words(backend):
    tok = fit("<END> hola <END> hola <END>", backend, kind="word", specials=["<END>"])
    assert tok.vocab == ["<END>", UNK_TOKEN, "hola"]


# ---------------------------------------------------------------- unknowns
def unknown_message(source: str, position: int, what: str) -> str:
    return (
        f"{source} (character {position}): {what} is not in the tokenizer's vocabulary, "
        f"which has no {UNK_TOKEN}; use only characters the model was trained on"
    )


def test_char_unknown_without_unk_names_position_and_character(backend):
    tok = fit("abc ñ", backend)
    # The position counts characters (ñ is 2 bytes in UTF-8, 🤓 4), not bytes.
    with pytest.raises(InputError) as err:
        tok.encode("añ bzc")
    assert str(err.value) == unknown_message("<text>", 4, "character 'z' (U+007A)")
    assert err.value.position == "character 4" and err.value.path == "<text>"
    with pytest.raises(InputError) as err:
        tok.encode("ñ a b c ñ🤓", source="notes.txt")
    assert str(err.value) == unknown_message("notes.txt", 9, "character '🤓' (U+1F913)")
    assert err.value.path == "notes.txt"
    with pytest.raises(InputError) as err:
        tok.encode("ab\nc")
    assert str(err.value) == unknown_message("<text>", 2, "character '\\n' (U+000A)")


def test_char_unknown_after_a_special(backend):
    tok = fit("ab", backend, specials=["<END>"])
    with pytest.raises(InputError) as err:
        tok.encode("a<END>b<END>é")
    assert str(err.value) == unknown_message("<text>", 12, "character 'é' (U+00E9)")


def test_word_unknown_without_unk_names_the_token(backend):
    tok = fit("hola mundo", backend, kind="word", unk_token=None)
    assert UNK_TOKEN not in tok.vocab
    with pytest.raises(InputError) as err:
        tok.encode("hola  señor mundo", source="chat.txt")
    assert str(err.value) == unknown_message("chat.txt", 6, "token 'señor'")


def test_unknown_with_unk_gives_the_unk_id(backend):
    tok = fit("abc", backend, unk_token=UNK_TOKEN)
    assert tok.vocab == [UNK_TOKEN, "a", "b", "c"]
    assert tok.encode("azb🤓").tolist() == [1, 0, 2, 0]
    word = fit("hola mundo", backend, kind="word")
    assert word.encode("hola señor").tolist() == [word.stoi["hola"], word.unk_id]


# -------------------------------------------------------------- decoding
def test_char_decode_is_an_exact_round_trip(backend):
    text = "¿Qué tal?\r\n  ñandú 🤓\t½ ² \u2028 nin\u0303o <END>x"
    tok = fit(text, backend, specials=["<END>"])
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(text).tolist()) == text


@pytest.mark.parametrize(
    "text",
    [
        "¿Qué tal, amigo?",
        "¡Hola! ¿Cómo estás?",
        "En 1605 y en 1615.",
        "Dijo (en voz baja): sí; no...",
        "El 25% de 100 es 25.",
    ],
)
def test_word_decode_is_readable(backend, text):
    tok = fit(text, backend, kind="word")
    assert tok.decode(tok.encode(text)) == text


def test_word_decode_glues_digits_and_closing_punctuation(backend):
    tok = fit("año 2024 , hola .", backend, kind="word")
    assert tok.split("año 2024") == ["año", "2", "0", "2", "4"]
    assert tok.decode(tok.encode("hola , año 2024 .")) == "hola, año 2024."


def test_word_decode_line_breaks(backend):
    tok = Tokenizer.fit("Ana: hola <END> Luis: adiós <END>", kind="word", specials=["<END>", "Ana:", "Luis:"],
                        line_breaks=["<END>"], backend=backend)
    assert tok.decode(tok.encode("Ana: hola <END> Luis: adiós <END>")) == "Ana: hola <END>\nLuis: adiós <END>\n"


PIECES = ["el", "don", "t", "'", "’", '"', ".", ",", "¿", "¡", "(", ")", "3", "14", "x_y", "<END>", "hola", ":",
          "«", "»", "!", "?", "s", "\n"]


@settings(max_examples=300, deadline=None)
@given(tokens=st.lists(st.sampled_from(PIECES), max_size=14), cuts=st.lists(st.integers(0, 14), max_size=4))
def test_stream_decoder_pieces_add_up_to_decode(tokens, cuts):
    """Tokens fed to a stream decoder in any chunks: the text it returns as
    final, plus what is pending at the end, is decode() of them all; and a
    look at pending() in between changes nothing."""
    tok = Tokenizer("word", ["<END>"] + sorted(set(PIECES) - {"<END>"}), ["<END>"], DEFAULT_WORD_PATTERN,
                    None, ["<END>"])
    ids = [tok.stoi[t] for t in tokens]
    decoder = tok.stream_decoder()
    text, start = "", 0
    for cut in sorted(cuts) + [len(ids)]:
        text += decoder.add(ids[start:max(start, cut)])
        decoder.pending()
        start = max(start, cut)
    assert text + decoder.pending() == tok.decode(ids)
    assert tok.decode(ids).startswith(text)


# ---------------------------------------------------------------- specials
def test_contact_special_is_one_token(backend):
    text = f"12/03/24 10:01 - {CONTACT} hola, ¿vienes?\n12/03/24 10:02 - Ana: sí"
    tok = fit(text, backend, kind="word", specials=[CONTACT, "Ana:"])
    assert tokens(tok, text) == [
        "1", "2", "/", "0", "3", "/", "2", "4", "1", "0", ":", "0", "1", "-", CONTACT, "hola", ",", "¿",
        "vienes", "?", "1", "2", "/", "0", "3", "/", "2", "4", "1", "0", ":", "0", "2", "-", "Ana:", "sí",
    ]
    char = fit(text, backend, specials=[CONTACT])
    assert tokens(char, f"a{CONTACT}h")[1:-1] == [CONTACT]


def test_specials_match_only_where_a_token_starts(backend):
    tok = fit("xbob: bob: bob:bob:", backend, kind="word", specials=["bob:"])
    assert tok.split("xbob: bob:bob:") == ["xbob", ":", "bob:", "bob:"]
    assert tok.split("bob:xbob:") == ["bob:", "xbob", ":"]
    # Char level: every character starts a token, so specials match anywhere.
    char = fit("xbob:", backend, specials=["bob:"])
    assert char.split("xbob:") == ["x", "bob:"]


def test_overlapping_specials_resolve_in_list_order(backend):
    text = "<END> bob: bo"
    first = fit(text, backend, kind="word", specials=["<E", "<END>", "bo", "bob:"])
    assert first.split(text) == ["<E", "ND", ">", "bo", "b", ":", "bo"]
    second = fit(text, backend, kind="word", specials=["<END>", "<E", "bob:", "bo"])
    assert second.split(text) == ["<END>", "bob:", "bo"]
    char = fit(text, backend, specials=["bo", "bob:"])
    assert char.split("bob:") == ["bo", "b", ":"]


def test_special_is_a_prefix_of_a_word(backend):
    tok = fit("bob bobby", backend, kind="word", specials=["bob"])
    # The special wins at a token start, even inside a longer word (as re does).
    assert tok.split("bobby xbob") == ["bob", "by", "xbob"]


# -------------------------------------------------------------- surrogates
# A str with lone surrogates has no UTF-8 form, so the C++ path cannot read
# it; such text runs on the reference and gives the reference's answer.
@pytest.mark.parametrize("kind", ["char", "word"])
def test_lone_surrogates_in_text_fall_back_to_the_reference(backend, kind):
    clean = "a b c ab"
    text = "a\ud800b c\udfff \ud83e ab"
    tok = fit(clean, backend, kind=kind, unk_token=UNK_TOKEN)
    ref = Tokenizer.fit(clean, kind=kind, unk_token=UNK_TOKEN, backend="reference")
    assert tok.split(text) == ref.split(text)
    assert tok.count(text) == ref.count(text)
    assert np.array_equal(tok.encode(text), ref.encode(text))
    assert tok.unk_id in tok.encode(text).tolist()
    with pytest.raises(InputError, match="U\\+D800"):
        fit("abc ", backend, kind="char").encode("a\ud800")


@pytest.mark.parametrize("kind", ["char", "word"])
def test_fit_on_text_with_lone_surrogates(backend, kind):
    """The vocabulary itself then holds lone surrogates."""
    text = "a\ud800b c\udfff \ud83e"
    tok = Tokenizer.fit(text, kind=kind, backend=backend)
    ref = Tokenizer.fit(text, kind=kind, backend="reference")
    assert tok.vocab == ref.vocab
    assert np.array_equal(tok.encode(text), ref.encode(text))
    if kind == "char":
        assert tok.decode(tok.encode(text)) == text


# -------------------------------------------------------------- save / load
@pytest.mark.parametrize("kind", ["char", "word"])
def test_save_load_round_trip(backend, kind, tmp_path):
    text = "¿Qué tal, amigo? <END> Sancho: bien 🤓\n"
    tok = Tokenizer.fit(text, kind=kind, specials=["<END>", "Sancho:"], min_count=1,
                        line_breaks=["<END>"], backend=backend)
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    raw = path.read_text(encoding="utf-8")
    data = json.loads(raw)  # plain JSON, no pickle
    assert data["format"] == "gptfast.tokenizer" and data["kind"] == kind
    assert data["vocab"] == tok.vocab and data["specials"] == ["<END>", "Sancho:"]
    assert "¿" in raw and "🤓" in raw  # human readable: not \\u escaped
    assert raw.count("\n") > 3  # indented
    back = Tokenizer.load(path, backend=backend)
    assert back.backend == backend
    assert back.to_dict() == tok.to_dict()
    assert np.array_equal(back.encode(text), tok.encode(text))
    assert back.decode(back.encode(text)) == tok.decode(tok.encode(text))


def test_saved_by_one_backend_loads_on_the_other(backend, tmp_path):
    other = "reference" if backend == "cpp" else "cpp"
    if other == "cpp" and (_backend.reference_forced() or _backend._C is None):
        pytest.skip("the other backend is the extension")
    text = "En un lugar de la Mancha, de cuyo nombre"
    tok = fit(text, backend, kind="word")
    tok.save(tmp_path / "t.json")
    assert np.array_equal(Tokenizer.load(tmp_path / "t.json", backend=other).encode(text), tok.encode(text))


CORRUPT = {
    "not json": b"{this is not json",
    "not utf-8": b'{"format": "gptfast.tokenizer", "vocab": ["\xff\xfe"]}',
    "empty": b"",
    "a list": b"[1, 2, 3]",
    "foreign json": b'{"model": {"type": "BPE"}, "vocab": {"a": 0}}',
    "no vocab": b'{"format": "gptfast.tokenizer", "kind": "char"}',
    "bad kind": b'{"format": "gptfast.tokenizer", "kind": "bpe", "vocab": ["a"]}',
    "duplicate vocab": b'{"format": "gptfast.tokenizer", "kind": "char", "vocab": ["a", "a"]}',
    "special not in vocab": b'{"format": "gptfast.tokenizer", "kind": "char", "vocab": ["a"], "specials": ["<END>"]}',
    "unk not in vocab": b'{"format": "gptfast.tokenizer", "kind": "char", "vocab": ["a"], "unk_token": "<UNK>"}',
    "vocab of numbers": b'{"format": "gptfast.tokenizer", "kind": "char", "vocab": [1, 2]}',
    "vocab not a list": b'{"format": "gptfast.tokenizer", "kind": "char", "vocab": 7}',
    "bad pattern": b'{"format": "gptfast.tokenizer", "kind": "word", "vocab": ["a"], "pattern": "(\\\\w+"}',
}


@pytest.mark.parametrize("name", list(CORRUPT))
def test_load_corrupt_or_foreign_file(backend, tmp_path, name):
    path = tmp_path / f"{name.replace(' ', '_')}.json"
    path.write_bytes(CORRUPT[name])
    with pytest.raises(InputError) as err:
        Tokenizer.load(path, backend=backend)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)  # one line


def test_load_missing_file(backend, tmp_path):
    with pytest.raises(InputError, match="no such file") as err:
        Tokenizer.load(tmp_path / "nope.json", backend=backend)
    assert str(tmp_path / "nope.json") in str(err.value)


# --------------------------------------------------------------- patterns
def test_custom_pattern(backend):
    tok = fit("don't stop, 2024", backend, kind="word", pattern=r"'t|\w+|[^\s]")
    assert tok.split("don't stop, 2024") == ["don", "'t", "stop", ",", "2024"]


def test_unsupported_pattern_warns_once_and_runs_on_the_reference(backend, monkeypatch):
    import gptfast.tokenizer as tokenizer_module

    monkeypatch.setattr(tokenizer_module, "_warned_patterns", set())
    pattern = r"\s*\w+|[^\w\s]"
    if backend == "cpp":
        with pytest.raises(ValueError, match="outside the C.. scanner's subset"):
            Tokenizer.fit("a b", kind="word", pattern=pattern, backend="cpp")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the reference backend asked for: no warning
        tok = Tokenizer.fit(" a bb,", kind="word", pattern=pattern, backend="reference")
    assert tok.split(" a bb,") == [" a", " bb", ","]
