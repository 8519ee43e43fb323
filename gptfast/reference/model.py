"""The seeds' GPT, written plainly: the ground truth the fast model is held to.

This is karpathy's lecture ``gpt.py`` (and its descendants: lad-gpt,
LitteraGPT, quijote-gpt) with the hyper-parameters taken from a `GPTConfig`
instead of globals.  Every head is its own module with its own key / query /
value Linears and its own masked softmax, exactly as in the lecture, and the
module and parameter names are the seed's, so a seed checkpoint
(``torch.save(model.state_dict())``) loads here unchanged.

Differences from the seed, all opt-in through GPTConfig or harmless:
  * bias / qkv_bias / tie_weights / pos_embedding="sinusoidal" options;
  * logits keep their (B, T, vocab) shape when targets are given (the seed
    flattens them to (B*T, vocab)); cross-entropy ignores target -1 (padding);
  * a sequence longer than block_size is a clear ValueError, not an index error.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
from torch.nn import functional as F

from gptfast.config import GPTConfig, sinusoidal_positions


class Head(nn.Module):
    """One head of causal self-attention."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        C, hs = config.n_embd, config.head_size
        self.key = nn.Linear(C, hs, bias=config.qkv_bias)
        self.query = nn.Linear(C, hs, bias=config.qkv_bias)
        self.value = nn.Linear(C, hs, bias=config.qkv_bias)
        # A constant: not saved (persistent=False).  The seed saved it; see
        # _load_from_state_dict, which accepts and drops it.
        self.register_buffer("tril", torch.tril(torch.ones(config.block_size, config.block_size)), persistent=False)
        self.dropout = nn.Dropout(config.attn_dropout_p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        k = self.key(x)                                                # (B, T, hs)
        q = self.query(x)                                              # (B, T, hs)
        wei = q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5            # (B, T, T)
        wei = wei.masked_fill(self.tril[:T, :T] == 0, float("-inf"))   # no looking ahead
        wei = F.softmax(wei, dim=-1)
        wei = self.dropout(wei)
        v = self.value(x)                                              # (B, T, hs)
        return wei @ v                                                 # (B, T, hs)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Seed checkpoints carry the mask as a persistent buffer: ignore it.
        state_dict.pop(prefix + "tril", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class MultiHeadAttention(nn.Module):
    """Heads side by side; their outputs concatenated and projected back."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.heads = nn.ModuleList([Head(config) for _ in range(config.n_head)])
        # inner_dim = n_head * head_size; != n_embd when n_head does not divide it.
        self.proj = nn.Linear(config.inner_dim, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.resid_dropout_p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([h(x) for h in self.heads], dim=-1)            # (B, T, n_head*hs)
        return self.dropout(self.proj(out))                            # (B, T, C)


class FeedFoward(nn.Module):  # sic: the seed's spelling, kept for its state-dict names
    """Per-position MLP: Linear 4x, ReLU, Linear back, dropout."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        C = config.n_embd
        self.net = nn.Sequential(
            nn.Linear(C, 4 * C, bias=config.bias),
            nn.ReLU(),
            nn.Linear(4 * C, C, bias=config.bias),
            nn.Dropout(config.resid_dropout_p),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: communication, then computation."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.sa = MultiHeadAttention(config)
        self.ffwd = FeedFoward(config)
        self.ln1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.ln2 = nn.LayerNorm(config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.sa(self.ln1(x))
        x = x + self.ffwd(self.ln2(x))
        return x


class GPTLanguageModel(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.token_embedding_table = nn.Embedding(config.vocab_size, config.n_embd)
        if config.pos_embedding == "learned":
            self.position_embedding_table = nn.Embedding(config.block_size, config.n_embd)
        else:  # fixed table, recomputed on construction, never saved
            self.register_buffer(
                "position_table", sinusoidal_positions(config.block_size, config.n_embd), persistent=False
            )
        self.embd_dropout = nn.Dropout(config.embd_dropout)
        self.blocks = nn.Sequential(*[Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=config.bias)
        self.apply(self._init_weights)
        if config.tie_weights:
            self.lm_head.weight = self.token_embedding_table.weight

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # The seed's init: N(0, 0.02) for every Linear and Embedding, zero biases.
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def position_embeddings(self, T: int) -> torch.Tensor:
        """(T, C) embeddings of positions 0..T-1."""
        if self.config.pos_embedding == "learned":
            return self.position_embedding_table(torch.arange(T, device=self.token_embedding_table.weight.device))
        return self.position_table[:T]

    def forward(
        self, idx: torch.Tensor, targets: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(
                f"sequence of length {T} is longer than the model's block_size {self.config.block_size}; "
                "crop the context to the last block_size tokens"
            )
        tok_emb = self.token_embedding_table(idx)                      # (B, T, C)
        x = self.embd_dropout(tok_emb + self.position_embeddings(T))   # (B, T, C)
        x = self.blocks(x)                                             # (B, T, C)
        x = self.ln_f(x)
        logits = self.lm_head(x)                                       # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T), ignore_index=-1)
        return logits, loss

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """The seed's sampling loop: no cache, the whole (cropped) context every step."""
        for _ in range(max_new_tokens):
            idx_cond = idx[:, -self.config.block_size:]                # (B, <=block_size)
            logits, _ = self(idx_cond)
            probs = F.softmax(logits[:, -1, :], dim=-1)                # (B, vocab)
            idx_next = torch.multinomial(probs, num_samples=1)         # (B, 1)
            idx = torch.cat((idx, idx_next), dim=1)                    # (B, T+1)
        return idx
