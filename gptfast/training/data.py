"""The training data: a prepared dataset (prepared now if needed) and
random contiguous windows drawn from it, as in the seeds:
x = data[i:i+T], y = data[i+1:i+T+1], i uniform in [0, len - T - 1].
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from gptfast.data.corpus import resolve
from gptfast.data.dataset import DatasetInfo, PrepareOptions, find_reusable, load_dataset, prepare_dataset
from gptfast.errors import InputError

CACHE_ROOT = Path("out") / "data"


def dataset_dir_for(data: Optional[Sequence[str]], options: PrepareOptions, root: Path = CACHE_ROOT) -> Path:
    """The cache folder for a corpus: out/data/<corpus>-<tokenizer> (the same
    folder `python -m gptfast.prepare` writes by default, so the two share it)."""
    return root / f"{resolve(data).name}-{options.tokenizer or 'auto'}"


def is_prepared_dir(data: Optional[Sequence[str]]) -> bool:
    return bool(data) and len(data) == 1 and (Path(data[0]) / "meta.json").is_file()


def get_dataset(data: Optional[Sequence[str]], options: PrepareOptions, cache_root: Path = CACHE_ROOT,
                log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> DatasetInfo:
    """A prepared dataset folder is used as is; a corpus is prepared into the
    cache, or its earlier preparation reused when source and options match."""
    if is_prepared_dir(data):
        return load_dataset(data[0])
    out = dataset_dir_for(data, options, cache_root)
    info = find_reusable(out, data, options)
    if info is not None:
        log(f"reusing the prepared dataset {out}")
        return info
    log(f"preparing the dataset into {out}")
    return prepare_dataset(data, out, options, log=log)


def check_split(tokens: np.ndarray, block_size: int, split: str, path) -> None:
    if len(tokens) < block_size + 2:
        raise InputError(f"the {split} split has {len(tokens)} tokens, fewer than block_size + 2 = "
                         f"{block_size + 2}; use more text, a smaller --block-size or another --val-fraction",
                         path=str(path))


def get_batch(tokens: np.ndarray, batch_size: int, block_size: int, generator: torch.Generator,
              device: torch.device) -> tuple:
    """A batch of random windows; the starts come from `generator` only, so a
    saved generator state replays the same batches."""
    ix = torch.randint(len(tokens) - block_size - 1, (batch_size,), generator=generator)
    x = torch.from_numpy(np.stack([tokens[i:i + block_size] for i in ix.tolist()]).astype(np.int64))
    y = torch.from_numpy(np.stack([tokens[i + 1:i + 1 + block_size] for i in ix.tolist()]).astype(np.int64))
    if device.type == "cuda":  # async copy from pinned memory
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)
