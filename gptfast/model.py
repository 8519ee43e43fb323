"""The fast GPT: the seed's architecture in a fused layout, with a KV cache.

Same math as `gptfast.reference.model.GPTLanguageModel` (pre-LN blocks, ReLU
4x FFN, learned or sinusoidal positions), so the two run with identical
weights through `gptfast.weights_mapping`.  What makes it fast:

  * one fused Linear computes q, k and v of every head (the seed runs
    3 * n_head small Linears per layer);
  * attention runs in a fused kernel: PyTorch's scaled_dot_product_attention
    ("sdpa", the default on CPU) or the Triton flash-attention kernel
    ("triton", the default on CUDA); GPTFAST_REFERENCE=1 makes "auto" pick the
    plain masked-softmax math ("reference") instead;
  * generation keeps a preallocated KV cache (gpt-fast style), so each new
    token costs one position of work instead of the whole context.

State-dict layout (what the C++ sampler and checkpoints read):
    tok_emb.weight (V, C)      pos_emb.weight (block_size, C)  [learned only]
    blocks.{i}.ln1.{weight,bias} (C)
    blocks.{i}.attn.qkv.weight (3*H*hs, C)  rows: q of heads 0..H-1, then k, then v
    blocks.{i}.attn.proj.{weight (C, H*hs), bias (C)}
    blocks.{i}.ln2.{weight,bias} (C)
    blocks.{i}.mlp.fc.{weight (4C, C), bias (4C)}   blocks.{i}.mlp.proj.{weight (C, 4C), bias (C)}
    ln_f.{weight,bias} (C)     lm_head.{weight (V, C), bias (V)}
Biases exist when config.bias (qkv: config.qkv_bias); with tie_weights
lm_head.weight is tok_emb.weight.  Sinusoidal positions (pos_table) and KV
caches are buffers that are never saved: the table is
gptfast.config.sinusoidal_positions(block_size, C).
"""
from __future__ import annotations

import math
import warnings
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from torch.nn import functional as F

from gptfast import cpu_attention, cpu_cross_entropy
from gptfast._backend import reference_forced
from gptfast.config import (
    ATTENTION_BACKENDS,
    TRITON_HEAD_DIM_RANGE,
    ConfigError,
    GPTConfig,
    check_triton_head_size,
    sinusoidal_positions,
)
from gptfast.hashed_dropout import Dropout   # nn.Dropout with the hashed C++ mask on the CPU

# --------------------------------------------------------------------------
# Attention backends.  All take q, k, v of shape (B, H, T, D) and return
# (B, H, Tq, D); causal unless an explicit boolean `mask` (Tq, Tk) is given
# (True = may attend), which the KV-cache path uses.
# --------------------------------------------------------------------------

_flash_attention = None
_flash_import_error: Optional[BaseException] = None
_warned_auto_fallback = False


def load_flash_attention():
    """The Triton kernel, imported on first use (importing Triton is slow and
    it may be absent); raises ConfigError with the reason when unavailable."""
    global _flash_attention, _flash_import_error
    if _flash_attention is None and _flash_import_error is None:
        try:
            from gptfast.kernels.flash_attention import flash_attention

            _flash_attention = flash_attention
        except Exception as exc:  # noqa: BLE001 - ImportError, or Triton failing to initialise
            _flash_import_error = exc
    if _flash_attention is None:
        raise ConfigError(
            f"attention backend 'triton' is unavailable ({type(_flash_import_error).__name__}: "
            f"{_flash_import_error}); use attention='sdpa' or install gptfast with its Triton kernels"
        )
    return _flash_attention


def triton_available() -> bool:
    try:
        load_flash_attention()
        return True
    except ConfigError:
        return False


def reference_attention(q, k, v, dropout_p: float = 0.0, mask: Optional[torch.Tensor] = None):
    """Masked-softmax attention written out (the seed's math, all heads at once)."""
    Tq, Tk = q.shape[-2], k.shape[-2]
    att = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5                # (B, H, Tq, Tk)
    if mask is None:
        mask = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril()
    att = att.masked_fill(~mask, float("-inf"))
    att = F.softmax(att, dim=-1)
    if dropout_p > 0.0:
        att = F.dropout(att, p=dropout_p)
    return att @ v                                                       # (B, H, Tq, D)


def sdpa_attention(q, k, v, dropout_p: float = 0.0, mask: Optional[torch.Tensor] = None):
    if cpu_attention.applies(q, dropout_p, mask):   # PyTorch's CPU flash kernel has no dropout
        return cpu_attention.attention(q, k, v, dropout_p)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=mask is None)


_fused_ops = None


def _fused():
    """The fused LayerNorm and cross-entropy kernels, imported with the backend."""
    global _fused_ops
    if _fused_ops is None:
        from types import SimpleNamespace

        from gptfast.kernels.cross_entropy import cross_entropy
        from gptfast.kernels.layer_norm import layer_norm

        _fused_ops = SimpleNamespace(layer_norm=layer_norm, cross_entropy=cross_entropy)
    return _fused_ops


_decode_attention = None
DECODE_MAX_QUERIES = 128   # kernels/decode_attention.py's limit on new positions per call


def triton_attention(q, k, v, dropout_p: float = 0.0, mask: Optional[torch.Tensor] = None):
    if mask is None:
        return load_flash_attention()(q, k, v, dropout_p=dropout_p)
    # A cached call (GPT.forward with input_pos): the queries are the last
    # Tq of the cache's valid positions (positions are consecutive), which is
    # what the decode kernel computes.  The valid length is read off the mask's
    # last row on the device: no host sync, so CUDA graphs can capture it.
    if q.shape[2] > DECODE_MAX_QUERIES:   # a long prefill: SDPA with the mask
        return sdpa_attention(q, k, v, dropout_p, mask)
    global _decode_attention
    if _decode_attention is None:
        load_flash_attention()   # the same Triton import, with its clear error
        from gptfast.kernels.decode_attention import decode_attention as _decode_attention
    lens = mask[-1].sum(dtype=torch.int32).repeat(q.shape[0])          # (B,) valid cache slots
    return _decode_attention(q, k, v, lens)


_ATTENTION = {"reference": reference_attention, "sdpa": sdpa_attention, "triton": triton_attention}


def resolve_backend(backend: str, config: GPTConfig, x: torch.Tensor) -> str:
    """Turn "auto" into a concrete backend for this input: triton on CUDA when the
    kernel imports and fits the head size (warns once and uses sdpa otherwise),
    sdpa everywhere else; "reference" when GPTFAST_REFERENCE=1 forces it."""
    global _warned_auto_fallback
    if backend != "auto":
        return backend
    if reference_forced():
        return "reference"
    if x.device.type != "cuda" or x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        return "sdpa"
    lo, hi = TRITON_HEAD_DIM_RANGE
    if not lo <= config.head_size <= hi:
        return "sdpa"
    if triton_available():
        return "triton"
    if not _warned_auto_fallback:
        _warned_auto_fallback = True
        warnings.warn(f"gptfast: Triton attention unavailable ({_flash_import_error}); using SDPA", RuntimeWarning)
    return "sdpa"


def _check_backend(backend: str, config: GPTConfig) -> str:
    if backend not in ATTENTION_BACKENDS:
        raise ConfigError(f"unknown attention backend {backend!r}; known: {', '.join(ATTENTION_BACKENDS)}")
    if backend == "triton":
        check_triton_head_size(config)
        load_flash_attention()
    return backend


# --------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------


class KVCache(nn.Module):
    """Preallocated keys and values of one attention layer (gpt-fast style)."""

    def __init__(self, max_batch_size: int, max_seq_len: int, n_head: int, head_size: int,
                 dtype: Optional[torch.dtype] = None, device=None):
        super().__init__()
        shape = (max_batch_size, n_head, max_seq_len, head_size)
        # persistent=False: caches are scratch space, never part of a checkpoint.
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, H, S, D) at positions input_pos (S,); return the caches
        of these B rows, (B, H, max_seq_len, D)."""
        B = k.shape[0]
        self.k_cache[:B, :, input_pos] = k.to(self.k_cache.dtype)
        self.v_cache[:B, :, input_pos] = v.to(self.v_cache.dtype)
        return self.k_cache[:B], self.v_cache[:B]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.head_size, self.inner = config.n_head, config.head_size, config.inner_dim
        self.qkv = nn.Linear(config.n_embd, 3 * self.inner, bias=config.qkv_bias)   # q, k, v fused
        self.proj = nn.Linear(self.inner, config.n_embd, bias=config.bias)
        self.attn_dropout_p = config.attn_dropout_p
        self.resid_dropout = Dropout(config.resid_dropout_p)
        self.kv_cache: Optional[KVCache] = None

    def forward(self, x: torch.Tensor, backend: str, input_pos: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, T, C).  With input_pos (T,), k and v go to the KV cache and the
        queries attend to its first kv_len slots under `mask` (T, kv_len)."""
        B, T, _ = x.shape
        H, D = self.n_head, self.head_size
        q, k, v = self.qkv(x).split(self.inner, dim=2)                  # 3 x (B, T, H*D)
        q = q.view(B, T, H, D).transpose(1, 2)                           # (B, H, T, D)
        k = k.view(B, T, H, D).transpose(1, 2)
        v = v.view(B, T, H, D).transpose(1, 2)
        if input_pos is not None:  # incremental decoding: attend over the cache
            k, v = self.kv_cache.update(input_pos, k, v)                # (B, H, max_T, D)
            kv_len = mask.shape[-1]                                     # later slots are unused
            # A cache narrower than the activations (16-bit keys and values
            # under float32 weights, as the C++ engine's kv_dtype) is widened.
            k, v = k[:, :, :kv_len].to(q.dtype), v[:, :, :kv_len].to(q.dtype)  # (B, H, kv_len, D)
        dropout_p = self.attn_dropout_p if self.training else 0.0
        y = _ATTENTION[backend](q, k, v, dropout_p, mask)               # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, self.inner)                 # heads side by side
        return self.resid_dropout(self.proj(y))                         # (B, T, C)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = Dropout(config.resid_dropout_p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Not in place: relu_ on the fc output (a view of addmm's 2-D result)
        # makes autograd rebuild it through CopySlices, four extra 25 MB copies
        # per layer in the backward, ~8% slower steps on the quijote preset.
        return self.dropout(self.proj(F.relu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, backend: str, input_pos: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), backend, input_pos, mask)
        x = x + self.mlp(self.ln2(x))
        return x


class GPT(nn.Module):
    """`GPT(config, backend=None)`; backend defaults to config.attention ("auto")."""

    def __init__(self, config: GPTConfig, backend: Optional[str] = None):
        super().__init__()
        self.config = config
        # Fails here, not at the first forward, when the backend cannot run.
        self.backend = _check_backend(backend or config.attention, config)
        C = config.n_embd
        self.tok_emb = nn.Embedding(config.vocab_size, C)
        if config.pos_embedding == "learned":
            self.pos_emb = nn.Embedding(config.block_size, C)
        else:
            self.register_buffer("pos_table", sinusoidal_positions(config.block_size, C), persistent=False)
        self.drop = Dropout(config.embd_dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(C, bias=config.bias)
        self.lm_head = nn.Linear(C, config.vocab_size, bias=config.bias)
        self.apply(self._init_weights)
        # nanoGPT / GPT-2: residual projections scaled down by depth so the
        # residual stream's variance does not grow with n_layer.
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        if config.tie_weights:
            self.lm_head.weight = self.tok_emb.weight
        self.max_batch_size = 0
        self.max_seq_len = 0
        # The triton backend also fuses LayerNorm with the residual adds and
        # computes the loss with the fused cross-entropy kernel (False: torch's).
        self.fuse_ops = True
        # Cached calls: attend over the whole cache under a mask (True), or
        # over the slots in use only (False); None = True off the CPU.
        self.read_whole_cache: Optional[bool] = None

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- KV cache ------------------------------------------------------------
    def setup_caches(self, max_batch_size: int, max_seq_len: Optional[int] = None,
                     dtype: Optional[torch.dtype] = None, device=None) -> None:
        """Allocate a KV cache in every layer for up to max_batch_size rows of
        max_seq_len (<= block_size) positions; dtype/device default to the weights'."""
        max_seq_len = max_seq_len or self.config.block_size
        if max_seq_len > self.config.block_size:
            raise ValueError(f"max_seq_len {max_seq_len} exceeds the model's block_size {self.config.block_size}")
        weight = self.tok_emb.weight
        for block in self.blocks:
            block.attn.kv_cache = KVCache(max_batch_size, max_seq_len, self.config.n_head, self.config.head_size,
                                          dtype=dtype or weight.dtype, device=device or weight.device)
        self.max_batch_size, self.max_seq_len = max_batch_size, max_seq_len

    def clear_caches(self) -> None:
        for block in self.blocks:
            block.attn.kv_cache = None
        self.max_batch_size = self.max_seq_len = 0

    # -- forward ---------------------------------------------------------------
    def forward(
        self,
        idx: torch.Tensor,
        targets: Optional[torch.Tensor] = None,
        *,
        backend: Optional[str] = None,
        input_pos: Optional[torch.Tensor] = None,
        return_logits: bool = True,
    ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """idx (B, T) token ids -> (logits (B, T, vocab), loss or None).

        input_pos (T,) LongTensor: the positions of idx's tokens, for decoding
        with the caches of `setup_caches` (keys/values are appended there and
        each token attends to the cached positions <= its own).
        backend: override the attention backend for this call.
        return_logits=False (with targets): the caller wants only the loss, as
        training does; on the CPU the lm-head and the loss then run fused
        without the (B, T, vocab) logits (gptfast.cpu_cross_entropy), and the
        logits come back as None."""
        B, T = idx.shape
        backend = resolve_backend(_check_backend(backend, self.config) if backend else self.backend, self.config, idx)
        if input_pos is None:
            if T > self.config.block_size:
                raise ValueError(
                    f"sequence of length {T} is longer than the model's block_size {self.config.block_size}; "
                    "crop the context to the last block_size tokens"
                )
            pos, mask = torch.arange(T, device=idx.device), None        # causal, inside the kernel
        else:
            kv_len = self._check_cached_call(B, T, input_pos)
            pos = input_pos
            # Query at position p sees cache slots 0..p (slots past the newest
            # position hold stale values, cut off by kv_len and the mask).
            mask = torch.arange(kv_len, device=idx.device)[None, :] <= input_pos[:, None]   # (T, kv_len)
        if self.config.pos_embedding == "learned":
            pos_emb = self.pos_emb(pos)                                  # (T, C)
        else:
            pos_emb = self.pos_table[pos]
        x = self.drop(self.tok_emb(idx) + pos_emb)                       # (B, T, C)
        fused = backend == "triton" and self.fuse_ops
        if fused:
            x = self._blocks_fused(x, backend, input_pos, mask)          # ln_f(x) included
        else:
            for block in self.blocks:
                x = block(x, backend, input_pos, mask)
            x = self.ln_f(x)
        if targets is not None and not return_logits and not fused and cpu_cross_entropy.linear_applies(x):
            loss = cpu_cross_entropy.linear_cross_entropy(x.reshape(B * T, -1), self.lm_head.weight,
                                                          self.lm_head.bias, targets.reshape(B * T), ignore_index=-1)
            return None, loss
        logits = self.lm_head(x)                                         # (B, T, vocab)
        loss = None
        if targets is not None:
            flat_logits, flat_targets = logits.view(B * T, -1), targets.reshape(B * T)
            if fused:
                loss = _fused().cross_entropy(flat_logits, flat_targets, ignore_index=-1)
            elif cpu_cross_entropy.applies(flat_logits):   # C++: 7 passes over the logits -> 3
                loss = cpu_cross_entropy.cross_entropy(flat_logits, flat_targets, ignore_index=-1)
            else:
                loss = F.cross_entropy(flat_logits, flat_targets, ignore_index=-1)
        return logits, loss

    def _blocks_fused(self, x: torch.Tensor, backend: str, input_pos, mask) -> torch.Tensor:
        """The blocks and ln_f with each residual add fused into the LayerNorm
        that follows it (kernels/layer_norm.py): the same math as Block.forward,
        one pass over the residual stream per add instead of two.
        x (B, T, C) -> ln_f(residual stream) (B, T, C)."""
        ln = _fused().layer_norm
        norms = [b.ln1 for b in self.blocks] + [self.ln_f]
        h = x                                                            # the residual stream
        y = ln(h, norms[0].weight, norms[0].bias, norms[0].eps)
        for i, block in enumerate(self.blocks):
            a = block.attn(y, backend, input_pos, mask)
            y, h = ln(a, block.ln2.weight, block.ln2.bias, block.ln2.eps, residual=h)    # h += a; y = ln2(h)
            m = block.mlp(y)
            nxt = norms[i + 1]
            y, h = ln(m, nxt.weight, nxt.bias, nxt.eps, residual=h)                      # h += m; y = next LN(h)
        return y

    def _check_cached_call(self, B: int, T: int, input_pos: torch.Tensor) -> int:
        """Validate a cached call; return kv_len, the cache slots attention reads.

        input_pos must hold consecutive positions (a prefill from any start, or
        one new token).  On the CPU the positions are checked and attention
        reads only the slots in use.  On an accelerator that would cost a host
        sync per call (and break CUDA-graph capture), so there attention reads
        the whole cache and the mask hides the unused slots: same result
        (`read_whole_cache` overrides the choice)."""
        if self.blocks[0].attn.kv_cache is None:
            raise RuntimeError("forward(input_pos=...) needs the KV caches: call model.setup_caches(...) first")
        if input_pos.dim() != 1 or input_pos.shape[0] != T:
            raise ValueError(f"input_pos must have shape ({T},) to match idx, got {tuple(input_pos.shape)}")
        if B > self.max_batch_size:
            raise ValueError(f"batch of {B} exceeds the caches' max_batch_size {self.max_batch_size}")
        whole = self.read_whole_cache if self.read_whole_cache is not None else input_pos.device.type != "cpu"
        if whole:
            return self.max_seq_len
        first, last = int(input_pos[0]), int(input_pos[-1])
        if last >= self.max_seq_len:
            raise ValueError(
                f"position {last} is past the caches' max_seq_len {self.max_seq_len} "
                f"(block_size {self.config.block_size})"
            )
        if T > 1 and not torch.equal(input_pos, torch.arange(first, first + T)):
            raise ValueError(f"input_pos must be consecutive positions, got {input_pos.tolist()}")
        return last + 1

    @torch.no_grad()
    def prefill(self, idx: torch.Tensor, input_pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Run the prompt idx (B, T) through the model filling the caches; logits (B, T, vocab)."""
        if input_pos is None:
            input_pos = torch.arange(idx.shape[1], device=idx.device)
        return self(idx, input_pos=input_pos)[0]

    @torch.no_grad()
    def decode_one_token(self, token: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        """token (B, 1) at position input_pos (1,) -> its logits (B, 1, vocab), caching its k, v."""
        return self(token, input_pos=input_pos)[0]


# --------------------------------------------------------------------------
# Parameter count table (the seed's parameters.txt, with counts)
# --------------------------------------------------------------------------


def parameter_table(model: nn.Module) -> List[Tuple[str, Tuple[int, ...], int]]:
    """(name, shape, count) for every parameter; tied parameters appear once."""
    return [(name, tuple(p.shape), p.numel()) for name, p in model.named_parameters()]


def format_parameter_table(rows: List[Tuple[str, Tuple[int, ...], int]]) -> str:
    name_w = max([len("parameter")] + [len(r[0]) for r in rows])
    shape_w = max([len("shape")] + [len(str(r[1])) for r in rows])
    total = sum(r[2] for r in rows)
    lines = [f"{'parameter':<{name_w}}  {'shape':<{shape_w}}  {'count':>12}"]
    lines += [f"{name:<{name_w}}  {str(shape):<{shape_w}}  {count:>12,}" for name, shape, count in rows]
    lines.append(f"{'total':<{name_w}}  {'':<{shape_w}}  {total:>12,}  ({total / 1e6:.2f}M)")
    return "\n".join(lines)
