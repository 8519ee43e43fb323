"""Small trained runs for the generation and chat tests: a char-level model on
the proverbs and a word-level model on a synthetic WhatsApp export, trained
for a few steps on one thread (seconds), so tests never need the shared data."""
from __future__ import annotations

from pathlib import Path

import pytest

from gptfast import _backend
from gptfast.data.dataset import PrepareOptions, prepare_dataset
from gptfast.training.loop import train
from train_helpers import prepared, tiny_config

# For tests that compare against the C++ engine explicitly.
needs_cpp_engine = pytest.mark.skipif(_backend._C is None or _backend.reference_forced(),
                                      reason="needs the C++ extension (not built, or GPTFAST_REFERENCE=1)")

CHAT_LINES = [
    ("Ana", "hola a todos, ¿qué tal?"),
    ("Luis", "muy bien, ¿y tú?"),
    ("Marta", "yo también, vamos a la playa"),
    ("Ana", "¡qué buena idea! ¿a qué hora?"),
    ("Luis", "a las cinco, llevo la pelota"),
    ("Marta", "perfecto, nos vemos allí"),
    ("+34 600 11 22 33", "no puedo, tengo trabajo"),
]


def chat_export(repeats: int = 40) -> str:
    """An Android-format export: `dd/mm/yy, hh:mm - Name: message` lines."""
    lines = []
    for r in range(repeats):
        for i, (who, text) in enumerate(CHAT_LINES):
            lines.append(f"{1 + r % 28:02d}/03/21, {10 + i:02d}:{r % 60:02d} - {who}: {text}")
    return "\n".join(lines) + "\n"


def char_run(tmp: Path) -> Path:
    out = tmp / "char-run"
    train(tiny_config(prepared(tmp), out, max_iters=30, eval_interval=30), progress="quiet", log=lambda m: None)
    return out


def chat_run(tmp: Path) -> Path:
    src = tmp / "chat.txt"
    src.write_text(chat_export(), encoding="utf-8")
    data = tmp / "chat-data"
    prepare_dataset([str(src)], data, PrepareOptions())
    out = tmp / "chat-run"
    train(tiny_config(data, out, max_iters=40, eval_interval=40, block_size=24), progress="quiet", log=lambda m: None)
    return out
