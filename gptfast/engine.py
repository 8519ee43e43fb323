"""Fast CPU text generation: the Python face of the C++ decoding engine.

    engine = CppEngine.from_model(model, dtype="float16")      # copies the weights
    outs = engine.generate([prompt_ids], max_new_tokens=200,
                           params=SamplingParams(temperature=0.8, top_k=40), seed=1)
    outs[0].tokens, outs[0].finish_reason

The engine (csrc/sampler.cpp) runs the whole loop in C++ with the GIL released:
prefill of the prompts, then one token per step for all sequences together
(each weight row is read once per step for the whole batch), sampling
(csrc/sampling.cpp, the twin of `gptfast.sampling`), stop ids and lengths.
Python is called back only to stream tokens.  The context window slides as
documented in `gptfast.reference.generate` (window_keep).

This module owns the policy around it:
  * weights: float32, or float16 / bfloat16 rounded here with PyTorch (so the
    engine holds exactly the weights of `rounded_copy(model, dtype)`), with
    float32 activations and accumulation;
  * the KV cache: kv_dtype, by default the weights' dtype (16 bits halve
    what attention reads: a third of a step's memory traffic at batch 8, and
    more with long contexts); keys and values are rounded as they are
    cached, as `model.setup_caches(dtype=...)` rounds them in PyTorch;
  * stop strings: matched in Python on the decoded text, checked after every
    token (in O(1) per token with the tokenizer's `stream_decoder`, by
    decoding again with only `decode`); the text is cut before the stop
    string and the tokens end with the token that completed it;
  * the fallback: `load_engine` returns a `TorchEngine` (the reference KV loop,
    one sequence after another) with one warning when the extension is missing.
"""
from __future__ import annotations

import copy
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from gptfast import _backend
from gptfast.reference.generate import default_window_keep, iter_kv_tokens, iter_naive_tokens
from gptfast.sampling import SamplingParams, SamplingError, MASK64
from gptfast.sampling import sample_from_logits as python_sample_from_logits
from gptfast.streaming import TextStream

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# More engine threads than this is a mistake (each one spins between a step's
# sections); the system may also refuse to start them (a RuntimeError then).
MAX_THREADS = 1024

# Callback contract (both engines): called with the new token ids of every
# sequence since the last call (a list of B lists; empty for finished ones).
# Return None/True to go on, False to stop everything, or an iterable of
# sequence indices to stop just those.
StreamCallback = Callable[[List[List[int]]], object]


@dataclass
class Generation:
    """One sequence's output.  finish_reason: "length" (max_new_tokens), "stop"
    (a stop id: not included in tokens), "stop_string" (text cut before it),
    "callback" (the callback stopped it)."""

    tokens: List[int]
    finish_reason: str
    text: Optional[str] = None  # decode(tokens), cut at a stop string; None without `decode`


class _RedecodeAll:
    """A stream decoder (see Tokenizer.stream_decoder) made of a plain decode
    function: it decodes the whole sequence again at every look, so a stream
    of n tokens costs O(n^2).  For callers that pass only `decode`."""

    def __init__(self, decode: Callable[[List[int]], str]):
        self.decode = decode
        self.ids: List[int] = []

    def add(self, ids: Sequence[int]) -> str:
        self.ids.extend(ids)
        return ""

    def pending(self) -> str:
        return self.decode(self.ids)


class _StopStrings:
    """Stop-string bookkeeping of one generate call (callback_every=1): one
    TextStream per sequence, printing nowhere, tells when its text reaches a
    stop string and what the text is up to it."""

    def __init__(self, stop_strings: Sequence[str], B: int, new_decoder: Callable[[], object]):
        self.streams = [TextStream(new_decoder(), io.StringIO(), stop_strings) for _ in range(B)]
        self.fed = [0] * B                              # tokens fed per sequence
        self.n_tokens: List[Optional[int]] = [None] * B   # tokens kept, once stopped

    def feed(self, fresh: List[List[int]]) -> List[int]:
        """Adds the new tokens; returns the sequences that just hit a stop string."""
        hit = []
        for b, new in enumerate(fresh):
            if not new or self.n_tokens[b] is not None:
                continue
            self.streams[b].feed(new)
            self.fed[b] += len(new)
            if self.streams[b].stopped:
                self.n_tokens[b] = self.fed[b]
                hit.append(b)
        return hit


def _stop_strings(stop_strings: Sequence[str], B: int, decode, stream_decoder) -> Optional[_StopStrings]:
    """The generate calls' shared checks: stop strings need a way to decode."""
    if not stop_strings:
        return None
    if decode is None:
        raise SamplingError("stop_strings need a decode function (token ids -> text)")
    return _StopStrings(list(stop_strings), B, stream_decoder or (lambda: _RedecodeAll(decode)))


def _wrap_callback(callback: Optional[StreamCallback], stops: Optional[_StopStrings]):
    if stops is None:
        return callback

    def both(fresh: List[List[int]]):
        hit = stops.feed(fresh)
        result = callback(fresh) if callback is not None else None
        if result is False:
            return False
        return hit + ([] if result is None or result is True else [int(b) for b in result])

    return both


def _finish(raw_tokens, reasons, stops: Optional[_StopStrings], decode) -> List[Generation]:
    out = []
    for b, (tokens, reason) in enumerate(zip(raw_tokens, reasons)):
        text = None
        if stops is not None and stops.n_tokens[b] is not None:
            tokens, reason = list(tokens[: stops.n_tokens[b]]), "stop_string"
            text = stops.streams[b].finish()
        elif decode is not None:
            text = decode(list(tokens))
        out.append(Generation(list(tokens), reason, text))
    return out


CPU_TOPOLOGY = Path("/sys/devices/system/cpu")


def default_threads(topology: Path = CPU_TOPOLOGY) -> int:
    """One thread per physical core this process may run on.  Decoding is
    bound by memory bandwidth, which a core's second hardware thread does not
    add to; it only competes for the core's caches (llama.cpp's default too)."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # not on Linux: no topology to read
        return max(1, os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        try:  # the hardware threads of cpu's core, e.g. "0,8" or "0-1": the same text for each of them
            cores.add((topology / f"cpu{cpu}" / "topology" / "thread_siblings_list").read_text().strip())
        except OSError:  # no sysfs (a container may hide it): every CPU counts
            return max(1, len(cpus))
    return max(1, len(cores))


def rounded_copy(model: torch.nn.Module, dtype: str) -> torch.nn.Module:
    """A float32 copy of `model` whose parameters are rounded to `dtype`: the
    weights the engine holds for that dtype (what its logits are compared to)."""
    out = copy.deepcopy(model).float()
    with torch.no_grad():
        for p in out.parameters():
            p.copy_(p.to(DTYPES[dtype]).float())
    return out


def _layer_norm_eps(model: torch.nn.Module) -> float:
    eps = {m.eps for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}
    if len(eps) != 1:
        raise ValueError(f"the engine needs one LayerNorm eps for the whole model, found {sorted(eps)}")
    return float(eps.pop())


# Matrices of the state dict (stored in the engine's weight dtype); everything
# else is a vector and stays float32 (rounded to the dtype's values).
_MATRIX_SUFFIXES = ("tok_emb.weight", "pos_emb.weight", "attn.qkv.weight", "attn.proj.weight", "mlp.fc.weight",
                    "mlp.proj.weight", "lm_head.weight")


def _engine_tensors(model: torch.nn.Module, dtype: str) -> Dict[str, np.ndarray]:
    """model.state_dict() as the engine reads it (see csrc/sampler.h)."""
    tdtype = DTYPES[dtype]
    out = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and model.config.tie_weights:
            continue  # tied: the engine uses tok_emb.weight
        t = t.detach().cpu()
        if name.endswith(_MATRIX_SUFFIXES) and dtype != "float32":
            out[name] = t.to(tdtype).contiguous().view(torch.int16).numpy().view(np.uint16)
        else:
            out[name] = t.to(tdtype).float().contiguous().numpy()
    if model.config.pos_embedding == "sinusoidal":
        out["pos_table"] = model.pos_table.detach().cpu().float().contiguous().numpy()  # a buffer, not rounded
    return out


class CppEngine:
    """The C++ engine holding a copy of one model's weights.  Thread-safe (one
    call at a time per engine); the GIL is released while it runs."""

    name = "cpp"

    def __init__(self, core, config, dtype: str):
        self._core = core
        self.config = config
        self.dtype = dtype
        self.last_stats: Dict[str, float] = {}

    @classmethod
    def from_model(cls, model: torch.nn.Module, dtype: str = "float32", threads: Optional[int] = None,
                   kv_dtype: Optional[str] = None) -> "CppEngine":
        """`model`: a `gptfast.model.GPT` (its state-dict layout is the contract).
        dtype: how the weight matrices are stored; kv_dtype: how the keys and
        values are cached (default: as the weights, so 16-bit weights also
        halve the cache that attention reads; "float32" keeps the cache exact)."""
        C = _backend.extension()
        if C is None:
            raise RuntimeError("the C++ extension gptfast._C is not available; use load_engine() for the fallback")
        kv_dtype = dtype if kv_dtype is None else kv_dtype
        if threads is not None and not 1 <= threads <= MAX_THREADS:
            raise ValueError(f"threads must be in 1..{MAX_THREADS}, got {threads}")
        for what, value in (("dtype", dtype), ("kv_dtype", kv_dtype)):
            if value not in DTYPES:
                raise ValueError(f"{what} must be one of {', '.join(DTYPES)}, got {value!r}")
        cfg = model.config
        core = C.Engine(cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd, _layer_norm_eps(model),
                        _engine_tensors(model, dtype), dtype, threads or default_threads(), kv_dtype)
        return cls(core, cfg, dtype)

    @property
    def kv_dtype(self) -> str:
        return self._core.kv_dtype

    @property
    def threads(self) -> int:
        return self._core.threads

    @property
    def weight_bytes_per_step(self) -> int:
        """Bytes of weights one decoding step reads (all matrices once)."""
        return self._core.weight_bytes_per_step

    def forward_logits(self, tokens: Sequence[int]) -> np.ndarray:
        """Logits (T, vocab) float32 of `tokens` at positions 0..T-1 (T <= block_size)."""
        return self._core.forward_logits([int(t) for t in tokens])

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                 params: Optional[SamplingParams] = None, seed: int = 0, *,
                 callback: Optional[StreamCallback] = None, callback_every: int = 1,
                 stop_ids: Sequence[int] = (), stop_strings: Sequence[str] = (),
                 decode: Optional[Callable[[List[int]], str]] = None, stream_decoder: Optional[Callable] = None,
                 seq_ids: Optional[Sequence[int]] = None, window_keep: Optional[int] = None) -> List[Generation]:
        """Continue every prompt (lists of token ids) by up to max_new_tokens.

        seed: the sampling seed; token `step` of sequence b draws
        uniform(seed, seq_ids[b], step) (seq_ids default 0..B-1: pass [i] to
        reproduce sequence i of a batch alone).  stop_strings need `decode`
        (ids -> text) and make the callback run every token; pass
        `stream_decoder=tokenizer.stream_decoder` too, or each check decodes
        the whole sequence again (O(n^2) over a long run).  window_keep:
        tokens kept when the context window slides (default block_size // 2,
        see gptfast.reference.generate).  Copies of one prompt (`[ids] * n`)
        share its prefill and its cached keys and values, with the same
        tokens as each alone.  After the call, `last_stats` holds
        prefill_rows, first_token_s and where the time went (linear_s,
        attention_s, other_forward_s, sampling_s, callback_s)."""
        params = params or SamplingParams()
        params.check_vocab(self.config.vocab_size)
        stops = _stop_strings(stop_strings, len(prompts), decode, stream_decoder)
        cpp_params = self._core_params(params)
        tokens, reasons, stats = self._core.generate(
            [[int(t) for t in p] for p in prompts], int(max_new_tokens), cpp_params, int(seed) & MASK64,
            [int(s) & MASK64 for s in seq_ids] if seq_ids is not None else [],
            [int(t) for t in stop_ids],
            int(default_window_keep(self.config.block_size) if window_keep is None else window_keep),
            _wrap_callback(callback, stops),
            1 if stops else int(callback_every))
        self.last_stats = dict(stats)
        return _finish(tokens, reasons, stops, decode)

    @staticmethod
    def _core_params(params: SamplingParams):
        return _backend.extension().SamplingParams(
            temperature=float(params.temperature), top_k=int(params.top_k), top_p=float(params.top_p),
            repetition_penalty=float(params.repetition_penalty), banned_ids=list(params.banned_ids))


class TorchEngine:
    """The same interface on a Python reference loop: by default the PyTorch
    KV-cache loop (the fallback when the extension is missing), or the seeds'
    naive loop with `stepper=iter_naive_tokens`.  Sequences run one after
    another, so the callback sees one sequence advancing at a time.  Both
    loops use the Python twin of the C++ sampler: same seed, same tokens."""

    def __init__(self, model: torch.nn.Module, stepper: Callable = iter_kv_tokens, name: str = "torch"):
        self.name = name
        self.model = model.eval()
        self.config = model.config
        self.dtype = str(next(model.parameters()).dtype).replace("torch.", "")
        self.threads = torch.get_num_threads()
        self._stepper = stepper
        self.last_stats: Dict[str, float] = {}

    def forward_logits(self, tokens: Sequence[int]) -> np.ndarray:
        with torch.no_grad():
            idx = torch.tensor([list(tokens)], dtype=torch.long, device=next(self.model.parameters()).device)
            return self.model(idx)[0][0].float().cpu().numpy()

    def generate(self, prompts, max_new_tokens, params=None, seed=0, *, callback=None, callback_every=1,
                 stop_ids=(), stop_strings=(), decode=None, stream_decoder=None, seq_ids=None,
                 window_keep=None) -> List[Generation]:
        params = params or SamplingParams()
        params.check_vocab(self.config.vocab_size)
        B = len(prompts)
        stops = _stop_strings(stop_strings, B, decode, stream_decoder)
        cb = _wrap_callback(callback, stops)
        every = 1 if stops else max(1, int(callback_every))
        tokens: List[List[int]] = [[] for _ in range(B)]
        reasons = ["length"] * B
        stop_ids = set(int(t) for t in stop_ids)
        halt_all = False
        for b, prompt in enumerate(prompts):
            if halt_all:
                reasons[b] = "callback"
                continue
            seq = seq_ids[b] if seq_ids is not None else b
            pending: List[int] = []
            for t in self._stepper(self.model, prompt, max_new_tokens, params, seed, seq, (), window_keep):
                if t in stop_ids:
                    reasons[b] = "stop"
                    break
                tokens[b].append(t)
                pending.append(t)
                if cb is not None and (len(pending) >= every or len(tokens[b]) == max_new_tokens):
                    fresh = [[] for _ in range(B)]
                    fresh[b], pending = pending, []
                    result = cb(fresh)
                    if result is False:
                        reasons[b], halt_all = "callback", True
                        break
                    if result not in (None, True) and b in set(int(i) for i in result):
                        reasons[b] = "callback"
                        break
        return _finish(tokens, reasons, stops, decode)


def load_engine(model: torch.nn.Module, dtype: str = "float32",
                threads: Optional[int] = None) -> Union[CppEngine, TorchEngine]:
    """The C++ engine when the extension is built (and GPTFAST_REFERENCE is not
    set), else the PyTorch reference loop after one warning."""
    if _backend.extension() is not None:
        return CppEngine.from_model(model, dtype=dtype, threads=threads)
    return TorchEngine(model)


ENGINES = ("auto", "cpp", "torch", "reference")


def _seed_loop(model, prompt, max_new_tokens, params, seed, seq, stop_ids, window_keep):
    """The seeds' naive loop crops the context every step: window_keep does not apply."""
    return iter_naive_tokens(model, prompt, max_new_tokens, params, seed, seq, stop_ids, None)


def make_engine(kind: str, model: torch.nn.Module, dtype: str = "float32", threads: Optional[int] = None,
                compile: bool = False, kv_dtype: Optional[str] = None):
    """The engine `python -m gptfast.generate --engine KIND` runs.

    auto: cpp on the CPU (torch when the extension is missing), torch on CUDA.
    cpp: the C++ engine (CPU; weights copied out of `model`).
    torch: the KV-cached PyTorch loop on the model's device: on CUDA the
        batched `DeviceEngine` (sampling on the GPU; `compile` captures the
        decode step with torch.compile), on the CPU the Python loop that is
        the C++ engine's exact twin.
    reference: the seeds' loop, a full forward over the context per token.
    kv_dtype (cpp only): how keys and values are cached, default as `dtype`."""
    from gptfast.errors import InputError

    if kind not in ENGINES:
        raise InputError(f"engine must be one of {', '.join(ENGINES)}, got {kind!r}")
    on_cuda = next(model.parameters()).device.type == "cuda"
    if kind == "auto":
        kind = "torch" if on_cuda else "cpp" if _backend.extension() is not None else "torch"
    if kv_dtype is not None and kind != "cpp":
        raise InputError(f"--kv-dtype applies to the cpp engine, not to the {kind} engine (whose cache has the "
                         f"model's dtype)")
    if kind == "cpp":
        if _backend.extension() is None:
            raise InputError("the C++ engine needs the extension gptfast._C, which is not built "
                             "(or GPTFAST_REFERENCE is set); use --engine torch, or reinstall with a compiler")
        return CppEngine.from_model(model, dtype=dtype, threads=threads, kv_dtype=kv_dtype)  # copies the weights
    if kind == "reference":
        return TorchEngine(model, stepper=_seed_loop, name="reference")
    if on_cuda:
        from gptfast.device_engine import DeviceEngine

        return DeviceEngine(model, compile=compile)
    return TorchEngine(model)


def sample_from_logits(logits, params: SamplingParams, seed: int, seq: int = 0, step: int = 0,
                       history: Sequence[int] = ()) -> int:
    """The C++ sampler on one row of logits (the Python twin when the extension is missing)."""
    C = _backend.extension()
    if C is None:
        return python_sample_from_logits(logits, params, seed, seq, step, history)
    params.check_vocab(len(logits))
    return C.sample_from_logits(np.asarray(logits, dtype=np.float32), CppEngine._core_params(params),
                                int(seed) & MASK64, int(seq) & MASK64, int(step) & MASK64, [int(h) for h in history])
