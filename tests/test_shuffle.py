"""The LitteraGPT sentence-chunk shuffle (gptfast.data.shuffle)."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from gptfast.data.shuffle import shuffle_sentence_chunks, split_sentences

TEXTS = [
    "",
    "   \n",
    "sin final de frase",
    "Una frase. Otra frase! ¿Y otra? Sí… fin",
    "Una frase. Otra frase! ¿Y otra? Sí… fin.\n",
    "Líneas.\n\nCon párrafos.\r\n\tY tabuladores.  Dobles  espacios.   ",
    "3.14 no corta, pero 3. sí. Fin.Pegado. Última",
    "¡Hola!¿Qué? ...  ¡Adiós!\n",
]


@pytest.mark.parametrize("text", TEXTS)
def test_split_sentences_round_trip(text):
    sentences = split_sentences(text)
    assert "".join(sentences) == text
    assert all(sentences)  # no empty pieces
    # every sentence but the last ends at a sentence end followed by whitespace
    for s in sentences[:-1]:
        body = s.rstrip()
        assert body[-1] in ".!?…" and s != body, repr(s)


def test_split_sentences_keeps_whitespace_with_sentence():
    assert split_sentences("Uno. Dos!\nTres?  Cuatro") == ["Uno. ", "Dos!\n", "Tres?  ", "Cuatro"]
    assert split_sentences("Pi vale 3.14 y ya.") == ["Pi vale 3.14 y ya."]


def test_split_random_text_round_trip():
    rng = random.Random(0)
    alphabet = "ab .!?…\n\t ñ"
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(60)))
        assert "".join(split_sentences(text)) == text


def _sentences(n: int) -> str:
    return "".join(f"Frase {i} con acentos, qué{'?!.…'[i % 4]}{' ' if i % 5 else chr(10)}" for i in range(n))


def test_shuffle_deterministic_and_seeded():
    text = _sentences(50)
    a = shuffle_sentence_chunks(text, 3, seed=1)
    assert a == shuffle_sentence_chunks(text, 3, seed=1)
    assert a != shuffle_sentence_chunks(text, 3, seed=2)
    assert a != text


@pytest.mark.parametrize("per_chunk", [1, 2, 3, 7, 100])
def test_shuffle_keeps_chunks_and_whitespace(per_chunk):
    text = _sentences(40)  # ends with whitespace after the last sentence
    out = shuffle_sentence_chunks(text, per_chunk, seed=5)
    assert Counter(out) == Counter(text)
    sentences = split_sentences(text)
    chunks = ["".join(sentences[i:i + per_chunk]) for i in range(0, len(sentences), per_chunk)]
    assert sorted(split_sentences(out)) == sorted(sentences)
    # the output is the chunks in some order, each keeping its trailing whitespace
    rest = out
    remaining = Counter(chunks)
    while rest:
        head = next(c for c in remaining if remaining[c] and rest.startswith(c))
        remaining[head] -= 1
        rest = rest[len(head):]
    assert not +remaining
    # no two words glued together: every sentence end is still followed by whitespace
    for s in split_sentences(out)[:-1]:
        assert s[-1].isspace()


def test_shuffle_text_with_no_sentence_end():
    text = "una línea sin puntuación\nni final"
    assert shuffle_sentence_chunks(text, 3, seed=0) == text + "\n"
    assert shuffle_sentence_chunks("", 3, seed=0) == ""


def test_shuffle_last_chunk_without_whitespace_gets_a_newline():
    text = "Uno. Dos. Tres. Cuatro sin fin"
    for seed in range(10):
        out = shuffle_sentence_chunks(text, 1, seed)
        assert Counter(out) == Counter(text + "\n")
        assert "fin\n" in out  # never "finUno."
        assert all(s.strip() in out for s in split_sentences(text))


def test_shuffle_rejects_bad_chunk_size():
    with pytest.raises(ValueError):
        shuffle_sentence_chunks("Uno. Dos.", 0, seed=0)
