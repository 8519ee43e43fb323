"""WhatsApp export parsing: the shared samples, synthetic variants, errors."""
from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptfast.data.whatsapp import FORMATS, ChatMessage, looks_like_whatsapp, parse_whatsapp
from gptfast.errors import InputError

LOREM = "Lorem ipsum dolor sit amet,\nconsectetur adipiscing elit. Duis libero."
NERD = "\U0001f913"  # the emoji in the chat-miner fixtures

# The 10 chat-miner lines, as (date, contact, text) we expect to keep.  Derived
# from the files and chat-miner's parse (test/whatsapp/*_target.*):
#  - "John Doe:." has no "Name: " part; chat-miner reads it as a disappearing
#    message placeholder ("<Disappearing Message>"), i.e. no typed text: dropped.
#  - 'created group "Groupname"' and "You were added" are system lines: dropped.
#  - chat-miner joins continuation lines with " "; we keep "\n" (chat.py makes it " ").
CHAT_MINER_EXPECTED = [
    (dt.datetime(2019, 1, 1, 11, 25), "John Doe", "Lorem ipsum dolor sit amet."),
    (dt.datetime(2019, 1, 30, 20, 49), "Jahn Doe", LOREM),
    (dt.datetime(2020, 6, 10, 15, 55), "John-John Doe", "Lorem ipsum : dolor sit amet."),
    (dt.datetime(2021, 12, 10, 10, 10), f"John Doe {NERD}", f"Lorem ipsum {NERD}"),
    (dt.datetime(2021, 12, 20, 12, 10), NERD, f"Lorem ipsum {NERD}"),
    (dt.datetime(2021, 12, 30, 22, 1), "John Doe", LOREM),
]


def triples(messages: list[ChatMessage]) -> list[tuple]:
    return [(m.timestamp, m.contact, m.text) for m in messages]


def pairs(messages: list[ChatMessage]) -> list[tuple[str, str]]:
    return [(m.contact, m.text) for m in messages]


def read(path) -> str:
    # newline="" keeps CRLF so the parser, not Python, has to handle it.
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


# --- the shared samples -----------------------------------------------------

@pytest.mark.parametrize("name", [
    "whatsapp_sample_ios_brackets.txt",      # [01/20/19 11:23] (month first, no comma)
    "whatsapp_sample_android.txt",           # 20/01/19, 11:23 -
    "whatsapp_sample_android_12h.txt",       # 01/20/2019, 11:23 a. m. -
    "whatsapp_sample_android_yyyymmdd.txt",  # 2019/01/20, 11:23 -
])
def test_chat_miner_samples(shared_data, name):
    text = read(shared_data / name)
    assert looks_like_whatsapp(text)
    assert triples(parse_whatsapp(text, path=name)) == CHAT_MINER_EXPECTED


def test_lad_gpt_sample(shared_data):
    text = read(shared_data / "whatsapp_sample_ios.txt")
    assert "\r\n" in text and looks_like_whatsapp(text)
    messages = parse_whatsapp(text)
    assert len(messages) == 202  # 204 lines: 202 headers + 2 empty trailing lines
    assert {m.contact for m in messages} == {"Alice", "Tom", "Sandra", "Paul", "Anna", "Brokovski"}
    assert [m.contact for m in messages[:6]] == ["Alice", "Tom", "Sandra", "Paul", "Anna", "Brokovski"]
    assert messages[0] == ChatMessage(dt.datetime(2018, 3, 12, 16, 3, 59), "Alice", "Hi, how are you guys?")
    assert pairs(messages[2:4]) == [
        ("Sandra", "Hey Alice, I'm doing well too. Thanks for asking!"),
        ("Paul", "Hi all, what's going on?"),
    ]
    assert messages[-1].contact == "Anna" and messages[-1].text.startswith("Cheers, everyone! ")
    assert messages[-1].timestamp == dt.datetime(2018, 3, 12, 21, 28, 44)
    assert not any("\r" in m.text or "\n" in m.text for m in messages)


# --- synthetic variants -----------------------------------------------------

def test_spanish_android_12h_with_narrow_nbsp():
    text = (
        "15/3/24, 9:05\u202fp.\u00a0m. - Los mensajes y las llamadas están cifrados de extremo a extremo. "
        "Nadie fuera de este chat, ni siquiera WhatsApp, puede leerlos ni escucharlos.\n"
        '15/3/24, 9:05\u202fp. m. - María creó el grupo "Cena"\n'
        "15/3/24, 9:06\u202fp. m. - María te añadió\n"
        "15/3/24, 9:07\u202fp. m. - María: ¿Cenamos el viernes?\n"
        "15/3/24, 9:08\u202fp. m. - +34 600 11 22 33: Vale: a las 9\n"
        "15/3/24, 9:09\u202fp. m. - Pedro: <Multimedia omitido>\n"
        "15/3/24, 9:10\u202fp. m. - Pedro: Se eliminó este mensaje.\n"
        "16/3/24, 12:01\u202fa. m. - Pedro salió\n"
        "16/3/24, 12:02\u202fa. m. - Ana añadió a Luis\n"
        "16/3/24, 12:03\u202fa. m. - Luis: Hola\nqué tal\n"
    )
    assert looks_like_whatsapp(text)
    assert triples(parse_whatsapp(text)) == [
        (dt.datetime(2024, 3, 15, 21, 7), "María", "¿Cenamos el viernes?"),
        (dt.datetime(2024, 3, 15, 21, 8), "+34 600 11 22 33", "Vale: a las 9"),
        (dt.datetime(2024, 3, 16, 0, 3), "Luis", "Hola\nqué tal"),  # 12 a. m. is midnight
    ]


def test_ios_attachments_crlf_bom_and_marks():
    text = (
        "\ufeff[12/03/2023, 10:00:00\u202fPM] Cena: \u200eMessages and calls are end-to-end encrypted. "
        "No one outside of this chat, not even WhatsApp, can read or listen to them.\r\n"
        "\u200e[12/03/2023, 10:01:00\u202fPM] Alice: \u200eimage omitted\r\n"
        "[12/03/2023, 10:02:00\u202fPM] Alice: \u200e<attached: 00000012-PHOTO-2023-03-12.jpg>\r\n"
        "[12/03/2023, 10:03:15\u202fPM] Bob: look at this\r\nsecond line\r\n"
        "[13/03/2023, 9:04:00\u202fAM] ~\u202fCarol: <Media omitted>\r\n"
        "[13/03/2023, 9:05:00\u202fAM] ~\u202fCarol: \u200eThis message was deleted.\r\n"
        "[13/03/2023, 9:06:00\u202fAM] ~\u202fCarol: This message was deleted\r\n"
        "[13/03/2023, 9:07:00\u202fAM] ~\u202fCarol: hi\r\n"
        "\u200e[13/03/2023, 12:08:00\u202fPM] \u200eAlice\u200e: ok : fine <This message was edited>\r\n"
    )
    assert looks_like_whatsapp(text)
    assert triples(parse_whatsapp(text)) == [
        (dt.datetime(2023, 3, 12, 22, 3, 15), "Bob", "look at this\nsecond line"),
        (dt.datetime(2023, 3, 13, 9, 7), "Carol", "hi"),
        (dt.datetime(2023, 3, 13, 12, 8), "Alice", "ok : fine"),
    ]


def test_english_android_system_lines_and_media():
    text = (
        "12/24/19, 11:20 - Messages and calls are end-to-end encrypted. No one outside of this chat, "
        "not even WhatsApp, can read or listen to them. Tap to learn more.\n"
        "12/24/19, 11:21 - Alice added Bob\n"
        '12/24/19, 11:22 - Alice changed the subject from "Old" to "New: now"\n'
        "12/24/19, 11:23 - Alice changed the group description\n"
        "a description line that belongs to the system line\n"
        "12/24/19, 11:24 pm - Bob: <Media omitted>\n"
        "12/24/19, 11:25 pm - Bob: hello\n"
    )
    assert triples(parse_whatsapp(text)) == [(dt.datetime(2019, 12, 24, 23, 25), "Bob", "hello")]


@pytest.mark.parametrize("header, stamp", [
    ("[20/01/2019, 11:23:45] ", dt.datetime(2019, 1, 20, 11, 23, 45)),  # iOS, 4-digit year
    ("[20.01.19, 11:23:45] ", dt.datetime(2019, 1, 20, 11, 23, 45)),    # iOS, dotted (lad-gpt)
    ("[1/20/19, 11:23:45 PM] ", dt.datetime(2019, 1, 20, 23, 23, 45)),  # iOS US
    ("[2019-01-20 11:23] ", dt.datetime(2019, 1, 20, 11, 23)),
    ("2019/01/20, 11:23 - ", dt.datetime(2019, 1, 20, 11, 23)),
    ("20/01/2019, 11:23 a.m. - ", dt.datetime(2019, 1, 20, 11, 23)),
    ("1/20/19, 11:23 pm - ", dt.datetime(2019, 1, 20, 23, 23)),
    ("20-01-19 12:05 AM - ", dt.datetime(2019, 1, 20, 0, 5)),
    ("\u200f20/01/19, 11:23\u200f - ", dt.datetime(2019, 1, 20, 11, 23)),  # RTL marks
])
def test_header_variants(header, stamp):
    messages = parse_whatsapp(f"{header}Ann Lee: hi there\n")
    assert triples(messages) == [(stamp, "Ann Lee", "hi there")]


@pytest.mark.parametrize("dates, first", [
    (["03/04/21", "13/04/21"], dt.datetime(2021, 4, 3)),  # a first field > 12: day first
    (["03/04/21", "05/13/21"], dt.datetime(2021, 3, 4)),  # a second field > 12: month first
    (["03/04/21", "05/06/21"], dt.datetime(2021, 4, 3)),  # ambiguous file: day first
])
def test_date_order_is_decided_per_file(dates, first):
    text = "".join(f"{d}, 10:00 - Ann: msg {i}\n" for i, d in enumerate(dates))
    assert parse_whatsapp(text)[0].timestamp == first + dt.timedelta(hours=10)


def test_multiline_messages_keep_their_lines():
    text = ("[20/01/19, 11:23:45] Ann: one\r\n\r\n  two, indented\r\nthree\r\n"
            "[20/01/19, 11:24:00] Bob: \r\nstarts on the next line\r\n\r\n")
    assert pairs(parse_whatsapp(text)) == [
        ("Ann", "one\n\n  two, indented\nthree"),
        ("Bob", "starts on the next line"),
    ]


def test_lines_before_the_first_header_are_ignored():
    text = "some preamble\n20/01/19, 11:23 - Ann: hi\n"
    assert pairs(parse_whatsapp(text)) == [("Ann", "hi")]


def test_a_body_that_looks_like_the_other_platform_stays_a_body():
    text = ("20/01/19, 11:23 - Ann: quoting:\n[20/01/19, 11:20:00] Bob: old\n"
            "20/01/19, 11:24 - Bob: ok\n")
    assert pairs(parse_whatsapp(text)) == [
        ("Ann", "quoting:\n[20/01/19, 11:20:00] Bob: old"), ("Bob", "ok")]


def test_impossible_date_keeps_the_text():
    messages = parse_whatsapp("31/02/19, 11:23 - Ann: hi\n")
    assert triples(messages) == [(None, "Ann", "hi")]


# --- detection and errors ---------------------------------------------------

@pytest.mark.parametrize("text", [
    "", "\n\n", "En un lugar de la Mancha, de cuyo nombre no quiero acordarme,\n" * 5,
    "A quien madruga, Dios le ayuda.\n20/01/19 was a Sunday.\n",
])
def test_looks_like_whatsapp_rejects_other_text(text):
    assert not looks_like_whatsapp(text)


def test_looks_like_whatsapp_tolerates_multiline_messages():
    text = "20/01/19, 11:23 - Ann: a\nb\n20/01/19, 11:24 - Bob: c\nd\n"
    assert looks_like_whatsapp(text)


def test_no_header_is_an_input_error_naming_file_and_formats():
    with pytest.raises(InputError) as info:
        parse_whatsapp("\n\nhello world\nno dates here\n", path="chat.txt")
    message = str(info.value)
    assert message.startswith("chat.txt (line 3): ")
    assert "\n" not in message
    assert all(f in message for f in FORMATS)
    assert info.value.path == "chat.txt" and info.value.position == "line 3"


def test_only_system_lines_is_an_input_error():
    text = "20/01/19, 11:23 - You were added\n20/01/19, 11:24 - Ann: <Media omitted>\n"
    with pytest.raises(InputError, match=r"^chat\.txt \(line 1\): .*system lines"):
        parse_whatsapp(text, path="chat.txt")


# --- property: any typed message survives an export round trip --------------

_alphabet = st.characters(
    whitelist_categories=("L", "N", "P", "S", "Zs"),
    blacklist_characters="/\u200e\u200f\u00a0\u202f~<",  # no dates, marks or placeholders
)
_name = st.text(_alphabet, min_size=1, max_size=12).map(str.strip).filter(
    lambda s: s and ":" not in s and not s.startswith("-"))
_line = st.text(_alphabet, max_size=20)
_body = st.lists(_line, min_size=1, max_size=3).map("\n".join).map(str.strip).filter(bool)
_stamp = st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2099, 12, 31)).map(
    lambda t: t.replace(second=0, microsecond=0))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_stamp, _name, _body), min_size=1, max_size=6),
       st.sampled_from(["[{:%Y-%m-%d, %H:%M:%S}] ", "{:%Y/%m/%d, %H:%M} - "]),
       st.sampled_from(["\n", "\r\n"]))
def test_round_trip(messages, header, newline):
    text = "".join(f"{header.format(t)}{c}: {b}\n" for t, c, b in messages).replace("\n", newline)
    assert triples(parse_whatsapp(text)) == messages
