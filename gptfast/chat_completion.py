"""Tab completion for the chat REPL: contact names, special tokens, commands.

Contact names may hold spaces ("+34 600 11 22 33", "Ana María"), so the
thing being completed is not just the word before the cursor: it is the
longest tail of the line, starting at the line's start or after a space, that
begins a candidate (case-insensitively).  So "/as ana m" offers "Ana María",
and "hola <E" offers "<END>".  An empty tail offers nothing, or the menu
would open after every space while typing.
"""
from __future__ import annotations

from typing import Iterable, List, Tuple


def completions(before_cursor: str, candidates: Iterable[str]) -> List[Tuple[str, int]]:
    """(candidate, how many characters before the cursor it replaces), in the
    candidates' order, for each candidate that a tail of the line begins."""
    starts = [0] + [i + 1 for i, ch in enumerate(before_cursor) if ch == " "]   # earliest (longest tail) first
    tails = [before_cursor[s:] for s in starts if s < len(before_cursor)]
    found = []
    for candidate in candidates:
        folded = candidate.casefold()
        tail = next((t for t in tails if folded.startswith(t.casefold()) and t != candidate), None)
        if tail is not None:
            found.append((candidate, len(tail)))
    return found


def prompt_toolkit_completer(candidates: Iterable[str]):
    """The same completions as a prompt_toolkit Completer (imported lazily:
    prompt_toolkit is optional)."""
    from prompt_toolkit.completion import Completer, Completion

    words = list(dict.fromkeys(candidates))

    class PhraseCompleter(Completer):
        def get_completions(self, document, complete_event):
            for word, replaced in completions(document.text_before_cursor, words):
                yield Completion(word, start_position=-replaced)

    return PhraseCompleter()
