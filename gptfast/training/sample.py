"""A small, plain sampler for training-time samples and the quickstart.

Uses the model's own KV cache (`prefill` / `decode_one_token`), so each new
token costs one position.  When the context fills block_size, the cache is
refilled from the last half block (cheaper than recomputing every step, and
the text stays coherent).  The fast C++ engine lives in gptfast.engine; this
one only needs torch.
"""
from __future__ import annotations

from typing import List, Optional

import torch

from gptfast.model import GPT


@torch.no_grad()
def sample_ids(model: GPT, prompt: List[int], max_new_tokens: int, temperature: float = 0.8,
               top_k: Optional[int] = 40, generator: Optional[torch.Generator] = None) -> List[int]:
    was_training = model.training
    model.eval()
    device = model.tok_emb.weight.device
    T = model.config.block_size
    out = list(prompt) or [0]
    try:
        model.setup_caches(1, T)
        ctx = out[-T:]
        logits = model.prefill(torch.tensor([ctx], device=device))[:, -1]
        pos = len(ctx)
        for _ in range(max_new_tokens):
            logits = logits.float() / max(temperature, 1e-6)
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, dim=-1)
            nxt = int(torch.multinomial(probs.cpu(), 1, generator=generator).item())
            out.append(nxt)
            if pos >= T:  # cache full: start again from the last half block
                ctx = out[-(T // 2):]
                logits = model.prefill(torch.tensor([ctx], device=device))[:, -1]
                pos = len(ctx)
            else:
                logits = model.decode_one_token(torch.tensor([[nxt]], device=device),
                                                torch.tensor([pos], device=device))[:, -1]
                pos += 1
    finally:
        model.clear_caches()
        model.train(was_training)
    return out


def start_ids(tokenizer) -> List[int]:
    """A neutral prompt: a newline when the vocabulary has one."""
    for tok in ("\n", "<END>"):
        if tok in tokenizer.stoi:
            return [tokenizer.stoi[tok]]
    return [0]


def sample_text(model: GPT, tokenizer, max_new_tokens: int, seed: int = 0, prompt: str = "",
                temperature: float = 0.8, top_k: Optional[int] = 40) -> str:
    g = torch.Generator().manual_seed(seed)
    ids = [int(i) for i in tokenizer.encode(prompt)] if prompt else start_ids(tokenizer)
    out = sample_ids(model, ids, max_new_tokens, temperature, top_k, g)
    # With a prompt, show it and its continuation; else drop the start token.
    return tokenizer.decode(out if prompt else out[len(ids):])
