"""User-facing errors: one clear line, exit code 2, no traceback.

Library code raises `InputError` (or a subclass) for anything the *user*
got wrong: a missing file, bytes that are not UTF-8, an empty corpus, a
character the vocabulary does not know.  Entry points catch it with
`exit_on_input_error` and print the single line.  Bugs stay ordinary
exceptions with tracebacks.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator, Optional


class InputError(Exception):
    """Bad user input.  `str(err)` is the whole message, on one line:
    ``<where>: <what was expected>``, where ``where`` names the file and,
    when known, the position in it."""

    def __init__(self, message: str, path: Optional[str] = None, position: Optional[str] = None):
        self.path = path
        self.position = position
        self.detail = message
        where = ""
        if path is not None:
            where = str(path) + (f" ({position})" if position else "")
        elif position:
            where = position
        super().__init__(f"{where}: {message}" if where else message)


@contextlib.contextmanager
def exit_on_input_error(prog: str) -> Iterator[None]:
    """Turn `InputError` (and Ctrl-C) into one line on stderr and an exit code."""
    try:
        yield
    except InputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def unknown_words_note(tokenizer, text: str, what: str) -> Optional[str]:
    """A one-line note for words of `text` that a word-level vocabulary lacks
    (None when it has them all): they are not an error (they read as <UNK>,
    as in training), but the model cannot tell them apart, so the user
    should know."""
    unknown = tokenizer.unknown_words(text)
    if not unknown:
        return None
    shown = " ".join(unknown[:8]) + (f" (and {len(unknown) - 8} more)" if len(unknown) > 8 else "")
    return f"note: {what} has words the model's vocabulary lacks; it reads them as {tokenizer.unk_token}: {shown}"


def out_of_memory(err: BaseException) -> bool:
    """Whether `err` says an allocation failed: MemoryError (the C++ engine's
    std::bad_alloc), torch.OutOfMemoryError (CUDA), or the RuntimeError that
    PyTorch's CPU allocator raises."""
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return True
    return isinstance(err, RuntimeError) and "can't allocate memory" in str(err)
