"""The chat REPL (python -m gptfast.generate --chat) on a small model trained
on a synthetic WhatsApp export: turns alternate, speakers are other contacts,
<UNK> never appears, commands work, the history fits the block."""
from __future__ import annotations

import io
import subprocess
import sys

import pytest

from gptfast.chat import ChatSession, run_chat
from gptfast.engine import make_engine
from gptfast.errors import InputError
from gptfast.sampling import SamplingParams
from gptfast.trained import load_trained
from generate_helpers import CHAT_LINES, chat_run
from train_helpers import one_thread  # noqa: F401 (autouse fixture)

CONTACTS = ["Ana", "Luis", "Marta", "+34 600 11 22 33"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return chat_run(tmp_path_factory.mktemp("chat"))


@pytest.fixture(scope="module")
def trained(run):
    return load_trained(run)


def session(trained, engine="auto", **kw):
    kw.setdefault("params", SamplingParams(temperature=1.0))
    return ChatSession(make_engine(engine, trained.model), trained.tokenizer, trained.contacts, **kw)


def chat(s, lines):
    out, err = io.StringIO(), io.StringIO()
    feed = iter(lines)

    def read_line(prompt):
        try:
            return next(feed)
        except StopIteration:
            raise EOFError from None

    run_chat(s, out, err, read_line)
    return out.getvalue().splitlines(), err.getvalue()


def test_contacts_come_back_from_the_run(trained):
    assert trained.contacts == CONTACTS
    meta = dict(trained.meta)
    meta.pop("contacts")
    old = type(trained)(trained.model, trained.tokenizer, meta, trained.path)
    assert old.contacts == CONTACTS   # older checkpoints: read off the special tokens


def test_turns_alternate_and_speakers_are_the_others(trained):
    s = session(trained, user="Ana", turns=2, seed=11)
    lines, _ = chat(s, ["hola a todos", "vamos a la playa", "¿a qué hora?"])
    assert len(lines) == 9
    for i in range(0, 9, 3):
        assert lines[i].startswith("Ana: ")
        for reply in lines[i + 1:i + 3]:
            speaker = reply.split(":", 1)[0] if not reply.startswith("+34") else "+34 600 11 22 33"
            assert speaker in CONTACTS and speaker != "Ana"
    assert all("<UNK>" not in line and "<END>" not in line for line in lines)


def test_unknown_words_never_come_back_as_unk(trained):
    s = session(trained, user="Luis", turns=3, seed=2, params=SamplingParams(temperature=1.5))
    lines, _ = chat(s, ["palabras rarísimas xyzzy plugh", "más xyzzy"])
    assert trained.tokenizer.unk_id in s.history          # the user's unknown words are <UNK>...
    model_tokens = [t for line in lines if not line.startswith("Luis: ") for t in line.split()]
    assert "<UNK>" not in model_tokens                     # ...the model's never


def training_format_messages(s: ChatSession) -> list:
    """The session's history as its messages, each checked to be what
    training saw: a contact token, a body without contacts, <END>."""
    end = s.tokenizer.stoi["<END>"]
    contact_ids = set(s.contact_ids.values())
    messages, current = [], []
    for t in s.history:
        current.append(t)
        if t == end:
            messages.append(current)
            current = []
    assert current == []
    for m in messages:
        assert m[0] in contact_ids and m[-1] == end and not contact_ids & set(m[1:-1])
    return messages


def test_history_keeps_the_training_format(trained):
    s = session(trained, user="Marta", turns=1, seed=3, max_turn_tokens=3)
    chat(s, ["hola", "perfecto"])
    assert len(training_format_messages(s)) == 4


def test_an_end_token_typed_in_a_line_ends_a_message(trained):
    s = session(trained, user="Luis")
    tok = trained.tokenizer
    luis, end = s.contact_ids["Luis"], tok.stoi["<END>"]
    ids = lambda text: [int(t) for t in tok.encode(text)]
    s.say("muy bien <END>")                       # not doubled
    assert s.history == [luis] + ids("muy bien") + [end]
    s.reset()
    s.say("<END> hola <END><END> a las cinco")    # two messages; the empty ones dropped
    assert s.history == [luis] + ids("hola") + [end, luis] + ids("a las cinco") + [end]


def test_unknown_words_get_a_note(run, trained, capsys):
    """Words the vocabulary lacks read as <UNK> (as in training), and the
    user is told which, once each: in a chat message and in a prompt."""
    s = session(trained, user="Ana", turns=1, seed=1)
    lines, err = chat(s, ["hola zorglub a todos zorglub xyzzy"])
    assert "note: your message has words" in err and err.count("zorglub") == 1 and "xyzzy" in err
    assert len(lines) == 2 and "<UNK>" not in lines[1]   # your line echoed, then the reply
    _, err = chat(session(trained, user="Ana"), ["hola a todos"])
    assert "note:" not in err

    from gptfast import generate as cli

    cli.main(["--run", str(run), "--prompt", "Ana: hola zorglub", "--max-new-tokens", "2"])
    err = capsys.readouterr().err
    assert "note: the prompt has words the model's vocabulary lacks; it reads them as <UNK>: zorglub\n" in err


@pytest.mark.parametrize("engine", ["auto", "torch"])
def test_stop_strings_across_words_with_a_stream_decoder(trained, engine):
    """Stop strings that span words (their space included), checked with the
    tokenizer's stream decoder (O(1) per token) and by decoding everything
    again: the same tokens, reason and text, cut where the free text has it."""
    tok = trained.tokenizer
    e = make_engine(engine, trained.model)
    params = SamplingParams(temperature=1.0)
    free = e.generate([[1]], 60, params, seed=5, decode=tok.decode)[0]
    space = free.text.index(" ", 10)
    stops = [free.text[space - 2:space + 3], "zzz"]          # the end of a word, a space, a start
    at = free.text.index(stops[0])
    fast, slow = (e.generate([[1]], 60, params, seed=5, decode=tok.decode, stop_strings=stops, **kw)[0]
                  for kw in ({"stream_decoder": tok.stream_decoder}, {}))
    assert (fast.tokens, fast.finish_reason, fast.text) == (slow.tokens, slow.finish_reason, slow.text)
    assert fast.finish_reason == "stop_string" and fast.text == free.text[:at]
    assert free.tokens[:len(fast.tokens)] == fast.tokens and len(tok.decode(fast.tokens)) >= at + len(stops[0])


def test_ctrl_c_during_a_reply_keeps_the_training_format(trained):
    """Ctrl-C while the model writes cuts that reply where it was, ends it
    with <END> in the history (no dangling speaker token), and the session
    goes on with the next line."""
    s = session(trained, user="Ana", turns=2, seed=2, max_turn_tokens=12)
    engine_generate = s.engine.generate

    def interrupted_body(*args, callback=None, stop_ids=(), **kw):
        if not stop_ids:  # the speaker's draw: as usual
            return engine_generate(*args, callback=callback, stop_ids=stop_ids, **kw)

        drawn = []

        def cut_after_3(fresh):
            callback(fresh)
            if len(drawn) + len(fresh[0]) >= 3:
                raise KeyboardInterrupt
            drawn.extend(fresh[0])

        return engine_generate(*args, callback=cut_after_3, stop_ids=stop_ids, **kw)

    s.engine.generate = interrupted_body
    lines, _ = chat(s, ["hola"])
    s.engine.generate = engine_generate
    messages = training_format_messages(s)
    assert len(messages) == 2 and len(messages[1]) == 1 + 3 + 1   # yours; a speaker, 3 words, <END>
    assert messages[1][0] != s.contact_ids["Ana"]
    assert len(lines) == 2                       # your line, and the cut reply (the second turn not drawn)
    speaker = next(c for c, i in s.contact_ids.items() if i == messages[1][0])
    assert lines[1] == f"{speaker}: {s.tokenizer.decode(messages[1][1:4])}"
    chat(s, ["muy bien"])                        # the session goes on
    assert len(training_format_messages(s)) == 2 + 1 + 2


def test_context_is_cut_at_a_message_start(trained):
    s = session(trained, user="Ana", seed=4)
    for text in ["hola a todos, ¿qué tal?", "muy bien", "vamos a la playa", "a las cinco"] * 3:
        s.say(text)
    ctx = s.context()
    block = trained.model.config.block_size
    assert len(ctx) <= block - block // 4
    assert ctx[0] == s.contact_ids["Ana"] and ctx == s.history[-len(ctx):]


def test_commands(trained):
    s = session(trained, user="Ana", seed=5)
    lines, err = chat(s, ["/temp 0", "/top-k 3", "/top-p 0.5", "/turns 2", "/as Luis", "/contacts", "/nope",
                          "/as Nadie", "/temp x", "hola", "/reset", "/quit", "never read"])
    assert s.params.temperature == 0 and s.params.top_k == 3 and s.params.top_p == 0.5 and s.turns == 2
    assert s.user == "Luis" and s.history == []
    assert any("Ana, Luis, Marta" in line for line in lines)
    assert any("unknown command /nope" in line for line in lines)
    assert "unknown contact 'Nadie'" in err and "expected a number, got 'x'" in err
    assert "never read" not in "\n".join(lines)


def test_a_seed_replays_the_conversation(trained):
    a, _ = chat(session(trained, user="Ana", turns=2, seed=8), ["hola", "¿qué tal?"])
    b, _ = chat(session(trained, user="Ana", turns=2, seed=8, engine="torch"), ["hola", "¿qué tal?"])
    assert a == b


def test_a_model_without_chat_tokens_is_refused(trained):
    with pytest.raises(InputError, match="no contact tokens"):
        ChatSession(make_engine("auto", trained.model), trained.tokenizer, [])


def test_piped_stdin_end_to_end(run):
    """The real command with stdin from a pipe: echo, replies, clean exit at EOF."""
    proc = subprocess.run([sys.executable, "-m", "gptfast.generate", "--run", str(run), "--chat", "--as",
                           "+34 600 11 22 33", "--seed", "1", "--turns", "2"],
                          input="no puedo\n/temp 0.5\nhasta luego\n", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "+34 600 11 22 33: no puedo" and len(lines) == 8
    assert "chatting as +34 600 11 22 33" in proc.stderr and "Traceback" not in proc.stderr
    assert all("<UNK>" not in line for line in lines)


def test_word_level_generate_joins_prompt_and_words(run, trained, capsys):
    """Plain generation from the word-level run: the prompt and the new
    words are decoded together (a space between them, none before "?"), and
    streaming, batch output and --show-probs (table and JSON) print the same
    text."""
    import json

    from gptfast import generate as cli

    tok = trained.tokenizer
    args = ["--run", str(run), "--prompt", "Ana: hola a", "--max-new-tokens", "12", "--seed", "2"]
    cli.main(args + ["--json"])
    sample = json.loads(capsys.readouterr().out)["samples"][0]
    prompt_ids = [int(t) for t in tok.encode("Ana: hola a")]
    assert sample["text"] == tok.decode(prompt_ids + sample["tokens"])
    assert sample["text"].startswith("Ana: hola a ")
    cli.main(args + ["--stream"])
    streamed = capsys.readouterr().out
    cli.main(args + ["--no-stream"])
    assert streamed == capsys.readouterr().out == sample["text"] + "\n"
    cli.main(args + ["--show-probs", "3"])
    assert capsys.readouterr().out.endswith("\n\n" + sample["text"] + "\n")   # after the table
    cli.main(args + ["--show-probs", "3", "--json"])
    probs = json.loads(capsys.readouterr().out)
    assert (probs["text"], probs["completion"]) == (sample["text"], sample["completion"])
