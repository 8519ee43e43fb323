"""The chat REPL in a real (pseudo-)terminal, with prompt_toolkit: Tab
completes contact names (spaces included), commands and special tokens, a
turn gets its replies, Ctrl-C drops a half-written line, Ctrl-D leaves with
exit code 0."""
from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time

import pytest

from gptfast.chat_completion import completions
from generate_helpers import chat_run
from train_helpers import one_thread  # noqa: F401 (autouse fixture)

CANDIDATES = ["Ana", "Ana María", "+34 600 11 22 33", "<END>", "<UNK>", "/as", "/quit", "/reset"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|[\r\x07\x08]")


@pytest.mark.parametrize("line,expected", [
    ("/as ana m", [("Ana María", 5)]),                  # the tail after the command, case-folded
    ("/as An", [("Ana", 2), ("Ana María", 2)]),
    ("/as Ana", [("Ana María", 3)]),                    # typed in full: nothing to add to "Ana"
    ("hola +34 60", [("+34 600 11 22 33", 6)]),          # a name with spaces, mid-line
    ("hola <E", [("<END>", 2)]),
    ("/q", [("/quit", 2)]),
    ("/", [("/as", 1), ("/quit", 1), ("/reset", 1)]),
    ("", []), ("hola ", []), ("xyz", []),              # nothing typed, or nothing that begins a candidate
])
def test_completion_of_the_line_tail(line, expected):
    assert completions(line, CANDIDATES) == expected


class Terminal:
    """A child process on a pseudo-terminal; `expect` reads until a pattern
    shows in its output, escape sequences stripped."""

    def __init__(self, argv):
        self.master, slave = os.openpty()
        env = dict(os.environ, PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm", COLUMNS="100", LINES="30")
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
        os.close(slave)
        self.seen = ""

    def expect(self, pattern: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.seen):
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} did not show; the terminal showed:\n{self.seen}")
            if select.select([self.master], [], [], 0.1)[0]:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:   # the child closed the terminal
                    break
                self.seen += ANSI.sub("", chunk.decode("utf-8", "replace"))
        return self.seen

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())
        time.sleep(0.3)   # let prompt_toolkit handle the keys before the next ones arrive

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.master)


def test_tab_completion_ctrl_c_and_ctrl_d_in_a_terminal(tmp_path):
    pytest.importorskip("prompt_toolkit")
    run = chat_run(tmp_path)
    term = Terminal([sys.executable, "-m", "gptfast.generate", "--run", str(run), "--chat", "--as", "Ana",
                     "--seed", "4", "--turns", "1"])
    try:
        term.expect(r"Ctrl-D to leave\nAna:")   # the prompt: keys typed before it would not be completed
        term.type("/as +34 6")
        term.expect(r"/as \+34 6")
        term.type("\t")                # completes to the whole name, spaces and all
        term.expect(r"/as \+34 6[^\n]*\n.*00 11 22 33")
        term.type("\r")
        term.expect(r"\(you are now \+34 600 11 22 33\)\n\+34 600 11 22 33:")
        term.type("no puedo <EN")
        term.expect(r"no puedo <EN")
        term.type("\t")                # a special token completes too; the line ends with it
        term.expect(r"no puedo <EN[^\n]*\n.*D>")
        term.type("\r")
        reply = term.expect(r"no puedo <END>\n(Ana|Luis|Marta): [^\n]*\n")
        assert "<UNK>" not in reply and "Traceback" not in reply
        term.expect(r"\+34 600 11 22 33:")
        term.type("a medio escribir")
        term.expect(r"a medio escribir")
        term.type("\x03")              # Ctrl-C drops the line, not the conversation
        term.expect(r"line dropped; /quit or Ctrl-D leaves\)\n\+34 600 11 22 33:")
        assert term.proc.poll() is None
        term.type("\x04")              # Ctrl-D on an empty line leaves
        assert term.proc.wait(timeout=60) == 0
    finally:
        term.close()
