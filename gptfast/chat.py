"""The chat REPL of the WhatsApp seed: talk to a model trained on a chat export.

Training saw every message as ``<contact token> body <END>`` (gptfast.data.chat),
so a conversation is one token sequence in that format.  A user line becomes
``<user's contact> body <END>``; each model turn is drawn in two steps:

  1. the speaker: one token, drawn only among the other contacts' tokens (the
     seed let the model pick anyone, itself included, and sometimes a word);
  2. the body: tokens until ``<END>``, never a contact token and never
     ``<UNK>`` (masked, not resampled in a loop as the seed did), at most
     `max_turn_tokens`; a body cut by that limit still gets its ``<END>``, so
     the history keeps the training format.

The history is cropped at a message boundary to fit the block size (leaving
a quarter of it for the reply).  Every engine call gets its own stream of the
counter-based sampler (seq = call number), so a session with a fixed seed and
the same inputs replays exactly.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, TextIO, Tuple

from gptfast.chat_completion import prompt_toolkit_completer
from gptfast.data.chat import END_TOKEN, UNK_TOKEN, contact_token
from gptfast.errors import InputError, unknown_words_note
from gptfast.sampling import SamplingParams
from gptfast.streaming import TextStream

COMMANDS = {
    "/help": "this list",
    "/quit": "leave (also /exit, Ctrl-D)",
    "/reset": "forget the conversation",
    "/as NAME": "write as another contact",
    "/contacts": "list the contacts",
    "/turns N": "model messages after each of yours",
    "/temp X": "sampling temperature (0 = greedy)",
    "/top-k N": "keep the N most likely tokens (0 = off)",
    "/top-p X": "nucleus sampling, X in (0, 1]",
}


class ChatSession:
    """A conversation with one model; no I/O except the `out` it streams to."""

    def __init__(self, engine, tokenizer, contacts: Sequence[str], user: Optional[str] = None,
                 params: Optional[SamplingParams] = None, turns: int = 1, max_turn_tokens: int = 64,
                 seed: int = 0):
        if END_TOKEN not in tokenizer.stoi:
            raise InputError(f"--chat needs a model trained on a chat export (its vocabulary has no {END_TOKEN}); "
                             "sample it with --prompt instead")
        self.engine, self.tokenizer = engine, tokenizer
        self.contact_ids: Dict[str, int] = {c: tokenizer.stoi[contact_token(c)] for c in contacts
                                            if contact_token(c) in tokenizer.stoi}
        if not self.contact_ids:
            raise InputError("--chat needs a model trained on a chat export (no contact tokens in its vocabulary)")
        self.end_id = tokenizer.stoi[END_TOKEN]
        self.user = self._contact(user) if user is not None else next(iter(self.contact_ids))
        self.params = params or SamplingParams(temperature=0.8)
        self.turns, self.max_turn_tokens, self.seed = turns, max_turn_tokens, seed
        self.history: List[int] = []
        self.calls = 0

    # ------------------------------------------------------------------ state
    def _contact(self, name: str) -> str:
        if name not in self.contact_ids:
            raise InputError(f"unknown contact {name!r}; the contacts are: {', '.join(self.contact_ids)}")
        return name

    def set_user(self, name: str) -> None:
        self.user = self._contact(name)

    def reset(self) -> None:
        self.history = []

    def context(self) -> List[int]:
        """The history cropped to fit the block with room for a reply, cut where
        a message starts when one fits (else plainly, as the seeds crop)."""
        budget = max(1, self.engine.config.block_size - self.engine.config.block_size // 4)
        if len(self.history) <= budget:
            return list(self.history)
        first = len(self.history) - budget
        starts = [i for i in range(first, len(self.history)) if i > 0 and self.history[i - 1] == self.end_id]
        return self.history[starts[0]:] if starts else self.history[first:]

    # ----------------------------------------------------------------- turns
    def say(self, text: str) -> None:
        """Add the user's message (InputError for characters the model lacks).
        An ``<END>`` typed in the line ends a message, as in training: the
        line becomes one message per piece, empty pieces dropped, so a
        trailing ``<END>`` is not doubled."""
        body = [int(t) for t in self.tokenizer.encode(text, source="<your message>")]
        piece: List[int] = []
        for t in body + [self.end_id]:
            if t != self.end_id:
                piece.append(t)
            elif piece:
                self.history += [self.contact_ids[self.user]] + piece + [self.end_id]
                piece = []

    def _draw(self, prompt: List[int], n: int, banned: Sequence[int], stop_ids: Sequence[int] = (),
              callback=None) -> List[int]:
        params = dataclasses.replace(self.params, banned_ids=tuple(sorted(set(banned))))
        out = self.engine.generate([prompt], n, params, seed=self.seed, seq_ids=[self.calls],
                                   stop_ids=stop_ids, callback=callback)
        self.calls += 1
        return out[0].tokens

    def reply(self, out: Optional[TextIO] = None) -> List[Tuple[str, str]]:
        """The model's `turns` messages as (contact, text), streamed to `out`."""
        vocab = self.tokenizer.vocab_size
        others = {i for c, i in self.contact_ids.items() if c != self.user} or {self.contact_ids[self.user]}
        not_speakers = [i for i in range(vocab) if i not in others]
        not_in_body = list(self.contact_ids.values())
        if self.tokenizer.unk_id is not None:
            not_in_body.append(self.tokenizer.unk_id)
        names = {i: c for c, i in self.contact_ids.items()}
        messages = []
        for _ in range(self.turns):
            speaker = self._draw(self.context(), 1, not_speakers)[0]
            self.history.append(speaker)
            stream = None
            if out is not None:
                out.write(f"{names[speaker]}: ")
                stream = TextStream(self.tokenizer.stream_decoder(), out)
            drawn: List[int] = []   # the body so far, as it streams

            def on_tokens(fresh, stream=stream, drawn=drawn):
                drawn.extend(fresh[0])
                if stream is not None:
                    stream.feed(fresh[0])

            try:
                body = self._draw(self.context(), self.max_turn_tokens, not_in_body, stop_ids=[self.end_id],
                                  callback=on_tokens)
            except KeyboardInterrupt:  # Ctrl-C: the cut message still ends as training's messages do
                self.history += drawn + [self.end_id]
                if stream is not None:
                    stream.finish()
                raise
            self.history += body + [self.end_id]
            text = self.tokenizer.decode(body).strip()
            if stream is not None:
                stream.finish()
                out.write("\n")
                out.flush()
            messages.append((names[speaker], text))
        return messages

    # -------------------------------------------------------------- commands
    def command(self, line: str, out: TextIO) -> bool:
        """Run a /command; False when the session should end."""
        name, _, arg = line.strip().partition(" ")
        arg = arg.strip()
        if name in ("/quit", "/exit"):
            return False
        if name == "/help":
            out.write("".join(f"  {c:<12} {what}\n" for c, what in COMMANDS.items()))
        elif name == "/reset":
            self.reset()
            out.write("(conversation forgotten)\n")
        elif name == "/contacts":
            out.write(", ".join(self.contact_ids) + f"   (you are {self.user})\n")
        elif name == "/as":
            self.set_user(arg)
            out.write(f"(you are now {self.user})\n")
        elif name == "/turns":
            self.turns = _parse(arg, int, lambda v: v >= 1, "a positive integer")
            out.write(f"({self.turns} model message(s) after each of yours)\n")
        elif name in ("/temp", "/top-k", "/top-p"):
            field = {"/temp": "temperature", "/top-k": "top_k", "/top-p": "top_p"}[name]
            kind = int if field == "top_k" else float
            self.params = dataclasses.replace(self.params, **{field: _parse(arg, kind, lambda v: True, "a number")})
            out.write(f"({field} = {getattr(self.params, field)})\n")
        else:
            out.write(f"unknown command {name}; /help lists them\n")
        return True


def _parse(text: str, kind, ok: Callable, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise InputError(f"expected {what}, got {text!r}") from None
    if not ok(value):
        raise InputError(f"expected {what}, got {text!r}")
    return value


# ---------------------------------------------------------------- terminal
def line_reader(session: ChatSession) -> Callable[[str], str]:
    """prompt_toolkit with completion of contacts, special tokens and commands
    in a terminal; plain input() otherwise (pipes, or prompt_toolkit absent)."""
    if sys.stdin.isatty() and sys.stdout.isatty():
        try:
            from prompt_toolkit import PromptSession
        except ImportError:
            pass
        else:
            words = list(session.contact_ids) + session.tokenizer.specials + [c.split()[0] for c in COMMANDS]
            prompt_session = PromptSession(completer=prompt_toolkit_completer(words))
            return lambda prompt: prompt_session.prompt(prompt)
    return input


def run_chat(session: ChatSession, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
             read_line: Optional[Callable[[str], str]] = None) -> None:
    """The REPL: your line, then the model's turns, until /quit or end of input."""
    read_line = read_line or line_reader(session)
    interactive = sys.stdin.isatty()
    err.write(f"chatting as {session.user} with {', '.join(c for c in session.contact_ids if c != session.user)}"
              f" ({len(session.contact_ids)} contacts); /help for commands, Ctrl-D to leave\n")
    while True:
        try:
            line = read_line(f"{session.user}: " if interactive else "")
        except EOFError:
            break
        except KeyboardInterrupt:  # at the prompt: drop the line, keep the conversation (as a shell does)
            if not interactive:
                break
            err.write("(line dropped; /quit or Ctrl-D leaves)\n")
            continue
        if not interactive:  # echo piped input, so the transcript reads like a chat
            out.write(f"{session.user}: {line}\n")
        line = line.strip()
        if not line:
            continue
        try:
            if line.startswith("/"):
                if not session.command(line, out):
                    break
                continue
            session.say(line)
            note = unknown_words_note(session.tokenizer, line, "your message")
            if note:
                err.write(note + "\n")
            session.reply(out)
        except InputError as error:
            err.write(f"error: {error}\n")
        except KeyboardInterrupt:  # Ctrl-C while the model writes: stop that reply, keep the session
            out.write("\n")
    out.flush()


def random_seed() -> int:
    return int.from_bytes(os.urandom(8), "little")
