"""Parse WhatsApp chat exports ("Export chat" -> "Without media") into messages.

Both platforms write one header per message and continue multi-line messages
on plain lines:

    iOS      [20/01/19, 11:23:45] Alice: first line      (also [20.01.19, ...],
    Android  20/01/19, 11:23 - Alice: first line          [01/20/19 11:23], ...)
             second line of the same message

The date order (day/month, month/day, year first) is decided once per file,
because a single line such as ``03/04/21`` is ambiguous.  System lines (group
created, "X added Y", encryption notices), media placeholders and deleted
messages are dropped: they are not text anyone typed, so a model should not
learn them.  The expected parse follows chat-miner (joweich/chat-miner).
"""
from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from gptfast.errors import InputError

__all__ = ["ChatMessage", "FORMATS", "looks_like_whatsapp", "parse_whatsapp"]


@dataclass(frozen=True)
class ChatMessage:
    timestamp: datetime.datetime | None  # None when the header's date is impossible
    contact: str
    text: str  # continuation lines joined with "\n"


# Bidi marks WhatsApp puts around headers (and, on iOS, before attachment bodies).
_MARKS = "\u200e\u200f\u202a-\u202e\u2066-\u2069"
_M = f"[{_MARKS}]*"
_SP = "[ \u00a0\u202f]"  # exports put U+202F / U+00A0 before AM/PM and in dates
_DATE = r"(?P<d1>\d{1,4})(?P<sep>[./-])(?P<d2>\d{1,2})(?P=sep)(?P<d3>\d{2,4})"
_TIME = r"(?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2}))?"
# "pm", "PM", "p.m.", "p. m." (Spanish); the group is None on 24-hour clocks.
_AMPM = rf"(?:{_SP}*(?P<ampm>[aApP]\.?{_SP}?[mM]\.?))?"
_STAMP = rf"{_M}{_DATE},?{_SP}{_M}{_TIME}{_AMPM}{_M}"

_HEADERS: list[tuple[str, re.Pattern[str]]] = [
    ("iOS '[dd/mm/yy, hh:mm:ss] Name: text'",
     re.compile(rf"^{_M}\[{_STAMP}\]{_M}{_SP}(?P<rest>.*)$")),
    ("Android 'dd/mm/yy, hh:mm - Name: text'",
     re.compile(rf"^{_STAMP}{_SP}?[-\u2013]{_SP}(?P<rest>.*)$")),
]
FORMATS: list[str] = [name for name, _ in _HEADERS]
# Every format also accepts '.' or '-' between date parts, mm/dd and yyyy/mm/dd
# dates, 2- or 4-digit years, optional seconds and 12-hour clocks.
_VARIANTS = "date separators / . -, dd/mm, mm/dd or yyyy/mm/dd, 12-hour clocks"

# Whole-body placeholders that carry no typed text (English and Spanish exports).
_PLACEHOLDER = re.compile(
    r"^(?:<Media omitted>|<Multimedia omitido>|<Archivo omitido>"
    r"|(?:image|video|audio|sticker|GIF|document|Contact card) omitted"
    r"|(?:imagen|video|audio|sticker|GIF|documento|tarjeta de contacto) omitid[oa]"
    r"|This message was deleted\.?|You deleted this message\.?"
    r"|Se eliminó este mensaje\.?|Eliminaste este mensaje\.?"
    r"|Messages and calls are end-to-end encrypted\..*"
    r"|Messages to this group are now secured with end-to-end encryption\..*"
    r"|Los mensajes y las llamadas están cifrados de extremo a extremo\..*"
    r"|Los mensajes (?:de|en) este grupo .*cifrad.*)$",
    re.IGNORECASE | re.DOTALL,
)
# Newer exports tag edited messages; the tag is not part of what was typed.
_EDITED = re.compile(r"\s*<(?:This message was edited|Se editó este mensaje\.?)>\s*$")
# System events whose text happens to contain ": " (e.g. a new subject "a: b"),
# so the "Name: " split would mistake them for a message.
_SYSTEM_NAME = re.compile(
    r" (?:changed the (?:subject|group description|group name)|"
    r"cambió (?:el asunto|la descripción|el nombre))",
)

# Bidi marks and spaces around a name, and the "~ " WhatsApp puts before
# senders that are not in the phone's contacts.
_NAME_TRIM = re.compile(f"^[{_MARKS}\\s~]+|[{_MARKS}\\s]+$")


def _split_lines(text: str) -> list[str]:
    if text.startswith("\ufeff"):
        text = text[1:]
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _pick_format(lines: list[str]) -> tuple[re.Pattern[str] | None, int]:
    """The header format matching the most lines (decided per file, so a body
    line that looks like the *other* platform's header stays a body line)."""
    best, best_hits = None, 0
    for _, pattern in _HEADERS:
        hits = sum(1 for line in lines if pattern.match(line))
        if hits > best_hits:
            best, best_hits = pattern, hits
    return best, best_hits


def looks_like_whatsapp(text: str) -> bool:
    """Cheap auto-detect: at least half of the first 20 non-empty lines are
    headers of one known format (multi-line messages account for the rest)."""
    lines = [line for line in _split_lines(text[:20_000]) if line.strip()][:20]
    _, hits = _pick_format(lines)
    return hits > 0 and 2 * hits >= len(lines)


def _date_order(matches: list[re.Match[str]]) -> str:
    """'ymd', 'dmy' or 'mdy' for the whole file: a first field > 12 must be a
    day, else a second field > 12 means month first, else day first (the more
    common locale)."""
    if any(len(m["d1"]) == 4 for m in matches):
        return "ymd"
    if any(int(m["d1"]) > 12 for m in matches):
        return "dmy"
    if any(int(m["d2"]) > 12 for m in matches):
        return "mdy"
    return "dmy"


def _timestamp(m: re.Match[str], order: str) -> datetime.datetime | None:
    d1, d2, d3 = int(m["d1"]), int(m["d2"]), int(m["d3"])
    if order == "ymd":
        year, month, day = d1, d2, d3
    elif order == "dmy":
        year, month, day = d3, d2, d1
    else:
        year, month, day = d3, d1, d2
    if year < 100:
        year += 2000
    hour = int(m["H"])
    if m["ampm"]:
        # 12 am is midnight, 12 pm is noon; some exports even write "00:08 a. m."
        hour = hour % 12 + (12 if m["ampm"][0] in "pP" else 0)
    try:
        return datetime.datetime(year, month, day, hour, int(m["M"]), int(m["S"] or 0))
    except ValueError:  # an impossible date: keep the text, which is what we train on
        return None


def _split_sender(rest: str) -> tuple[str, str] | None:
    """(contact, first body line), or None for a system line (no "Name: " part).

    The name ends at the first ": ", so bodies may contain " : ".  A header
    like "John Doe:." has no ": " either: chat-miner reads it as a disappearing
    message placeholder, so it carries no text and is dropped as well.
    """
    if ": " in rest:
        name, body = rest.split(": ", 1)
    elif rest.rstrip().endswith(":"):  # the body starts on the next line
        name, body = rest.rstrip()[:-1], ""
    else:
        return None
    if _SYSTEM_NAME.search(name):
        return None
    name = _NAME_TRIM.sub("", name)
    return (name, body) if name else None


def _finish(contact: str, lines: list[str]) -> str | None:
    """The message text, or None if it is a placeholder rather than typed text."""
    text = "\n".join(lines)
    if text.lstrip(" ").startswith("\u200e"):  # iOS attachments and system events
        return None
    text = _EDITED.sub("", text.strip())
    if not text or _PLACEHOLDER.match(text):
        return None
    return text


def parse_whatsapp(text: str, path: str | None = None) -> list[ChatMessage]:
    """Parse a WhatsApp export into the messages people typed, in file order.

    Raises `InputError` naming `path` if no line has a known header, or if
    every message was a system line or placeholder (nothing to train on).
    """
    lines = _split_lines(text)
    pattern, hits = _pick_format(lines)
    if pattern is None:
        first = next((i for i, line in enumerate(lines, 1) if line.strip()), 1)
        raise InputError(
            f"no WhatsApp message header found; tried {' and '.join(FORMATS)} "
            f"(with {_VARIANTS})", path=path, position=f"line {first}")

    matches = [(i, m) for i, line in enumerate(lines) if (m := pattern.match(line))]
    order = _date_order([m for _, m in matches])
    starts = {i: m for i, m in matches}

    messages: list[ChatMessage] = []
    current: tuple[datetime.datetime | None, str, list[str]] | None = None

    def flush() -> None:
        if current is not None:
            stamp, contact, body = current
            kept = _finish(contact, body)
            if kept is not None:
                messages.append(ChatMessage(stamp, contact, kept))

    for i, line in enumerate(lines):
        m = starts.get(i)
        if m is None:
            # A continuation line.  Lines before the first header, and those
            # continuing a system line (current is None), are dropped.
            if current is not None:
                current[2].append(line)
            continue
        flush()
        sender = _split_sender(m["rest"])
        current = None if sender is None else (_timestamp(m, order), sender[0], [sender[1]])
    flush()

    if not messages:
        raise InputError(
            f"found {hits} WhatsApp headers but all are system lines, media or deleted "
            "messages; no typed message to use", path=path, position=f"line {matches[0][0] + 1}")
    return messages
