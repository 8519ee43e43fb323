"""python -m gptfast.prepare and python -m gptfast (quickstart) as a user runs them.

Bad input must give exit code 2 and exactly one line on stderr, no traceback
(DESIGN.md, "What every user-facing command promises").
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gptfast.data.dataset import load_dataset
from gptfast.prepare import main as prepare_main

ERROR_PREFIXES = ("gptfast.prepare: error:", "python -m gptfast.prepare: error:")
# Any network use fails at once (nothing listens on port 9, the discard port).
NO_NETWORK = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
              "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": ""}


def run(args, cwd: Path, module: str = "gptfast.prepare", env=None, timeout=120) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **NO_NETWORK, "GPTFAST_CACHE": str(cwd / ".empty-cache"), **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one stderr line of a failed run, after checking the contract."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(ERROR_PREFIXES), lines[0]
    return lines[0]


@pytest.fixture
def cwd(tmp_path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


def test_missing_file(cwd):
    line = error_line(run(["--data", "nofile.txt", "--quiet"], cwd))
    assert "nofile.txt" in line and "no such file" in line
    assert not (cwd / "out").exists()


def test_folder_with_no_files(cwd):
    (cwd / "empty").mkdir()
    (cwd / "empty" / ".hidden").write_text("skipped\n")
    line = error_line(run(["--data", "empty", "--quiet"], cwd))
    assert "empty" in line and "no files" in line


def test_non_utf8_then_replace(cwd):
    good = "línea buena\n" * 3
    (cwd / "bad.txt").write_bytes(good.encode("utf-8") + b"mal\xe9 dato\n")
    offset = len(good.encode("utf-8")) + 3
    line = error_line(run(["--data", "bad.txt", "--out", "ds", "--quiet"], cwd))
    assert "bad.txt" in line and f"byte {offset}" in line and "line 4" in line
    assert "--encoding-errors replace" in line
    assert not (cwd / "ds" / "meta.json").exists()

    proc = run(["--data", "bad.txt", "--out", "ds", "--quiet", "--encoding-errors", "replace"], cwd)
    assert proc.returncode == 0, proc.stderr
    info = load_dataset(cwd / "ds")
    assert "\ufffd" in info.tokenizer.vocab


def test_error_after_progress_lines_is_still_one_error_line(cwd):
    (cwd / "bad.txt").write_bytes(b"ok\n\xff\n")
    proc = run(["--data", "bad.txt", "--out", "ds"], cwd)  # not quiet: progress goes to stderr too
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [l for l in proc.stderr.splitlines() if "error:" in l]
    assert len(errors) == 1 and errors[0] == proc.stderr.splitlines()[-1]
    assert errors[0].startswith(ERROR_PREFIXES) and "bad.txt" in errors[0]


def test_out_is_a_file(cwd):
    (cwd / "q.txt").write_text("hola\n")
    (cwd / "taken").write_text("a file where the dataset folder should go\n")
    line = error_line(run(["--data", "q.txt", "--out", "taken", "--quiet"], cwd))
    assert "taken" in line and "cannot write" in line


def test_empty_corpus(cwd):
    (cwd / "ws.txt").write_text("  \n\n\t \n")
    line = error_line(run(["--data", "ws.txt", "--out", "ds", "--quiet"], cwd))
    assert "ws.txt" in line and "empty" in line


def test_forced_whatsapp_without_messages(cwd):
    (cwd / "chat.txt").write_text("hola, esto no es\nun chat exportado\n")
    line = error_line(run(["--data", "chat.txt", "--format", "whatsapp", "--out", "ds", "--quiet"], cwd))
    assert "chat.txt" in line and "iOS" in line and "Android" in line  # names the formats tried


BAD_OPTIONS = [
    (["--bogus"], ["--bogus"]),
    (["--val-fraction", "2"], ["val", "2"]),
    (["--val-fraction", "abc"], ["--val-fraction", "abc"]),
    (["--min-count-tokens", "0"], ["--min-count-tokens", "0"]),
    (["--min-count-chars", "-3"], ["--min-count-chars", "-3"]),
    (["--tokenizer", "bpe"], ["--tokenizer", "bpe"]),
    (["--format", "csv"], ["--format", "csv"]),
    (["--shuffle-sentences", "-1"], ["shuffle", "-1"]),
    (["--threads", "0"], ["--threads"]),
    (["--special", "a\nb"], ["special"]),
    (["--tokenizer", "word", "--pattern", "(\\w+"], ["pattern", "(\\w+"]),
]


@pytest.mark.parametrize("args, words", BAD_OPTIONS)
def test_bad_options_in_process(cwd, monkeypatch, capsys, args, words):
    """Every bad option through main() (fast); the subprocess test below
    checks a few of them end to end."""
    monkeypatch.chdir(cwd)
    (cwd / "x.txt").write_text("hola\n")
    with pytest.raises(SystemExit) as exc:
        prepare_main([*args, "--data", "x.txt", "--quiet"])
    captured = capsys.readouterr()
    line = error_line(subprocess.CompletedProcess([], exc.value.code, captured.out, captured.err))
    for w in words:
        assert w in line, (w, line)
    assert not (cwd / "out").exists()


@pytest.mark.parametrize("args, words", [BAD_OPTIONS[i] for i in (0, 1, 3, 5)])
def test_bad_options(cwd, args, words):
    (cwd / "x.txt").write_text("hola\n")
    line = error_line(run([*args, "--data", "x.txt", "--quiet"], cwd))
    for w in words:
        assert w in line, (w, line)


def test_options_are_checked_before_the_data(cwd):
    line = error_line(run(["--val-fraction", "2", "--data", "quijote", "--quiet"], cwd))
    assert "val_fraction" in line and "quijote" not in line


def test_unknown_dataset_name_is_a_missing_path(cwd):
    line = error_line(run(["--data", "notadataset", "--quiet"], cwd))
    assert "notadataset" in line and "no such file" in line


def test_named_dataset_offline(cwd):
    proc = run(["--data", "quijote", "--out", "ds", "--quiet"], cwd, timeout=60)
    line = error_line(proc)
    assert "quijote" in line and "pass a text file" in line
    assert not any((cwd / ".empty-cache").glob("*.txt"))  # nothing half-downloaded is cached


def test_happy_path_prints_statistics(cwd):
    text = "En un lugar de la Mancha, de cuyo nombre no quiero acordarme.\n" * 20
    (cwd / "q.txt").write_text(text, encoding="utf-8")
    proc = run(["--data", "q.txt", "--tokenizer", "word", "--out", "ds"], cwd)
    assert proc.returncode == 0, proc.stderr
    info = load_dataset(cwd / "ds")
    out = proc.stdout
    assert f"vocabulary {info.tokenizer.vocab_size:,}" in out
    assert "tokens" in out and f"{info.meta['stats']['tokens']:,}" in out
    assert f"train {len(info.tokens('train')):,}" in out
    assert "reading q.txt" in proc.stderr  # progress, not on stdout
    ids = np.concatenate([info.tokens("train"), info.tokens("val")])
    np.testing.assert_array_equal(ids, info.tokenizer.encode(text))
    # the same command again: same bytes
    before = (cwd / "ds" / "train.bin").read_bytes()
    assert run(["--data", "q.txt", "--tokenizer", "word", "--out", "ds", "--quiet"], cwd).returncode == 0
    assert (cwd / "ds" / "train.bin").read_bytes() == before


def test_default_out_dir(cwd):
    (cwd / "libro.txt").write_text("hola mundo\n" * 10)
    proc = run(["--data", "libro.txt", "--quiet"], cwd)
    assert proc.returncode == 0, proc.stderr
    assert (cwd / "out" / "data" / "libro-auto" / "meta.json").is_file()


def test_quickstart(cwd):
    """The main job: prepare the embedded corpus, train a few steps, sample."""
    proc = run(["--out", "run", "--max-iters", "3", "--sample-tokens", "20"], cwd, module="gptfast")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    info = load_dataset(cwd / "out" / "data" / "python-docs-auto")
    assert info.tokenizer.kind == "char" and info.tokenizer.vocab_size <= 96
    assert "vocabulary" in proc.stdout and "tokens" in proc.stdout and "trained 3 steps" in proc.stdout
    assert info.meta["source"]["name"] == "python-docs"
    assert (cwd / "run" / "last" / "model.safetensors").is_file()
    assert "python -m gptfast.generate --run run" in proc.stderr   # the next step it suggests works:
    sample = run(["--run", "run", "--prompt", "The ", "--max-new-tokens", "20", "--no-stream"], cwd,
                 module="gptfast.generate")
    assert sample.returncode == 0 and sample.stdout.startswith("The ") and "tokens/s" in sample.stderr


def test_quickstart_bad_input_contract(cwd):
    proc = run(["--data", "nofile.txt"], cwd, module="gptfast")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [l for l in proc.stderr.splitlines() if "error:" in l]
    assert len(errors) == 1 and "nofile.txt" in errors[0]
