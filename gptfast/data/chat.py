"""The seed chat recipe (lad-gpt): turn chat messages into a training corpus.

Each message becomes one line ``"<contact>: <body> <END>"``.  The contact
tokens (``"Alice:"``) and ``<END>`` are the tokenizer's special tokens, so
the model learns who speaks and when a message ends, and the chat REPL can
prompt it with ``"Alice:"`` and stop at ``<END>``.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from gptfast.data.whatsapp import ChatMessage
from gptfast.errors import InputError

__all__ = ["END_TOKEN", "UNK_TOKEN", "ChatCorpus", "build_chat_corpus", "contact_token"]

END_TOKEN = "<END>"
UNK_TOKEN = "<UNK>"  # used by the tokenizer for tokens rarer than min_count_tokens


def contact_token(name: str) -> str:
    """The special token that starts a message from `name`."""
    return f"{name}:"


@dataclass
class ChatCorpus:
    text: str            # one "contact: body <END>" per line, joined by "\n"
    contacts: list[str]  # contact names, in order of first appearance
    specials: list[str]  # contact tokens, then END_TOKEN


def build_chat_corpus(
    messages: list[ChatMessage], lowercase: bool = False, min_count_chars: int = 1
) -> ChatCorpus:
    """Format `messages` the way the lad-gpt seed does, with these deliberate choices:

    - Newlines inside a body become spaces: the seed's per-line regex silently
      lost continuation lines, and one message must stay one corpus line.
    - `lowercase` lowers the bodies only; contact names keep their case, as in
      the seed (``x2.lower()`` on the message), so the special tokens match
      the names people see in the chat.
    - Characters occurring fewer than `min_count_chars` times in the bodies
      (counted after lowercasing, so "A" and "a" count together) are dropped
      from the bodies, never from names or special tokens, and never the
      space (it separates words, and a tiny corpus may have few).  The seed counted
      the raw file (headers included) and dropped counts ``<= min_count``, so
      its ``min_count=k`` is our ``min_count_chars=k + 1``; the default 1
      drops nothing.  A message left with an empty body is dropped.
    - Contacts are listed in order of first appearance (the seed used a set,
      whose order changes from run to run), among the messages kept.
    """
    bodies = [" ".join(m.text.split("\n")).strip() for m in messages]
    if lowercase:
        bodies = [b.lower() for b in bodies]
    if min_count_chars > 1:
        counts = Counter("".join(bodies))
        # Never the space: the line format and word tokenization rely on it.
        rare = {c for c, n in counts.items() if n < min_count_chars and c != " "}
        if rare:
            drop = str.maketrans("", "", "".join(rare))
            bodies = [b.translate(drop).strip() for b in bodies]

    lines: list[str] = []
    contacts: dict[str, None] = {}  # an ordered set
    for message, body in zip(messages, bodies):
        if not body:
            continue
        contacts.setdefault(message.contact)
        lines.append(f"{contact_token(message.contact)} {body} {END_TOKEN}")
    if not lines:
        raise InputError("no chat message left to build a corpus from "
                         f"(after dropping characters rarer than {min_count_chars})"
                         if messages else "no chat messages to build a corpus from")

    names = list(contacts)
    return ChatCorpus(
        text="\n".join(lines),
        contacts=names,
        specials=[contact_token(c) for c in names] + [END_TOKEN],
    )
