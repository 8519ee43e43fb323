"""TrainConfig: every setting of a training run in one flat dataclass.

Flat on purpose: a TOML/JSON config file, the command line and the
`config.json` written into the run directory all use the same field names,
so a run is reproduced with ``--config out/runs/x/config.json``.

Precedence: dataclass defaults < config file < command-line options.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from gptfast.config import PRESETS, ConfigError, GPTConfig, preset
from gptfast.data.dataset import PrepareOptions

# Model fields the command line / config file may override on top of the preset.
MODEL_OVERRIDES = ("n_layer", "n_head", "n_embd", "block_size", "dropout", "bias",
                   "pos_embedding", "tie_weights", "attention")
# Fields that define *what* is trained: a resumed run must keep them.
STRUCTURAL = ("preset",) + MODEL_OVERRIDES[:-1] + ("data", "tokenizer", "format", "shuffle_sentences", "lowercase",
                                                    "min_count_chars", "min_count_tokens", "pattern", "specials")
LR_SCHEDULES = ("cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class TrainConfig:
    # -- data (None: the embedded default corpus) --------------------------
    data: Optional[List[str]] = None
    tokenizer: Optional[str] = None          # char | word; None: word for chats, char otherwise
    format: str = "auto"
    val_fraction: float = 0.1
    shuffle_sentences: int = 0               # > 0: shuffle chunks of N sentences before the split (LitteraGPT)
    lowercase: bool = False
    min_count_chars: int = 1
    min_count_tokens: int = 1
    pattern: Optional[str] = None
    specials: List[str] = field(default_factory=list)
    encoding_errors: str = "strict"
    # -- model: a preset plus overrides (None: keep the preset's value) -----
    preset: str = "tiny"
    n_layer: Optional[int] = None
    n_head: Optional[int] = None
    n_embd: Optional[int] = None
    block_size: Optional[int] = None
    dropout: Optional[float] = None
    bias: Optional[bool] = None
    pos_embedding: Optional[str] = None
    tie_weights: Optional[bool] = None
    attention: Optional[str] = None
    # -- optimisation -------------------------------------------------------
    batch_size: int = 32                      # sequences per micro-batch per process
    grad_accum: int = 1                       # micro-batches per optimizer step
    total_batch_size: Optional[int] = None    # sequences per step over all processes; sets grad_accum
    max_iters: int = 2000
    max_minutes: Optional[float] = None
    lr: float = 1e-3
    min_lr: Optional[float] = None            # cosine floor; None: lr / 10
    warmup_iters: int = 100
    lr_decay_iters: Optional[int] = None      # None: max_iters
    lr_schedule: str = "cosine"
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0                    # 0: off
    seed: int = 1337
    # -- evaluation, logging, output ---------------------------------------
    eval_interval: int = 250
    eval_iters: int = 50
    log_interval: int = 10
    sample_tokens: int = 200                  # printed at each evaluation; 0: none
    plot: bool = True                         # refresh loss.png at each evaluation
    out: Optional[str] = None
    init_from: Optional[str] = None
    # -- hardware ----------------------------------------------------------
    device: str = "auto"
    dtype: str = "auto"
    compile: Optional[bool] = None            # None: on for CUDA, off on CPU

    def validate(self) -> None:
        def positive(name: str, allow_zero: bool = False) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if allow_zero else 1):
                raise ConfigError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} integer, got {v!r}")

        for name in ("batch_size", "grad_accum", "eval_interval", "eval_iters", "log_interval"):
            positive(name)
        for name in ("max_iters", "warmup_iters", "sample_tokens"):
            positive(name, allow_zero=True)
        if self.total_batch_size is not None:
            positive("total_batch_size")
        for name in ("lr", "weight_decay", "grad_clip", "beta1", "beta2") + (("min_lr",) if self.min_lr is not None else ()):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {v!r}")
        if not (self.beta1 < 1 and self.beta2 < 1):
            raise ConfigError(f"beta1 and beta2 must be < 1, got {self.beta1}, {self.beta2}")
        if self.max_minutes is not None and not (isinstance(self.max_minutes, (int, float)) and self.max_minutes > 0):
            raise ConfigError(f"max_minutes must be a positive number, got {self.max_minutes!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"device must be one of {', '.join(DEVICES)} (or cuda:N), got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown model preset {self.preset!r}; known presets: {', '.join(PRESETS)}")
        self.prepare_options().validate()
        self.model_config(vocab_size=2)  # overrides are checked now, not after preparing the data

    # -- derived ----------------------------------------------------------------
    def prepare_options(self) -> PrepareOptions:
        return PrepareOptions(
            tokenizer=self.tokenizer, format=self.format, val_fraction=self.val_fraction,
            shuffle_sentences=self.shuffle_sentences, lowercase=self.lowercase, min_count_chars=self.min_count_chars,
            min_count_tokens=self.min_count_tokens, pattern=self.pattern,
            specials=list(self.specials), encoding_errors=self.encoding_errors,
        )

    def model_config(self, vocab_size: int) -> GPTConfig:
        """The preset with the overrides; vocab_size always comes from the data."""
        overrides = {k: getattr(self, k) for k in MODEL_OVERRIDES if getattr(self, k) is not None}
        return preset(self.preset, **overrides, vocab_size=vocab_size)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Dict[str, Any], source: str = "<config>") -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}")
        values = dict(values)
        if isinstance(values.get("data"), str):  # `data = "book.txt"` in a TOML file
            values["data"] = [values["data"]]
        return cls(**values)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def load_config_file(path: str) -> Dict[str, Any]:
    """The settings of a TOML (.toml) or JSON file as a dict (keys may be
    spelled with dashes as on the command line)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file ({err.strerror or err})") from None
    try:
        if p.suffix.lower() == ".toml":
            try:
                import tomllib  # Python 3.11+
            except ImportError:  # pragma: no cover - 3.9/3.10
                raise ConfigError(f"{path}: TOML config files need Python 3.11+ (tomllib); use JSON") from None
            values = tomllib.loads(raw.decode("utf-8"))
        else:
            values = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"{path}: not a valid {'TOML' if p.suffix.lower() == '.toml' else 'JSON'} "
                          f"config file ({err})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a table of settings at the top level")
    # Nested tables ([model], [optim], ...) are accepted and flattened: the
    # names are unique across sections.
    flat: Dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update({k.replace("-", "_"): v for k, v in value.items()})
        else:
            flat[key.replace("-", "_")] = value
    return flat


def config_for_resume(saved: Dict[str, Any], given: Dict[str, Any], source: str) -> TrainConfig:
    """The saved run's config with the options given now applied; options
    that change what is trained (model, data, tokenizer) must not differ."""
    if not isinstance(saved, dict):
        raise ConfigError(f"{source}: the checkpoint holds no training config; use --init-from instead")
    try:
        cfg = TrainConfig.from_dict(saved, source)
    except TypeError as err:
        raise ConfigError(f"{source}: corrupt training config in the checkpoint ({err})") from None
    clash = {k: v for k, v in given.items() if k in STRUCTURAL and v != getattr(cfg, k)}
    if clash:
        raise ConfigError(f"{source}: cannot resume with a different "
                          + ", ".join(f"{k} ({getattr(cfg, k)!r} in the run, {v!r} now)" for k, v in clash.items())
                          + "; drop these options, or start a new run with --init-from")
    return cfg.replace(**given)
