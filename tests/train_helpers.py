"""Shared by the training tests: a small embedded corpus and tiny settings,
so the tests run anywhere (no shared data) in seconds."""
from __future__ import annotations

from pathlib import Path

from gptfast.data.dataset import PrepareOptions, prepare_dataset
from gptfast.training.config import TrainConfig

PROVERBS = """Quien madruga, Dios le ayuda.
No por mucho madrugar amanece mas temprano.
Mas vale tarde que nunca.
A caballo regalado no le mires el diente.
En boca cerrada no entran moscas.
Dime con quien andas y te dire quien eres.
Camaron que se duerme se lo lleva la corriente.
Al mal tiempo, buena cara.
Perro ladrador, poco mordedor.
Donde fueres, haz lo que vieres.
Cria cuervos y te sacaran los ojos.
El que mucho abarca poco aprieta.
"""
TEXT = PROVERBS * 30  # ~14k characters: enough windows, small enough to be instant


def prepared(tmp: Path, text: str = TEXT, name: str = "proverbs", tokenizer: str = "char") -> Path:
    src = tmp / f"{name}.txt"
    src.write_text(text, encoding="utf-8")
    out = tmp / f"{name}-data"
    prepare_dataset([str(src)], out, PrepareOptions(tokenizer=tokenizer))
    return out


def tiny_config(data_dir: Path, out: Path, **changes) -> TrainConfig:
    base = dict(data=[str(data_dir)], n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=8,
                max_iters=20, eval_interval=10, eval_iters=4, log_interval=1, sample_tokens=0,
                warmup_iters=2, lr=3e-3, plot=False, out=str(out), device="cpu")
    base.update(changes)
    return TrainConfig(**base)


import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and a busy shared CPU makes
    OpenMP's spinning threads very slow; restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
