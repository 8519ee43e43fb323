"""GPTConfig: the one dataclass that describes a model, plus named presets.

One preset per seed recipe (the "GPT from scratch" projects gptfast grows out
of), so ``preset("quijote", vocab_size=len(vocab))`` rebuilds the seed's model.

Decision: n_embd need NOT be divisible by n_head.  The seeds compute
``head_size = n_embd // n_head`` and concatenate the heads into an attention
inner dimension of ``n_head * head_size`` (the ``chat`` seed: 6 heads of 42 =
252), which the output projection maps back to n_embd.  Both gptfast models do
exactly the same, so seed weights load 1:1.  The configuration is only rejected
when the head size would be 0 (n_embd < n_head), or out of the Triton kernel's
range when the Triton backend is asked for explicitly.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional

from gptfast.errors import InputError

ATTENTION_BACKENDS = ("auto", "sdpa", "triton", "reference")
POS_EMBEDDINGS = ("learned", "sinusoidal")
# Head sizes the Triton flash-attention kernel accepts (kernels/flash_attention.py).
TRITON_HEAD_DIM_RANGE = (16, 128)


class ConfigError(InputError, ValueError):
    """A model configuration that cannot be built; the message is one line.

    It is an `InputError`, so an entry point that received the bad value on
    its command line prints the line and exits 2 instead of a traceback."""


@dataclass
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 64          # the longest context (positions 0..block_size-1)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    # Dropout: `dropout` is the seed's single value, used on the attention
    # weights and after each residual branch.  attn_dropout / resid_dropout
    # override it when not None.  The seeds have no embedding dropout: 0 here.
    dropout: float = 0.0
    attn_dropout: Optional[float] = None
    resid_dropout: Optional[float] = None
    embd_dropout: float = 0.0
    # bias=True is the seed layout: biases in the output projection, the FFN,
    # the LayerNorms and lm_head.  bias=False removes them all (nanoGPT-style).
    bias: bool = True
    # The seeds' key/query/value Linears never have a bias; keep False to load them.
    qkv_bias: bool = False
    pos_embedding: str = "learned"   # "learned" (nn.Embedding) | "sinusoidal" (fixed buffer)
    tie_weights: bool = False        # lm_head.weight is the token embedding matrix
    attention: str = "auto"          # "auto" | "sdpa" | "triton" | "reference"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        for name in ("dropout", "attn_dropout", "resid_dropout", "embd_dropout"):
            value = getattr(self, name)
            if value is None and name in ("attn_dropout", "resid_dropout"):
                continue  # None: use `dropout`
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ConfigError(f"GPTConfig.{name} must be a number in [0, 1), got {value!r}")
        if self.pos_embedding not in POS_EMBEDDINGS:
            raise ConfigError(
                f"GPTConfig.pos_embedding must be one of {', '.join(POS_EMBEDDINGS)}, got {self.pos_embedding!r}"
            )
        if self.attention not in ATTENTION_BACKENDS:
            raise ConfigError(
                f"GPTConfig.attention must be one of {', '.join(ATTENTION_BACKENDS)}, got {self.attention!r}"
            )
        if self.head_size == 0:
            raise ConfigError(
                f"GPTConfig: n_embd={self.n_embd} is smaller than n_head={self.n_head}, "
                "so each head would have size 0; use fewer heads or a wider model"
            )
        if self.pos_embedding == "sinusoidal" and self.n_embd % 2:
            raise ConfigError(f"GPTConfig: sinusoidal positions need an even n_embd, got {self.n_embd}")
        if self.attention == "triton":
            check_triton_head_size(self)

    # -- derived sizes ------------------------------------------------------
    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def inner_dim(self) -> int:
        """Width of the concatenated heads (== n_embd when n_head divides it)."""
        return self.n_head * self.head_size

    @property
    def attn_dropout_p(self) -> float:
        return self.dropout if self.attn_dropout is None else self.attn_dropout

    @property
    def resid_dropout_p(self) -> float:
        return self.dropout if self.resid_dropout is None else self.resid_dropout

    def num_params(self) -> int:
        """Trainable parameter count of the model this config builds (both the
        reference and the fast model have exactly this many)."""
        C, V, H, L = self.n_embd, self.vocab_size, self.inner_dim, self.n_layer
        b = 1 if self.bias else 0
        ln = C * (1 + b)
        attn = 3 * C * H + (3 * H if self.qkv_bias else 0) + H * C + b * C
        ffn = C * 4 * C + b * 4 * C + 4 * C * C + b * C
        tok = V * C
        pos = self.block_size * C if self.pos_embedding == "learned" else 0
        head = (0 if self.tie_weights else V * C) + b * V
        return tok + pos + L * (2 * ln + attn + ffn) + ln + head

    # -- (de)serialisation for checkpoints: plain dicts, never pickles ------
    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "GPTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"GPTConfig: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)

    def replace(self, **changes: Any) -> "GPTConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def check_triton_head_size(config: GPTConfig) -> None:
    lo, hi = TRITON_HEAD_DIM_RANGE
    if not lo <= config.head_size <= hi:
        raise ConfigError(
            f"GPTConfig: the triton attention backend supports head sizes {lo}..{hi}, "
            f"but n_embd={config.n_embd} // n_head={config.n_head} = {config.head_size}; "
            "use attention='sdpa' or change n_embd / n_head"
        )


# One entry per seed recipe.  vocab_size is the seed's own vocabulary; pass the
# real one (``preset(name, vocab_size=tokenizer.vocab_size)``) when training.
PRESETS: Dict[str, Dict[str, Any]] = {
    # karpathy's lecture gpt.py on Don Quijote (char level): ~10.8M parameters.
    "quijote": dict(vocab_size=92, n_embd=384, n_head=6, n_layer=6, block_size=256, dropout=0.2),
    # LitteraGPT: Spanish literature, char level, 115-char vocab: ~19.3M parameters.
    "littera": dict(vocab_size=115, n_embd=512, n_head=8, n_layer=6, block_size=528, dropout=0.3),
    # lad-gpt WhatsApp chat bot, word level: head size 256 // 6 = 42, inner dim 252.
    "chat": dict(vocab_size=256, n_embd=256, n_head=6, n_layer=6, block_size=32, dropout=0.2),
    # "Proyecto basico de LLM" refranes: tiny, fixed sinusoidal positions.
    "refranes": dict(vocab_size=73, n_embd=128, n_head=4, n_layer=2, block_size=16, dropout=0.2,
                     pos_embedding="sinusoidal"),
    # Not a seed: small enough to train on a laptop CPU in minutes (quickstart, tests).
    "tiny": dict(vocab_size=65, n_embd=128, n_head=4, n_layer=4, block_size=64, dropout=0.0),
}


def preset(name: str, **overrides: Any) -> GPTConfig:
    """The named preset as a GPTConfig, with `overrides` applied (e.g. vocab_size)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}")
    return GPTConfig.from_dict({**PRESETS[name], **overrides})


def sinusoidal_positions(block_size: int, n_embd: int):
    """The fixed (block_size, n_embd) position table of "Attention is all you
    need": even columns sin(pos / 10000^(2i/n_embd)), odd columns cos(...)."""
    import torch

    pos = torch.arange(block_size, dtype=torch.float64).unsqueeze(1)                      # (T, 1)
    inv_freq = torch.exp(torch.arange(0, n_embd, 2, dtype=torch.float64) * (-math.log(10000.0) / n_embd))
    table = torch.zeros(block_size, n_embd, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * inv_freq)
    table[:, 1::2] = torch.cos(pos * inv_freq)
    return table.to(torch.get_default_dtype())
