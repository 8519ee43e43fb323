"""The C++ scanner gives exactly the reference's tokens and ids.

The reference (Python `re` + dict, gptfast/reference/tokenizer.py) is the
ground truth; every test here runs the same public API on both backends and
compares: vocabularies, token strings (`split`), counts and ids, on

(a) every corpus in shared/data, char and word level, with special tokens
    and min_count 1 and 2;
(b) random Unicode text (hypothesis), glued and overlapping specials;
(c) texts over 2 MB, where the C++ side cuts the text and encodes the
    pieces on several threads;
(d) the other patterns the scanner supports;
(e) patterns it does not support, which fall back to the reference.

A missing extension fails these tests; GPTFAST_REFERENCE=1 skips them.
"""
from __future__ import annotations

import random
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import gptfast.tokenizer as tokenizer_module
from gptfast import _backend
from gptfast.errors import InputError
from gptfast.reference.tokenizer import DEFAULT_WORD_PATTERN
from gptfast.tokenizer import UNK_TOKEN, Tokenizer

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CORPORA = sorted(p.name for p in SHARED_DATA.glob("*.txt")) if SHARED_DATA.is_dir() else []
# A chat turn end, a speaker and a contact (with spaces: no cutting at " ").
SPECIALS = ["<END>", "Sancho:", "+34 600 11 22 33"]
MIN_PARALLEL_BYTES = 2 << 20  # the C++ side splits texts from 2 MiB on

SUPPORTED_PATTERNS = [
    DEFAULT_WORD_PATTERN,
    r"\w+|[^\w\s]+",
    r"[A-Za-z]+|\d{1,3}|.",
    r"(?s:.)",
    r"\S+",
    r"'s|'t|\w+|[^\s]",
    r"\d{2,3}|\w+|.",
    r"[^\W\d]+|\d+|\s|.",
    r"\w{2,}|\w|[^\s]",
    r"\s+|\S",
    r"\.\.\.|[\u00a0-\u00ff]+|\w+|\W",
]


@pytest.fixture(scope="module", autouse=True)
def native():
    if _backend.reference_forced():
        pytest.skip("GPTFAST_REFERENCE=1 forces the reference: no C++ side to compare")
    if _backend._C is None:
        pytest.fail(f"gptfast._C is not built ({_backend._IMPORT_ERROR}); run pip install -e .")
    return _backend._C


def pair(text, kind="word", specials=(), **kw):
    """The same tokenizer fit on each backend; their vocabularies must agree."""
    cpp = Tokenizer.fit(text, kind=kind, specials=specials, backend="cpp", **kw)
    ref = Tokenizer.fit(text, kind=kind, specials=specials, backend="reference", **kw)
    assert (cpp.backend, ref.backend) == ("cpp", "reference")
    if cpp.vocab != ref.vocab:
        diff = next(i for i, (a, b) in enumerate(zip(cpp.vocab + [None], ref.vocab + [None])) if a != b)
        pytest.fail(f"vocabularies differ from entry {diff}: cpp {cpp.vocab[diff:diff + 5]} "
                    f"reference {ref.vocab[diff:diff + 5]}")
    return cpp, ref


def assert_same_ids(got: np.ndarray, want: np.ndarray, vocab, what: str = "") -> None:
    assert got.dtype == np.int32 and want.dtype == np.int32
    if np.array_equal(got, want):
        return
    n = min(len(got), len(want))
    bad = np.flatnonzero(got[:n] != want[:n])
    first = int(bad[0]) if bad.size else n
    lo = max(0, first - 3)
    show = lambda ids: [vocab[i] for i in ids[lo:first + 4].tolist()]  # noqa: E731
    pytest.fail(f"{what}: ids differ at token {first} (cpp {len(got)} tokens, reference {len(want)}): "
                f"cpp {show(got)} reference {show(want)}")


def re_split(text: str, pattern: str, specials=()) -> list:
    """Ground truth straight from `re`: specials first, then the pattern, with
    the pattern's leading global flags (``(?s)``, ``(?i)``...) applied to the whole."""
    flags = 0
    m = re.match(r"\(\?([aiLmsux]+)\)", pattern)
    if m:
        flags = sum(getattr(re, letter.upper()) for letter in m.group(1))
        pattern = pattern[m.end():]
    end = "\n)" if flags & re.VERBOSE else ")"  # a trailing comment must not eat the ")"
    rx = re.compile("|".join([re.escape(s) for s in specials] + [f"(?:{pattern}{end}"]), flags)
    return [t.group(0) for t in rx.finditer(text)]


def outcome(tok: Tokenizer, text: str, **kw):
    """Ids, or the InputError message: both backends must give the same one."""
    try:
        return tok.encode(text, **kw).tolist()
    except InputError as err:
        return str(err)


# ------------------------------------------------------------ (a) corpora
@pytest.mark.parametrize("kind", ["char", "word"])
@pytest.mark.parametrize(
    "name", CORPORA or [pytest.param("-", marks=pytest.mark.skip(reason=f"no shared data at {SHARED_DATA}"))]
)
def test_corpus(name, kind):
    text = (SHARED_DATA / name).read_text(encoding="utf-8")
    cpp, ref = pair(text, kind, SPECIALS, min_count=1)
    want = ref.encode(text)
    assert_same_ids(cpp.encode(text), want, ref.vocab, f"{name} {kind}")
    assert_same_ids(cpp.encode(text, threads=1), want, ref.vocab, f"{name} {kind} 1 thread")
    if kind == "char":
        assert cpp.decode(want) == text

    cpp2, ref2 = pair(text, kind, SPECIALS, min_count=2)
    # The reference encodes by looking tokens up (stoi.get(token, unk)), so its
    # ids under the min_count=2 vocabulary are its min_count=1 ids mapped
    # through the two vocabularies; this saves a second slow reference pass.
    fallback = -1 if ref2.unk_id is None else ref2.unk_id
    remap = np.array([ref2.stoi.get(t, fallback) for t in ref.vocab], dtype=np.int32)
    want2 = remap[want]
    assert (want2 >= 0).all()
    assert_same_ids(cpp2.encode(text), want2, ref2.vocab, f"{name} {kind} min_count=2")


# ------------------------------------------------------- (b) random text
FRAGMENTS = [
    "xbob:", "bob:bob:", "bob:", "bo", "<END>", "<E", "<END", "nin\u0303o", "²", "½", "\x1c", "\u00a0", "🤓",
    "٣", "_", "\u2028", "\r\n", " ", "\n", "\t", "a", "Z", "9", "1234", "'s", "'t", "'", "é", "ñ", "¿", "?",
    "...", "+34 600", "o b", "日本", "\u200b", "\ufeff", "\x00", "\x85", "\U0010FFFF", "𝟘", "Ⅻ", "ß", "-",
]
SPECIAL_POOL = ["bob:", "<END>", "<E", "bo", "b", "+34 600", "o b", "\n", "é", "🤓", "\r\n", "٣", "<END>\n", "..."]
ANY_CHAR = st.characters(codec="utf-8")  # every code point but the surrogates
TEXTS = st.one_of(
    st.text(ANY_CHAR, max_size=40),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(ANY_CHAR, max_size=2)), max_size=30).map("".join),
)
KINDS = [("char", None)] + [("word", p) for p in SUPPORTED_PATTERNS]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=TEXTS,
    other=TEXTS,
    specials=st.lists(st.sampled_from(SPECIAL_POOL), unique=True, max_size=4),
    kind_pattern=st.sampled_from(KINDS),
)
@example(text="xbob: bob:bob:<END <END>", other="bob:x", specials=["bob:", "<END>", "<E", "bo"],
         kind_pattern=("word", DEFAULT_WORD_PATTERN))
@example(text="nin\u0303o ² ½\x1c\u00a0🤓 ٣_\u2028a\r\nb", other="٣½🤓", specials=["bo"],
         kind_pattern=("word", DEFAULT_WORD_PATTERN))
@example(text="xbob:bob:<E<END>", other="<END><E", specials=["<E", "<END>", "bo", "bob:"],
         kind_pattern=("char", None))
def test_random_text(text, other, specials, kind_pattern):
    kind, pattern = kind_pattern
    cpp, ref = pair(text, kind, specials, pattern=pattern)
    assert cpp.split(text) == ref.split(text)
    assert cpp.count(text) == ref.count(text)
    assert_same_ids(cpp.encode(text), ref.encode(text), ref.vocab, repr(text))
    if kind == "char":
        assert cpp.decode(cpp.encode(text)) == text
    # Unseen text: <UNK> ids (word level), or the same error (char level).
    assert cpp.split(other) == ref.split(other)
    assert outcome(cpp, other) == outcome(ref, other)
    # A vocabulary fit elsewhere, with <UNK> at both levels.
    cpp_u, ref_u = pair(other, kind, specials, pattern=pattern, unk_token=UNK_TOKEN)
    assert outcome(cpp_u, text + other) == outcome(ref_u, text + other)


def test_long_tokens_and_hash_keys():
    """Vocabulary keys around the C++ table's 8- and 16-byte inline heads:
    shared prefixes, lengths 1..40 bytes, NUL bytes, multi-byte characters."""
    rng = random.Random(7)
    alphabet = ["a", "b", "\x00", "é", "🤓"]
    words = sorted({
        "".join(rng.choice(alphabet[:k]) for _ in range(n))
        for n in (1, 2, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 32, 33, 40)
        for k in (1, 2, 3, 5)
        for _ in range(6)
    })
    text = " ".join(rng.choice(words) for _ in range(3000))
    other = " ".join(rng.choice(words) + rng.choice(["", "a", "\x00", "é"]) for _ in range(3000))
    for pattern in (r"\S+", r"\w+|\S"):
        cpp, ref = pair(text, "word", words[:3], pattern=pattern)
        assert cpp.count(text) == ref.count(text)
        assert_same_ids(cpp.encode(text), ref.encode(text), ref.vocab, pattern)
        assert_same_ids(cpp.encode(other), ref.encode(other), ref.vocab, pattern + " unseen")


# ------------------------------------------------ (c) multi-threaded encode
def big_text(seed: int = 0, size: int = MIN_PARALLEL_BYTES + 300_000) -> str:
    """A >2 MiB text mixing ASCII, multi-byte characters, specials (some with
    spaces), CRLF lines, and a long stretch without a newline."""
    rng = random.Random(seed)
    words = ["Sancho", "Panza", "dijo", "señor", "ñandú", "niño", "año", "2024", "½", "٣", "🤓", "日本語", "don't",
             "<END>", "Sancho:", "+34 600 11 22 33", "+34 600", "o b", "x" * 40, "¿qué?", "—", "\u00a0", "\t"]
    seps = [" "] * 12 + ["\n", "\r\n", ", ", ". ", "  "]
    parts, n = [], 0
    while n < size:
        if 0.45 * size < n < 0.55 * size:  # ~10% of the text with no line break at all
            piece = rng.choice(words) + " "
        else:
            piece = rng.choice(words) + rng.choice(seps)
        parts.append(piece)
        n += len(piece.encode("utf-8"))
    return "".join(parts)


@pytest.fixture(scope="module")
def big():
    text = big_text()
    assert len(text.encode("utf-8")) >= MIN_PARALLEL_BYTES
    return text


@pytest.fixture(scope="module", params=["char", "word", "word-no-specials"])
def big_case(request, big):
    """(cpp tokenizer, reference ids) on the big text; the reference pass is slow, so it is shared."""
    kind = request.param.split("-")[0]
    specials = [] if request.param.endswith("no-specials") else ["o b"] + SPECIALS
    cpp = Tokenizer.fit(big, kind=kind, specials=specials, backend="cpp")
    ref = Tokenizer(kind, cpp.vocab, specials, unk_token=cpp.unk_token, backend="reference")
    return request.param, cpp, ref.encode(big)


@pytest.mark.parametrize("threads", [1, 2, 3, 4, 8])
def test_big_text_threads(big, big_case, threads):
    name, cpp, want = big_case
    assert_same_ids(cpp.encode(big, threads=threads), want, cpp.vocab, f"{name} threads={threads}")


def test_big_text_counts_and_small_ids(big, big_case):
    name, cpp, want = big_case
    counts = np.bincount(want, minlength=cpp.vocab_size)
    expected = {cpp.vocab[i]: int(c) for i, c in enumerate(counts) if c}
    for threads in (1, 2, 4):
        assert cpp.count(big, threads=threads) == expected, f"{name} count threads={threads}"
    # The binding's uint16 output (vocabularies up to 65536) holds the same ids.
    assert cpp.vocab_size <= 65536
    ids16, unknown = cpp._scanner.encode(big, 4, True)
    assert unknown is None and ids16.dtype == np.uint16
    assert np.array_equal(ids16.astype(np.int32), want)


def test_big_text_unknown_in_a_later_piece(big):
    """The first unknown is reported by character position even when a later
    thread finds it; ids before it are not needed."""
    char = Tokenizer.fit(big, kind="char", specials=SPECIALS, backend="cpp")
    text = big + "☃" + big[:1000] + "☄"
    for threads in (1, 2, 4):
        with pytest.raises(InputError) as err:
            char.encode(text, threads=threads)
        assert err.value.position == f"character {len(big)}"
        assert "'☃' (U+2603)" in str(err.value)
    word = Tokenizer.fit(big, kind="word", specials=SPECIALS, unk_token=None, backend="cpp")
    text = big + " Rocinante " + big
    for threads in (1, 2, 4):
        with pytest.raises(InputError) as err:
            word.encode(text, threads=threads)
        assert err.value.position == f"character {len(big) + 1}"
        assert "token 'Rocinante'" in str(err.value)


def test_big_text_without_separators(big):
    """No safe cut (runs of \\S+ can span anything but whitespace, and there is
    none): one piece, same ids."""
    text = big.replace(" ", "_").replace("\n", "|").replace("\r", "").replace("\t", "").replace("\u00a0", "")
    text = text[: MIN_PARALLEL_BYTES + 50_000]
    cpp = Tokenizer.fit(text, kind="word", pattern=r"\w+|\W+", backend="cpp")
    ref = Tokenizer(cpp.kind, cpp.vocab, pattern=cpp.pattern, unk_token=cpp.unk_token, backend="reference")
    want = ref.encode(text)
    for threads in (1, 4):
        assert_same_ids(cpp.encode(text, threads=threads), want, cpp.vocab, f"threads={threads}")


# --------------------------------------------------- (d) other patterns
@pytest.fixture(scope="module")
def sample(big):
    """~0.5 MB: a slice of the big text and of every corpus."""
    parts = [big[:200_000]]
    for name in CORPORA:
        parts.append((SHARED_DATA / name).read_text(encoding="utf-8")[:40_000])
    return "\n".join(parts)


@pytest.mark.parametrize("pattern", SUPPORTED_PATTERNS)
def test_supported_pattern(sample, pattern):
    cpp, ref = pair(sample, "word", ["<END>", "o b"], pattern=pattern)
    assert cpp.split(sample) == ref.split(sample) == re_split(sample, pattern, ["<END>", "o b"])
    assert_same_ids(cpp.encode(sample), ref.encode(sample), ref.vocab, pattern)


@pytest.mark.parametrize("pattern", [r"(?s)\w+|.", r"(?x) \w+ | [^\s]  # verbose", r"(?s)\d|\w+|."])
def test_global_flag_patterns(pattern):
    """DOTALL and VERBOSE are in the scanner's subset, also as global flags."""
    text = "uno dos\ntres, 4 5\n<END>"
    cpp, ref = pair(text, "word", ["<END>"], pattern=pattern)
    assert cpp.split(text) == ref.split(text) == re_split(text, pattern, ["<END>"])
    assert_same_ids(cpp.encode(text), ref.encode(text), ref.vocab, pattern)


# ------------------------------------------------- (e) unsupported patterns
@pytest.mark.parametrize("pattern", [r"\s*\w+|[^\w\s]", r"(?i)abc|\w+", r"ab|ac", r"\w+(?=\s)|\S"])
def test_unsupported_pattern_falls_back(monkeypatch, pattern):
    monkeypatch.setattr(tokenizer_module, "_warned_patterns", set())
    text = "abc ABC ab ac, ad 12 \n nin\u0303o abcabc <END>"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tok = Tokenizer.fit(text, kind="word", specials=["<END>"], pattern=pattern)
        again = Tokenizer.fit(text, kind="word", specials=["<END>"], pattern=pattern)  # warned once per pattern
        ids = tok.encode(text)
        split = tok.split(text)
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(runtime) == 1, [str(w.message) for w in caught]
    message = str(runtime[0].message)
    assert repr(pattern) in message and "reference" in message
    assert tok.backend == again.backend == "reference"
    ref = Tokenizer.fit(text, kind="word", specials=["<END>"], pattern=pattern, backend="reference")
    assert split == ref.split(text) == re_split(text, pattern, ["<END>"])
    assert np.array_equal(ids, ref.encode(text))
    with pytest.raises(ValueError, match="outside the C.. scanner's subset"):
        Tokenizer.fit(text, kind="word", pattern=pattern, backend="cpp")


@pytest.mark.parametrize("specials", [["don Quijote", "<END>", "Sancho:"], ["d", "don"], ["dé", "ñu", "S"]],
                         ids=["bench", "one-byte", "non-ascii-second"])
def test_char_level_specials_sharing_first_bytes_with_text(specials):
    """The char-level hot loop lets a byte that starts a special through when
    the next byte cannot continue any special: ids must still be re's."""
    text = "de don donde d\ndon Quijote, dé ñu Sa Sancho: <END> <E dd\n" * 3 + "d"   # ends on a special's first byte
    cpp, ref = pair(text, kind="char", specials=specials)
    for piece in (text, text[:-1], "d", "do", "don d", text[5:]):
        assert_same_ids(cpp.encode(piece, threads=1), ref.encode(piece), cpp.vocab, piece[:20])
