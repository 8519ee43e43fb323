"""The lad-gpt chat recipe: messages -> "contact: body <END>" corpus."""
from __future__ import annotations

import pytest

from gptfast.data.chat import END_TOKEN, UNK_TOKEN, build_chat_corpus, contact_token
from gptfast.data.whatsapp import ChatMessage, parse_whatsapp
from gptfast.errors import InputError


def msg(contact: str, text: str) -> ChatMessage:
    return ChatMessage(None, contact, text)


def test_tokens():
    assert END_TOKEN == "<END>" and UNK_TOKEN == "<UNK>"
    assert contact_token("Alice") == "Alice:"


def test_formatting_and_specials_in_order_of_first_appearance():
    corpus = build_chat_corpus([msg("Bob", "hola"), msg("Alice", "qué tal"), msg("Bob", "bien")])
    assert corpus.text == "Bob: hola <END>\nAlice: qué tal <END>\nBob: bien <END>"
    assert corpus.contacts == ["Bob", "Alice"]
    assert corpus.specials == ["Bob:", "Alice:", "<END>"]


def test_newlines_in_a_body_become_spaces():
    corpus = build_chat_corpus([msg("Ann", "one\ntwo\n\nthree")])
    assert corpus.text == "Ann: one two  three <END>"


def test_lowercase_applies_to_bodies_not_names():
    corpus = build_chat_corpus([msg("Alice", "HOLA Bob"), msg("BOB", "Ñandú")], lowercase=True)
    assert corpus.text == "Alice: hola bob <END>\nBOB: ñandú <END>"
    assert corpus.specials == ["Alice:", "BOB:", "<END>"]


def test_min_count_chars_drops_rare_characters_from_bodies_only():
    messages = [msg("Zoë", "aab!"), msg("Zoë", "aac"), msg("Yann", "ab")]
    # counts over the bodies: a=5, b=2, c=1, !=1
    corpus = build_chat_corpus(messages, min_count_chars=2)
    assert corpus.text == "Zoë: aab <END>\nZoë: aa <END>\nYann: ab <END>"
    corpus = build_chat_corpus(messages, min_count_chars=3)
    assert corpus.text == "Zoë: aa <END>\nZoë: aa <END>\nYann: a <END>"
    # names and special tokens are never touched, however rare their characters
    assert corpus.specials == ["Zoë:", "Yann:", "<END>"]


def test_min_count_chars_counts_after_lowercasing():
    messages = [msg("Ann", "Aab"), msg("Ann", "ab")]  # A=1, a=2, b=2
    assert build_chat_corpus(messages, min_count_chars=2).text == "Ann: ab <END>\nAnn: ab <END>"
    corpus = build_chat_corpus(messages, lowercase=True, min_count_chars=2)
    assert corpus.text == "Ann: aab <END>\nAnn: ab <END>"


def test_default_drops_nothing():
    text = "🤓 x\u00e9 ~"
    assert build_chat_corpus([msg("Ann", text)]).text == f"Ann: {text} <END>"


def test_spaces_are_never_dropped():
    # one space in the whole corpus, yet words must not be glued together
    corpus = build_chat_corpus([msg("Ann", "hi yo"), msg("Ann", "hoy")], min_count_chars=2)
    assert corpus.text == "Ann: h yo <END>\nAnn: hoy <END>"  # h, o, y: 2 each; i: 1


def test_message_emptied_by_dropping_is_dropped_with_its_only_contact():
    corpus = build_chat_corpus([msg("Ann", "hi hi"), msg("Bob", "🤓")], min_count_chars=2)
    assert corpus.text == "Ann: hi hi <END>"
    assert corpus.contacts == ["Ann"] and corpus.specials == ["Ann:", "<END>"]


def test_phone_number_contact_is_kept_intact():
    phone = "+34 600 11 22 33"
    corpus = build_chat_corpus([msg(phone, "hola"), msg("Ann", "hola")], min_count_chars=2)
    assert corpus.text == f"{phone}: hola <END>\nAnn: hola <END>"
    assert corpus.contacts == [phone, "Ann"]
    assert corpus.specials[0] == "+34 600 11 22 33:"


def test_no_messages_is_an_input_error():
    with pytest.raises(InputError):
        build_chat_corpus([])
    with pytest.raises(InputError, match="rarer than 5"):
        build_chat_corpus([msg("Ann", "xyz")], min_count_chars=5)


def test_lad_gpt_sample_end_to_end(shared_data):
    text = (shared_data / "whatsapp_sample_ios.txt").read_text(encoding="utf-8")
    corpus = build_chat_corpus(parse_whatsapp(text), lowercase=True)
    lines = corpus.text.split("\n")
    assert len(lines) == 202
    assert lines[0] == "Alice: hi, how are you guys? <END>"
    assert corpus.specials == ["Alice:", "Tom:", "Sandra:", "Paul:", "Anna:", "Brokovski:", "<END>"]
    assert all(line.endswith(" <END>") for line in lines)
    assert all(any(line.startswith(s + " ") for s in corpus.specials[:-1]) for line in lines)
