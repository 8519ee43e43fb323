"""python -m gptfast.train: a working run, and one clear line + exit code 2
(no traceback) for every bad input."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gptfast.train import build_parser, config_from_args
from gptfast.training.loop import train
from train_helpers import TEXT, prepared, tiny_config, one_thread  # noqa: F401 (autouse fixture)

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "4",
        "--eval-iters", "2", "--sample-tokens", "0", "--no-plot", "--device", "cpu", "--plain"]


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("WORLD_SIZE", None)
    env["OMP_NUM_THREADS"] = "1"  # tiny models; many processes share two cores
    return env


def run_many(cwd: Path, argvs):
    """Start every command at once (the interpreter start dominates), then wait."""
    procs = [subprocess.Popen([sys.executable, "-m", "gptfast.train", *a], cwd=cwd, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for a in argvs]
    return [(p.wait(timeout=120), *p.communicate()) for p in procs]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    data = prepared(tmp)
    run = train(tiny_config(data, tmp / "run", max_iters=4, eval_interval=2), progress="quiet", log=lambda m: None)
    (tmp / "book.txt").write_text(TEXT, encoding="utf-8")
    return tmp, data, run.run_dir


def test_cli_trains_and_resumes(setup):
    tmp, data, _ = setup
    (tmp / "cfg.toml").write_text('max_iters = 3\neval_interval = 3\n[model]\nn_layer = 1\n')
    (rc, out, err), = run_many(tmp, [["--data", "book.txt", "--config", "cfg.toml", "--out", "r", *TINY]])
    assert rc == 0, err
    assert "stopped (max_iters) at iter 3" in out
    assert "preparing the dataset" in err and "iter 3/3 | loss" in err
    saved = json.loads((tmp / "r" / "config.json").read_text())
    assert saved["max_iters"] == 3 and saved["n_layer"] == 1
    (rc, out, err), (rc2, out2, err2) = run_many(tmp, [["--resume", "r", "--max-iters", "5", "--quiet"],
                                                       ["--data", "book.txt", "--out", "r2", "--max-iters", "1", *TINY]])
    assert rc == 0, err
    assert "at iter 5" in out
    assert rc2 == 0 and "reusing the prepared dataset" in err2   # unchanged source: not prepared again


def _corrupt_copies(tmp: Path, run: Path):
    cases = {}
    for name in ("bad_json", "foreign", "pickled"):
        dst = tmp / name
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(run, dst)
        cases[name] = dst
    (cases["bad_json"] / "last" / "checkpoint.json").write_text("{oops")
    meta = json.loads((cases["foreign"] / "last" / "checkpoint.json").read_text())
    meta["model_config"]["n_embd"] = 64            # weights no longer fit the declared model
    meta["train_config"]["n_embd"] = 64
    (cases["foreign"] / "last" / "checkpoint.json").write_text(json.dumps(meta))
    torch.save({"w": torch.zeros(2)}, cases["pickled"] / "last" / "model.safetensors")
    return cases


def test_bad_inputs_one_line_exit_2(setup):
    tmp, data, run = setup
    c = _corrupt_copies(tmp, run)
    (tmp / "words.txt").write_text(TEXT, encoding="utf-8")
    cases = {
        "missing data": (["--data", "nope.txt"], "nope.txt"),
        "unknown preset": (["--data", "book.txt", "--preset", "huge"], "unknown model preset 'huge'"),
        "bad override": (["--data", "book.txt", "--n-layer", "zero"], "--n-layer"),
        "bad dropout": (["--data", "book.txt", "--dropout", "1.5"], "dropout"),
        "bad heads": (["--data", "book.txt", "--n-embd", "2", "--n-head", "4"], "n_head"),
        "bad config file": (["--config", "missing.toml"], "missing.toml"),
        "corrupt checkpoint": (["--resume", str(c["bad_json"])], "corrupt checkpoint metadata"),
        "foreign checkpoint": (["--resume", str(c["foreign"])], "do not fit"),
        "pickle checkpoint": (["--resume", str(c["pickled"])], "pickle"),
        "not a run": (["--resume", str(tmp)], "not a gptfast run directory"),
        "resume incompatible": (["--resume", str(run), "--n-embd", "64"], "cannot resume"),
        "resume with another split": (["--resume", str(run), "--shuffle-sentences", "4"], "cannot resume"),
        "negative shuffle": (["--data", "book.txt", "--shuffle-sentences", "-1"], "--shuffle-sentences"),
        "init-from other tokenizer": (["--data", "words.txt", "--tokenizer", "word", "--init-from", str(run),
                                       "--out", "ft", *TINY], "tokenizer"),
    }
    results = run_many(tmp, [argv for argv, _ in cases.values()])
    for (name, (argv, expected)), (rc, out, err) in zip(cases.items(), results):
        lines = err.strip().splitlines()
        assert rc == 2, (name, err)
        assert "Traceback" not in err, (name, err)
        assert len(lines) == 1 or all("preparing" in l or "reading" in l or "vocabulary" in l or "encoded" in l
                                      for l in lines[:-1]), (name, err)
        assert expected in lines[-1] and "error" in lines[-1], (name, lines[-1])


def test_help_is_grouped():
    text = build_parser().format_help()
    for group in ("run:", "data", "model", "optimization:", "evaluation and logging:", "hardware:"):
        assert group in text
    for flag in ("--resume", "--init-from", "--max-minutes", "--lr-schedule", "--compile", "--plain", "--bias"):
        assert flag in text


def test_shuffled_split_from_the_train_command(tmp_path):
    """--shuffle-sentences (the LitteraGPT split) reaches the preparation that
    train runs on first use, as `prepare --shuffle-sentences` does."""
    from gptfast.training.data import get_dataset

    (tmp_path / "book.txt").write_text(TEXT, encoding="utf-8")
    argv = ["--data", str(tmp_path / "book.txt"), "--shuffle-sentences", "3"]
    cfg, _, _ = config_from_args(build_parser().parse_args(argv))
    assert cfg.shuffle_sentences == 3 and cfg.to_dict()["shuffle_sentences"] == 3
    info = get_dataset(cfg.data, cfg.prepare_options(), cache_root=tmp_path / "data", log=lambda m: None)
    assert info.meta["options"]["shuffle_sentences"] == 3
    plain = get_dataset(cfg.data, dataclasses.replace(cfg, shuffle_sentences=0).prepare_options(),
                        cache_root=tmp_path / "data", log=lambda m: None)
    assert plain.meta["options"]["shuffle_sentences"] == 0     # another split: prepared again, not reused


@pytest.mark.parametrize("error", [RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't "
                                                 "allocate memory: you tried to allocate 39321600000 bytes"),
                                    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
                                    MemoryError()])
def test_out_of_memory_is_one_line(tmp_path, monkeypatch, capsys, error):
    """A batch that does not fit: one line that says what to lower, exit 2;
    any other error keeps its traceback."""
    import gptfast.training.loop as loop
    from gptfast import train as cli

    def failing_with(e):
        def train(*args, **kwargs):
            raise e
        return train

    monkeypatch.setattr(loop, "train", failing_with(error))
    (tmp_path / "book.txt").write_text(TEXT, encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--data", str(tmp_path / "book.txt"), "--batch-size", "4096", "--block-size", "512"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "out of memory with --batch-size 4096 at block size 512: lower --batch-size" in err
    monkeypatch.setattr(loop, "train", failing_with(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["--data", str(tmp_path / "book.txt")])


def test_precedence_defaults_file_cli(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"lr": 0.5, "max_iters": 7}))
    cfg, resume, progress = config_from_args(build_parser().parse_args(["--config", str(f), "--lr", "0.1", "--quiet"]))
    assert (cfg.lr, cfg.max_iters, cfg.batch_size, resume, progress) == (0.1, 7, 32, None, "quiet")


def test_ctrl_c_saves_a_checkpoint_and_resume_continues(tmp_path):
    """A real SIGINT (what Ctrl-C sends) to a training process: it finishes
    the step, writes last/, says so, exits 0; --resume carries on from there."""
    import signal
    import time

    data = prepared(tmp_path)
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "gptfast.train", "--data", str(data), *TINY, "--out", str(out),
            "--max-iters", "100000", "--eval-interval", "100000", "--log-interval", "1"]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    seen = []
    for line in proc.stdout:            # wait until steps are running
        seen.append(line)
        if line.startswith("iter 5/"):
            break
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    text = "".join(seen) + rest
    assert proc.returncode == 0, text
    assert "Ctrl-C: saving a checkpoint" in text and "Traceback" not in text
    meta = json.loads((out / "last" / "checkpoint.json").read_text())
    stopped_at = meta["iter"]
    assert stopped_at >= 5
    resumed = subprocess.run([sys.executable, "-m", "gptfast.train", "--resume", str(out),
                              "--max-iters", str(stopped_at + 3)], cwd=tmp_path, env=_env(),
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "last" / "checkpoint.json").read_text())["iter"] == stopped_at + 3
