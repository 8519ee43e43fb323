"""DDP with 2 CPU processes (gloo): trains, and its first steps match one
process that sees the same global batch (both ranks' micro-batches)."""
from __future__ import annotations

import json
import socket

import pytest
import torch
import torch.distributed as dist

from gptfast.model import GPT
from gptfast.training.data import get_batch
from gptfast.training.optim import make_optimizer
from gptfast.training.checkpoint import load_checkpoint
from train_helpers import prepared, tiny_config, one_thread  # noqa: F401 (autouse fixture)

STEPS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cfg_dict: dict) -> None:
    import os

    from gptfast.training import ddp
    from gptfast.training.config import TrainConfig
    from gptfast.training.loop import train

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    train(TrainConfig(**cfg_dict), progress="quiet", log=lambda m: None)
    ddp.exit_finished_rank()  # as `python -m gptfast.train` ends a rank


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed gloo backend unavailable")
def test_ddp_two_processes_match_single(tmp_path):
    data = prepared(tmp_path)
    cfg = tiny_config(data, tmp_path / "ddp", max_iters=STEPS, eval_interval=STEPS, dropout=0.0, grad_clip=1.0)
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), cfg.to_dict()), nprocs=2, join=True)

    # One process, the same global batch: rank r's micro-batch comes from Generator(seed + r).
    from gptfast.data.dataset import load_dataset

    ds = load_dataset(data)
    tokens = ds.tokens("train")
    mcfg = cfg.model_config(ds.tokenizer.vocab_size)
    torch.manual_seed(cfg.seed)
    model = GPT(mcfg)
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), "cpu")
    gens = [torch.Generator().manual_seed(cfg.seed + r) for r in range(2)]
    from gptfast.training.schedule import lr_at

    losses = []
    for step in range(STEPS):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg.lr, cfg.lr / 10, cfg.warmup_iters, cfg.max_iters)
        total = 0.0
        for gen in gens:  # the mean of the two ranks' losses = what DDP's averaged gradient descends
            x, y = get_batch(tokens, cfg.batch_size, mcfg.block_size, gen, torch.device("cpu"))
            loss = model(x, y)[1] / 2
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad()
        losses.append(total)

    logged = [json.loads(l) for l in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    ddp_losses = [r["loss"] for r in logged if r["kind"] == "train"]
    print("ddp", ddp_losses, "single", losses)
    assert ddp_losses == pytest.approx(losses, rel=1e-5, abs=1e-6)
    ck = load_checkpoint(tmp_path / "ddp")
    assert ck.meta["world_size"] == 2 and len(ck.meta["rng"]["batch_generator"]) == 2
    for name, p in model.state_dict().items():
        torch.testing.assert_close(ck.model_state[name], p, rtol=1e-4, atol=1e-5, msg=name)
