"""Checkpoints that never execute code when loaded, written atomically.

A checkpoint is a folder:

    model.safetensors      the weights (the GPT state dict; a tied lm_head is stored once)
    optimizer.safetensors  AdamW's tensors, keyed "<param index>.<name>"   [absent in best/]
    checkpoint.json        format tag, model config, tokenizer, train config,
                           iteration, best val loss, RNG states (base64),
                           optimizer param groups

The folder is written whole under a temporary name (every file fsynced),
then swapped in with renames: the previous checkpoint is moved aside to
`.<name>.old`, the new one renamed into place, the old one deleted.  A
process killed at any point leaves either the new or the previous checkpoint
complete; `resolve_checkpoint` falls back to `.<name>.old` in the one window
where neither rename is done yet.  No pickle anywhere: safetensors for
tensors, JSON for the rest.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
import torch.nn as nn

from gptfast.errors import InputError
from gptfast.io_utils import atomic_write_bytes, atomic_write_text, fsync_dir

FORMAT = "gptfast.checkpoint"
VERSION = 1
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
META_FILE = "checkpoint.json"


class CheckpointError(InputError):
    """A checkpoint that cannot be used; one line, exit code 2 at the CLI."""


@dataclass
class Checkpoint:
    path: Path
    meta: Dict[str, Any]
    model_state: Dict[str, torch.Tensor]
    optimizer_state: Optional[Dict[str, Any]]  # a torch optimizer state_dict, or None


# -------------------------------------------------------------- RNG states
def encode_state(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def decode_state(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


# ------------------------------------------------------------------- save
def model_tensors(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors, each storage once (safetensors
    refuses shared tensors; a tied lm_head.weight is restored on load)."""
    out, seen = {}, set()
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key in seen:
            continue
        seen.add(key)
        out[name] = t.detach().to("cpu", copy=True).contiguous()
    return out


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v.detach().to("cpu", copy=True).contiguous()
            else:
                scalars[f"{idx}.{k}"] = v
    groups = []
    for g in sd["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()})
    return tensors, {"param_groups": groups, "scalars": scalars}


def save_checkpoint(dest: Union[str, Path], model: nn.Module, meta: Dict[str, Any],
                    optimizer: Optional[torch.optim.Optimizer] = None) -> Path:
    """Write a checkpoint folder at `dest` atomically (see the module doc)."""
    from safetensors.torch import save as st_save

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "version": VERSION, **meta}
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a checkpoint is an ordinary folder
    try:
        atomic_write_bytes(tmp / MODEL_FILE, st_save(model_tensors(model), metadata={"format": FORMAT}))
        if optimizer is not None:
            tensors, structure = optimizer_tensors(optimizer)
            atomic_write_bytes(tmp / OPTIMIZER_FILE, st_save(tensors, metadata={"format": FORMAT}))
            meta["optimizer"] = structure
        atomic_write_text(tmp / META_FILE, json.dumps(meta, ensure_ascii=False, indent=1))
        _swap_in(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _old(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.old")


def _swap_in(tmp: Path, dest: Path) -> None:
    old = _old(dest)
    if old.exists() and dest.exists():
        shutil.rmtree(old)              # a leftover of an earlier crash; dest is complete
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    fsync_dir(dest.parent)
    shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------- load
def resolve_checkpoint(path: Union[str, Path], which: str = "last") -> Path:
    """A checkpoint folder from a run directory (its `last/` or `best/`) or a
    checkpoint folder itself."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError("no such run directory or checkpoint", path=str(p))
    if (p / META_FILE).exists() or (p / MODEL_FILE).exists():
        return p
    for candidate in (p / which, _old(p / which)):
        if (candidate / META_FILE).exists():
            return candidate
    raise CheckpointError(f"not a gptfast run directory or checkpoint (no {which}/{META_FILE} or {META_FILE})",
                          path=str(p))


def read_meta(folder: Path) -> Dict[str, Any]:
    """checkpoint.json of a checkpoint folder, checked for the format tag."""
    meta_path = Path(folder) / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"missing {META_FILE}", path=str(folder)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"corrupt checkpoint metadata ({err})", path=str(meta_path)) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f'not a gptfast checkpoint (expected "format": "{FORMAT}")', path=str(meta_path))
    for key in ("model_config", "tokenizer", "iter"):
        if key not in meta:
            raise CheckpointError(f"corrupt checkpoint metadata (no {key!r})", path=str(meta_path))
    return meta


def load_checkpoint(path: Union[str, Path], which: str = "last", with_optimizer: bool = True) -> Checkpoint:
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    folder = resolve_checkpoint(path, which)
    meta = read_meta(folder)

    def read_tensors(name: str) -> Dict[str, torch.Tensor]:
        f = folder / name
        try:
            data = f.read_bytes()
        except OSError as err:
            raise CheckpointError(f"cannot read ({err.strerror or err})", path=str(f)) from None
        # safetensors: an 8-byte header length, then a JSON header starting "{".
        looks_pickled = data[:1] == b"\x80" or data[:2] == b"PK"
        if data[8:9] != b"{" and looks_pickled:
            raise CheckpointError("this is a pickle/torch.save file, not safetensors; gptfast never unpickles "
                                  "checkpoints (convert the weights to safetensors)", path=str(f))
        try:
            return st_load(data)
        except (SafetensorError, ValueError, OSError) as err:
            raise CheckpointError(f"not a valid safetensors file ({err})", path=str(f)) from None

    model_state = read_tensors(MODEL_FILE)
    optimizer_state = None
    if with_optimizer and "optimizer" in meta and (folder / OPTIMIZER_FILE).exists():
        tensors = read_tensors(OPTIMIZER_FILE)
        optimizer_state = _optimizer_state_dict(tensors, meta["optimizer"], folder)
    return Checkpoint(folder, meta, model_state, optimizer_state)


def _optimizer_state_dict(tensors: Dict[str, torch.Tensor], structure: Dict[str, Any], folder: Path) -> Dict[str, Any]:
    try:
        state: Dict[int, Dict[str, Any]] = {}
        for key, t in tensors.items():
            idx, name = key.split(".", 1)
            state.setdefault(int(idx), {})[name] = t
        for key, v in structure.get("scalars", {}).items():
            idx, name = key.split(".", 1)
            state.setdefault(int(idx), {})[name] = v
        groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else dict(g) for g in structure["param_groups"]]
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        raise CheckpointError(f"corrupt optimizer state ({err!r})", path=str(folder)) from None
    return {"state": state, "param_groups": groups}


def load_model_weights(model: nn.Module, state: Dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into `model`; a mismatch is a clear CheckpointError."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    tied = getattr(getattr(model, "config", None), "tie_weights", False)
    if tied and missing == ["lm_head.weight"]:
        missing = []
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} (model: {tuple(expected[k].shape)})"
             for k in state if k in expected and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
        if wrong:
            parts.append(f"wrong shape {', '.join(wrong[:2])}{' ...' if len(wrong) > 2 else ''}")
        raise CheckpointError("the weights do not fit the model described by its checkpoint.json ("
                              + "; ".join(parts) + ")", path=source)
    with torch.no_grad():
        model.load_state_dict(state, strict=not tied)
