"""A trained model ready to sample from: weights, tokenizer and chat contacts
read back from a run directory (or one of its checkpoint folders).

    trained = load_trained("out/runs/el_quijote-tiny")          # best/, else last/
    trained.model, trained.tokenizer, trained.contacts

Nothing is unpickled (gptfast.training.checkpoint); every problem with the
path or the files is a `CheckpointError`, one line and exit code 2 at the CLI.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch

from gptfast.config import GPTConfig
from gptfast.errors import InputError
from gptfast.model import GPT
from gptfast.tokenizer import Tokenizer
from gptfast.training.checkpoint import CheckpointError, load_checkpoint, load_model_weights, resolve_checkpoint

CHECKPOINTS = ("best", "last")


@dataclass
class TrainedModel:
    model: GPT
    tokenizer: Tokenizer
    meta: Dict[str, Any]
    path: Path            # the checkpoint folder the weights came from

    @property
    def contacts(self) -> List[str]:
        """The chat contacts of a model trained on a chat export ([] otherwise).
        Older checkpoints lack the list: then it is read off the tokenizer's
        specials, where each contact is the token "<name>:"."""
        saved = self.meta.get("contacts")
        if isinstance(saved, list):
            return [str(c) for c in saved]
        return [s[:-1] for s in self.tokenizer.specials if s.endswith(":") and len(s) > 1]

    @property
    def iteration(self) -> int:
        return int(self.meta.get("iter", 0))


def _pick_checkpoint(path: Union[str, Path], which: Optional[str]) -> Path:
    """The folder to load: `which` when given, else best/ with last/ as fallback."""
    if which is not None:
        if which not in CHECKPOINTS:
            raise InputError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got {which!r}")
        return resolve_checkpoint(path, which)
    try:
        return resolve_checkpoint(path, "best")
    except CheckpointError:
        return resolve_checkpoint(path, "last")


def load_trained(path: Union[str, Path], which: Optional[str] = None, device: Union[str, torch.device] = "cpu",
                 attention: str = "auto") -> TrainedModel:
    """The model of a run directory or checkpoint folder, in eval mode on `device`."""
    folder = _pick_checkpoint(path, which)
    ckpt = load_checkpoint(folder, with_optimizer=False)
    where = str(ckpt.path)
    try:
        config = GPTConfig.from_dict(ckpt.meta["model_config"]).replace(attention=attention)
    except (InputError, TypeError, AttributeError) as err:
        raise CheckpointError(f"corrupt model config in the checkpoint ({err})", path=where) from None
    tokenizer = Tokenizer.from_dict(ckpt.meta["tokenizer"], source=where)
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model expects "
                              f"{config.vocab_size}", path=where)
    model = GPT(config)
    load_model_weights(model, ckpt.model_state, where)
    return TrainedModel(model.to(device).eval(), tokenizer, ckpt.meta, ckpt.path)
