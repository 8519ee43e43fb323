"""Training throughput of the trainer (batch sampling + forward + backward +
clip + AdamW, i.e. `Trainer._train_step`) for the `quijote` preset on this
CPU: the fast model vs the seed-style reference model, in one run.

    python -m pytest benchmarks/test_train.py -q        # GPTFAST_BENCH_SMALL=1 shrinks the batch

Corpus: ../shared/data/el_quijote.txt when present, else an embedded text
(throughput does not depend on the words).
"""
from __future__ import annotations

import os

import pytest
import torch

from gptfast.data.dataset import PrepareOptions, prepare_dataset
from gptfast.reference.model import GPTLanguageModel
from gptfast.training import ddp
from gptfast.training.config import TrainConfig
from gptfast.training.loop import Trainer
from gptfast.training.optim import make_optimizer
from gptfast.training.runtime import flops_per_token
from gptfast.weights_mapping import fast_to_reference

from .conftest import SHARED_DATA

SMALL = os.environ.get("GPTFAST_BENCH_SMALL", "") not in ("", "0")
BATCH, SEQ = (4, 64) if SMALL else (16, 256)
ROUNDS = 3 if SMALL else 5

PERF_REPORT = [
    ("train step fast / reference (quijote preset)", "train fast", "train reference", 1.3),   # issue 3
    ("train step fast", "train fast", None, None),
    ("train step fast GFLOP/s", "train fast GFLOP/s", None, None),
]


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench-train")
    src = SHARED_DATA / "el_quijote.txt"
    if not src.is_file():
        src = tmp / "text.txt"
        src.write_text("En un lugar de la Mancha, de cuyo nombre no quiero acordarme.\n" * 4000, encoding="utf-8")
    data = prepare_dataset([str(src)], tmp / "data", PrepareOptions(tokenizer="char"))
    cfg = TrainConfig(data=[str(data.path)], preset="quijote", block_size=SEQ, batch_size=BATCH,
                      out=str(tmp / "run"), device="cpu", compile=False, sample_tokens=0, plot=False)
    cfg.validate()
    return Trainer(cfg, ddp.DistInfo(), "cpu", None, "quiet", lambda m: None)


def _bench(benchmark, perf, trainer, name):
    step = iter(range(10**6))
    benchmark.pedantic(lambda: trainer._train_step(next(step)), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    tokens = BATCH * SEQ
    tok_s = perf.rate(f"train {name}", tokens, benchmark, unit="tokens/s")
    if tok_s is not None:
        mc = trainer.mcfg
        perf.record(f"train {name} GFLOP/s", tok_s * flops_per_token(mc.num_params(), mc.n_layer, mc.n_embd, SEQ) / 1e9,
                    "GFLOP/s")


@pytest.mark.benchmark(group="train-quijote")
def test_train_fast(benchmark, perf, trainer):
    _bench(benchmark, perf, trainer, "fast")


class _SeedModel(GPTLanguageModel):
    """The seed model under the trainer's call (which asks for no logits: the
    seed model computes them all the same)."""

    def forward(self, idx, targets=None, return_logits=True):
        return super().forward(idx, targets)


@pytest.mark.benchmark(group="train-quijote")
def test_train_reference(benchmark, perf, trainer):
    fast = trainer.model
    ref = _SeedModel(trainer.mcfg)
    ref.load_state_dict(fast_to_reference(fast.state_dict(), trainer.mcfg.n_head), strict=False)
    ref.train()
    saved = trainer.model, trainer.fwd_model, trainer.optimizer
    trainer.model = trainer.fwd_model = ref
    trainer.optimizer = make_optimizer(ref, 1e-3, 0.1, (0.9, 0.99), "cpu")
    try:
        _bench(benchmark, perf, trainer, "reference")
    finally:
        trainer.model, trainer.fwd_model, trainer.optimizer = saved
