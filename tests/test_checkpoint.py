"""Checkpoints: safetensors + JSON round trips, atomic saves, refusals."""
from __future__ import annotations

import json
import pickle

import pytest
import torch

from gptfast.config import GPTConfig
from gptfast.model import GPT
from gptfast.training import checkpoint as ck
from gptfast.training.optim import make_optimizer
from train_helpers import one_thread  # noqa: F401 (autouse fixture)

CFG = GPTConfig(vocab_size=13, n_layer=1, n_head=2, n_embd=16, block_size=8)


def trained(config=CFG, steps=2):
    torch.manual_seed(0)
    model = GPT(config)
    opt = make_optimizer(model, 1e-2, 0.1, (0.9, 0.99), "cpu")
    for _ in range(steps):
        x = torch.randint(0, config.vocab_size, (2, 8))
        model(x, x)[1].backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def meta(i):
    return {"model_config": CFG.to_dict(), "tokenizer": {"format": "x"}, "iter": i}


def test_round_trip_model_and_optimizer(tmp_path):
    model, opt = trained()
    ck.save_checkpoint(tmp_path / "last", model, meta(2), opt)
    got = ck.load_checkpoint(tmp_path)                      # a run dir resolves to last/
    assert got.meta["iter"] == 2
    fresh = GPT(CFG)
    ck.load_model_weights(fresh, got.model_state, "x")
    for (n, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), n
    opt2 = make_optimizer(fresh, 1e-2, 0.1, (0.9, 0.99), "cpu")
    opt2.load_state_dict(got.optimizer_state)
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        for k in a["state"][i]:
            assert torch.equal(a["state"][i][k], b["state"][i][k]), (i, k)


def test_tied_weights_stored_once(tmp_path):
    config = CFG.replace(tie_weights=True)
    model, _ = trained(config)
    ck.save_checkpoint(tmp_path / "c", model, {**meta(1), "model_config": config.to_dict()})
    got = ck.load_checkpoint(tmp_path / "c")
    fresh = GPT(config)
    ck.load_model_weights(fresh, got.model_state, "x")
    assert fresh.lm_head.weight is fresh.tok_emb.weight
    assert torch.equal(fresh.lm_head.weight, model.lm_head.weight)


@pytest.mark.parametrize("fail_on", ["model", "meta", "swap"])
def test_killed_save_leaves_previous_checkpoint(tmp_path, monkeypatch, fail_on):
    model, opt = trained()
    ck.save_checkpoint(tmp_path / "last", model, meta(1), opt)
    before = (tmp_path / "last" / "model.safetensors").read_bytes()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)

    class Killed(BaseException):  # like a SIGKILL mid-write: nothing after it runs
        pass

    def boom(*a, **k):
        raise Killed

    if fail_on == "model":
        monkeypatch.setattr(ck, "atomic_write_bytes", boom)
    elif fail_on == "meta":
        monkeypatch.setattr(ck, "atomic_write_text", boom)
    else:  # between moving the old checkpoint aside and renaming the new one in
        real = ck.os.replace
        calls = []

        def second_fails(a, b):
            calls.append(a)
            if len(calls) == 2:
                raise Killed
            real(a, b)
        monkeypatch.setattr(ck.os, "replace", second_fails)
    with pytest.raises(Killed):
        ck.save_checkpoint(tmp_path / "last", model, meta(2), opt)
    monkeypatch.undo()
    got = ck.load_checkpoint(tmp_path)
    assert got.meta["iter"] == 1
    assert (got.path / "model.safetensors").read_bytes() == before
    ck.load_model_weights(GPT(CFG), got.model_state, "x")
    # and the next save succeeds and cleans up
    ck.save_checkpoint(tmp_path / "last", model, meta(3), opt)
    assert ck.load_checkpoint(tmp_path).meta["iter"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_refuses_pickle_corrupt_and_foreign(tmp_path):
    model, opt = trained()
    ck.save_checkpoint(tmp_path / "ok", model, meta(1), opt)
    # a pickle (torch.save) in place of model.safetensors is never unpickled
    bad = tmp_path / "pickled"
    ck.save_checkpoint(bad, model, meta(1))
    torch.save(model.state_dict(), bad / "model.safetensors")
    with pytest.raises(ck.CheckpointError, match="pickle"):
        ck.load_checkpoint(bad)
    (bad / "model.safetensors").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ck.CheckpointError, match="pickle"):
        ck.load_checkpoint(bad)
    (bad / "model.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(ck.CheckpointError, match="safetensors"):
        ck.load_checkpoint(bad)
    (bad / "checkpoint.json").write_text("{not json")
    with pytest.raises(ck.CheckpointError, match="corrupt"):
        ck.load_checkpoint(bad)
    (bad / "checkpoint.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ck.CheckpointError, match="not a gptfast checkpoint"):
        ck.load_checkpoint(bad)
    with pytest.raises(ck.CheckpointError, match="no such"):
        ck.load_checkpoint(tmp_path / "missing")
    # weights of another architecture
    other = GPT(CFG.replace(n_embd=32))
    with pytest.raises(ck.CheckpointError, match="wrong shape"):
        ck.load_model_weights(other, ck.load_checkpoint(tmp_path / "ok").model_state, "ok")


def test_rng_state_round_trip():
    g = torch.Generator().manual_seed(5)
    s = ck.encode_state(g.get_state())
    a = torch.randint(0, 1000, (5,), generator=g)
    g.set_state(ck.decode_state(s))
    assert torch.equal(a, torch.randint(0, 1000, (5,), generator=g))
