"""Map state dicts between the reference (seed) model and the fast model.

    reference (seed names)                          fast
    token_embedding_table.weight                    tok_emb.weight
    position_embedding_table.weight                 pos_emb.weight
    blocks.{i}.sa.heads.{h}.{query,key,value}.*     blocks.{i}.attn.qkv.*   (fused, see below)
    blocks.{i}.sa.proj.*                            blocks.{i}.attn.proj.*
    blocks.{i}.ffwd.net.0.*                         blocks.{i}.mlp.fc.*
    blocks.{i}.ffwd.net.2.*                         blocks.{i}.mlp.proj.*
    blocks.{i}.ln1.* / ln2.*, ln_f.*, lm_head.*     same names

The fused qkv weight (3*H*hs, C) stacks rows [q_0 .. q_{H-1}, k_0 .. k_{H-1},
v_0 .. v_{H-1}], head h's rows at h*hs:(h+1)*hs of its third, which is how the
fast model splits q, k, v and views them as (H, hs).  The reference
concatenates head outputs in head order, so proj needs no change.

The functions work on any name -> tensor dict, so they also map gradients.
"""
from __future__ import annotations

import re
from typing import Dict, List, Tuple

import torch

StateDict = Dict[str, torch.Tensor]

# (reference pattern, fast pattern) for the 1:1 renames; {i} is a layer index.
_RENAMES: List[Tuple[str, str]] = [
    ("token_embedding_table.", "tok_emb."),
    ("position_embedding_table.", "pos_emb."),
    ("blocks.{i}.sa.proj.", "blocks.{i}.attn.proj."),
    ("blocks.{i}.ffwd.net.0.", "blocks.{i}.mlp.fc."),
    ("blocks.{i}.ffwd.net.2.", "blocks.{i}.mlp.proj."),
    ("blocks.{i}.ln1.", "blocks.{i}.ln1."),
    ("blocks.{i}.ln2.", "blocks.{i}.ln2."),
    ("ln_f.", "ln_f."),
    ("lm_head.", "lm_head."),
]
_REF_HEAD = re.compile(r"blocks\.(\d+)\.sa\.heads\.(\d+)\.(query|key|value)\.(weight|bias)$")
_FAST_QKV = re.compile(r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)$")
_QKV_ORDER = ("query", "key", "value")


def _compile(prefix: str) -> "re.Pattern[str]":
    return re.compile("^" + re.escape(prefix).replace(re.escape("{i}"), r"(\d+)") + r"(.+)$")


def _rename(name: str, src_to_dst: List[Tuple["re.Pattern[str]", str]]) -> str:
    for pattern, template in src_to_dst:
        m = pattern.match(name)
        if m:
            if "{i}" in template:
                return template.format(i=m.group(1)) + m.group(2)
            return template + m.group(1)
    raise KeyError(f"weights mapping: unexpected parameter name {name!r}")


_REF_TO_FAST = [(_compile(ref), fast) for ref, fast in _RENAMES]
_FAST_TO_REF = [(_compile(fast), ref) for ref, fast in _RENAMES]


def reference_to_fast(state_dict: StateDict) -> StateDict:
    """A reference (or seed) state dict -> the fast model's, fusing q/k/v per layer."""
    out: StateDict = {}
    heads: Dict[Tuple[int, str], Dict[Tuple[str, int], torch.Tensor]] = {}
    for name, tensor in state_dict.items():
        if name.endswith(".tril"):  # the seed's saved causal mask: a constant
            continue
        m = _REF_HEAD.match(name)
        if m:
            layer, head, which, kind = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
            heads.setdefault((layer, kind), {})[(which, head)] = tensor
            continue
        out[_rename(name, _REF_TO_FAST)] = tensor
    for (layer, kind), parts in sorted(heads.items()):
        n_head = 1 + max(h for _, h in parts)
        try:
            ordered = [parts[(which, h)] for which in _QKV_ORDER for h in range(n_head)]
        except KeyError as missing:
            raise KeyError(f"weights mapping: layer {layer} is missing {kind} of {missing.args[0]}") from None
        out[f"blocks.{layer}.attn.qkv.{kind}"] = torch.cat(ordered, dim=0)   # (3*H*hs, C) or (3*H*hs,)
    return out


def fast_to_reference(state_dict: StateDict, n_head: int) -> StateDict:
    """The fast model's state dict -> the reference's, splitting qkv into n_head heads."""
    out: StateDict = {}
    for name, tensor in state_dict.items():
        m = _FAST_QKV.match(name)
        if not m:
            out[_rename(name, _FAST_TO_REF)] = tensor
            continue
        layer, kind = int(m.group(1)), m.group(2)
        if tensor.shape[0] % (3 * n_head):
            raise ValueError(f"weights mapping: {name} has {tensor.shape[0]} rows, not a multiple of 3*n_head")
        chunks = tensor.chunk(3 * n_head, dim=0)                          # each (hs, C) or (hs,)
        for j, which in enumerate(_QKV_ORDER):
            for h in range(n_head):
                out[f"blocks.{layer}.sa.heads.{h}.{which}.{kind}"] = chunks[j * n_head + h]
    return out
