"""The training loop: it learns, it is deterministic, and a resumed run
equals an uninterrupted one bit for bit on the CPU."""
from __future__ import annotations

import json
import math

import pytest
import torch

from gptfast.model import GPT
from gptfast.config import GPTConfig
from gptfast.training.loop import train
from gptfast.training.optim import param_groups
from gptfast.training.schedule import lr_at
from train_helpers import prepared, tiny_config, one_thread  # noqa: F401 (autouse fixture)

QUIET = dict(progress="quiet", log=lambda m: None)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return prepared(tmp_path_factory.mktemp("data"))


def evals(run_dir):
    return [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if '"eval"' in l]


def test_loss_decreases_and_is_deterministic(data_dir, tmp_path):
    cfg = tiny_config(data_dir, tmp_path / "a", max_iters=40, eval_interval=20, log_interval=10, lr_decay_iters=40,
                      plot=True)
    res = train(cfg, **QUIET)
    e = evals(res.run_dir)
    assert [r["iter"] for r in e] == [0, 20, 40]
    assert e[-1]["val_loss"] < e[0]["val_loss"] - 0.5, e        # from ~ln(vocab) to well below
    assert e[0]["val_loss"] == pytest.approx(math.log(res.model.config.vocab_size), abs=0.3)
    assert (res.run_dir / "loss.png").stat().st_size > 1000
    assert json.loads((res.run_dir / "config.json").read_text())["n_embd"] == 32
    # Same seed: the same evaluation numbers, exactly.
    again = train(tiny_config(data_dir, tmp_path / "b", max_iters=20, eval_interval=20, log_interval=10,
                              lr_decay_iters=40), **QUIET)
    assert [r["val_loss"] for r in evals(again.run_dir)] == [r["val_loss"] for r in e[:2]]


def test_resume_is_bit_exact(data_dir, tmp_path):
    # dropout > 0 and grad_accum > 1 so the torch RNG and the batch stream both matter.
    changes = dict(max_iters=12, eval_interval=4, dropout=0.1, grad_accum=2)
    full = train(tiny_config(data_dir, tmp_path / "full", **changes), **QUIET)

    def stop_at_7(step, trainer):  # the Ctrl-C path: finish the step, save, stop
        if step == 7:
            trainer.request_stop("interrupted")

    part = train(tiny_config(data_dir, tmp_path / "part", **changes), on_step=stop_at_7, **QUIET)
    assert part.stopped == "interrupted" and part.iter == 7
    assert (part.val_iter, full.val_iter) == (4, 12)            # the loss reported is that of the last evaluation
    assert part.losses == full.losses[:7]
    resumed = train(tiny_config(data_dir, tmp_path / "part", **changes), resume=str(tmp_path / "part"), **QUIET)
    assert resumed.iter == 12
    assert resumed.losses == full.losses[7:]                   # every loss after k, to the last bit
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    iters = [json.loads(l)["iter"] for l in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
             if '"train"' in l]
    assert iters == list(range(12))                            # no duplicated records


def test_best_and_last_checkpoints(data_dir, tmp_path):
    res = train(tiny_config(data_dir, tmp_path / "r", max_iters=10, eval_interval=5), **QUIET)
    last = json.loads((res.run_dir / "last" / "checkpoint.json").read_text())
    best = json.loads((res.run_dir / "best" / "checkpoint.json").read_text())
    assert last["iter"] == 10 and best["best_val_loss"] == pytest.approx(res.best_val_loss)
    assert not (res.run_dir / "best" / "optimizer.safetensors").exists()


def test_init_from_fine_tunes(data_dir, tmp_path):
    base = train(tiny_config(data_dir, tmp_path / "base", max_iters=10), **QUIET)
    ft = train(tiny_config(data_dir, tmp_path / "ft", max_iters=4, eval_interval=4, init_from=str(base.run_dir)), **QUIET)
    # Starts from the trained weights: its first evaluation equals the base's last.
    assert evals(ft.run_dir)[0]["val_loss"] == pytest.approx(evals(base.run_dir)[-1]["val_loss"], abs=1e-6)


def test_max_minutes_stops(data_dir, tmp_path):
    res = train(tiny_config(data_dir, tmp_path / "t", max_iters=10**6, max_minutes=0.02), **QUIET)
    assert res.stopped == "max_minutes" and res.iter < 10**6
    assert json.loads((res.run_dir / "last" / "checkpoint.json").read_text())["iter"] == res.iter


def test_bfloat16_autocast_on_the_cpu(data_dir, tmp_path):
    """--dtype bfloat16 on the CPU: autocast around the forward, float32 weights
    and checkpoints, and it learns about as float32 does."""
    changes = dict(max_iters=30, eval_interval=30, dropout=0.1, lr_decay_iters=30)
    f32 = train(tiny_config(data_dir, tmp_path / "f32", **changes), **QUIET)
    bf16 = train(tiny_config(data_dir, tmp_path / "bf16", dtype="bfloat16", **changes), **QUIET)
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    first, last = evals(bf16.run_dir)[0]["val_loss"], evals(bf16.run_dir)[-1]["val_loss"]
    assert last < first - 0.5
    assert last == pytest.approx(evals(f32.run_dir)[-1]["val_loss"], abs=0.1)


@pytest.mark.parametrize("native, n_embd, dtype, says", [
    (True, 256, "auto", "--dtype bfloat16 trains this model about 2x faster"),
    (True, 32, "auto", None),                                    # narrow models run faster in float32
    (False, 256, "auto", None),
    (False, 32, "bfloat16", "--dtype float32 is faster here"),   # bfloat16 emulated
])
def test_the_run_says_when_bfloat16_pays(data_dir, tmp_path, monkeypatch, native, n_embd, dtype, says):
    monkeypatch.setattr("gptfast.training.loop.cpu_has_native_bf16", lambda: native)
    logs = []
    train(tiny_config(data_dir, tmp_path / "r", n_embd=n_embd, dtype=dtype, max_iters=1, eval_interval=1),
          progress="quiet", log=logs.append)
    hints = [line for line in logs if "bfloat16" in line and "parameters on" not in line]
    assert hints == ([] if says is None else [next(line for line in logs if says in line)])


def test_lr_schedule():
    kw = dict(lr=1.0, min_lr=0.1, warmup_iters=10, decay_iters=110)
    assert lr_at(0, **kw) < lr_at(9, **kw) < 1.0
    assert lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.55)
    assert lr_at(110, **kw) == lr_at(500, **kw) == 0.1
    assert lr_at(5, **kw, schedule="constant") == 1.0


def test_weight_decay_only_on_matrices():
    model = GPT(GPTConfig(vocab_size=11, n_layer=1, n_head=2, n_embd=16, block_size=8))
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith("weight") and p.dim() == 2 and "emb" not in names[id(p)] for p in decay["params"])
    assert {"tok_emb.weight", "pos_emb.weight", "ln_f.weight", "lm_head.bias"} <= {names[id(p)] for p in no_decay["params"]}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
