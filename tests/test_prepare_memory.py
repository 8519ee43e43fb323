"""Memory bound of preparing a dataset.

The issue: "preparing a 200 MB corpus must not hold more than about 3x the
corpus in memory".  Preparing streams the corpus in pieces, so its peak is a
constant (a multiple of the piece size), not a multiple of the corpus; this
test prepares a ~40 MB corpus (the shared Quijote repeated, or synthetic
Spanish-like text with accents when the shared data is absent) at char and
word level, each in its own process, and compares the peak resident memory
(VmHWM, or ru_maxrss without /proc) with a baseline process that imports the same modules.

GPTFAST_PREPARE_MEMORY_MB=200 runs it on the issue's 200 MB (slower).
"""
from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import SHARED_DATA
from gptfast.data.dataset import load_dataset
from gptfast.tokenizer import DEFAULT_WORD_PATTERN

CORPUS_MB = int(os.environ.get("GPTFAST_PREPARE_MEMORY_MB", "40"))
MAX_RATIO = 3.0  # (peak - baseline) / corpus bytes

# Imports what the prepare run imports and loads the C++ extension, then
# (unless told to measure only the baseline) runs the real command line.
# The peak is VmHWM where /proc exists: Linux carries ru_maxrss over fork and
# exec, so a child's ru_maxrss is at least the RSS of the pytest process that
# started it (hundreds of MB after other tests), which would swamp the figure.
SCRIPT = r"""
import json, resource, sys
import numpy
import gptfast.data.dataset
from gptfast.prepare import main
from gptfast.tokenizer import Tokenizer
Tokenizer("char", []).count("warm up the extension")
if sys.argv[1:]:
    main(sys.argv[1:])
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    with open("/proc/self/status") as f:
        peak_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    pass
print(json.dumps({"peak_kb": peak_kb}))
"""


def _block() -> str:
    """One block of text, ending with a newline; the corpus repeats it."""
    quijote = SHARED_DATA / "el_quijote.txt"
    if quijote.is_file():
        text = quijote.read_text(encoding="utf-8")
        return text if text.endswith("\n") else text + "\n"
    rng = random.Random(0)
    syllables = ["la", "ma", "che", "ño", "quí", "jo", "te", "rá", "sán", "cho", "pan", "za", "dul",
                 "ci", "né", "a", "ú", "gui", "güe", "llo", "rro", "ción", "ví", "zó"]
    lines = []
    size = 0
    while size < 1 << 20:
        words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(3, 14))]
        line = " ".join(words).capitalize() + rng.choice([".", ",", ";", "?", "!", "…", ":"])
        if rng.random() < 0.1:
            line = "¿" + line + " ¡" + str(rng.randint(1, 1999)) + "!"
        lines.append(line)
        size += len(line.encode("utf-8")) + 1
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    block = _block()
    raw = block.encode("utf-8")
    reps = max(1, round((CORPUS_MB << 20) / len(raw)))
    path = tmp_path_factory.mktemp("memory") / "corpus.txt"
    with open(path, "wb") as f:
        for _ in range(reps):
            f.write(raw)
    assert not block.isascii()  # accents: multi-byte UTF-8 is exercised
    return path, block, reps


def _peak_mb(args, cwd) -> float:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_kb"] / 1024


@pytest.fixture(scope="module")
def baseline_mb(corpus):
    return _peak_mb([], corpus[0].parent)


@pytest.mark.parametrize("kind", ["char", "word"])
def test_prepare_memory_bound(corpus, baseline_mb, kind):
    path, block, reps = corpus
    out = path.parent / f"ds-{kind}"
    peak_mb = _peak_mb(["--data", str(path), "--tokenizer", kind, "--out", str(out), "--quiet"], path.parent)
    corpus_mb = path.stat().st_size / (1 << 20)
    extra = peak_mb - baseline_mb
    report = (f"{kind} level, corpus {corpus_mb:.1f} MB: peak RSS {peak_mb:.0f} MB, baseline {baseline_mb:.0f} MB, "
              f"extra {extra:.0f} MB = {extra / corpus_mb:.2f}x the corpus (bound {MAX_RATIO}x)")
    print(report)
    assert extra < MAX_RATIO * corpus_mb, report

    # The bins are right: the ids are the block's ids `reps` times over.
    info = load_dataset(out)
    if kind == "char":
        per_block = len(block)
    else:
        per_block = len(re.findall(DEFAULT_WORD_PATTERN, block))
    assert info.meta["stats"]["tokens"] == per_block * reps
    assert info.meta["stats"]["bytes"] == path.stat().st_size
    ids = np.concatenate([info.tokens("train"), info.tokens("val")])
    assert len(ids) == per_block * reps
    assert len(info.tokens("train")) == int(len(ids) * 0.9)
    rows = ids.reshape(reps, per_block)
    np.testing.assert_array_equal(rows[0], info.tokenizer.encode(block))
    assert (rows == rows[0]).all()
    if kind == "char":
        assert info.tokenizer.vocab == sorted(set(block))
        assert info.tokenizer.decode(rows[-1][-2000:]) == block[-2000:]
