"""The CUDA generation engine: the PyTorch model with a static KV cache, on
its own device, a batch of sequences at a time, without a host round trip
per token.

    engine = DeviceEngine(model.to("cuda", torch.bfloat16), compile=True)
    engine.generate([prompt_ids] * 8, max_new_tokens=256, params=..., seed=1)

How the host is kept out of the loop:
  * prefill / decode_one_token on a cache allocated once (`GPT.setup_caches`);
    off the CPU, cached calls read the whole cache under a mask and the
    Triton backend's decode kernel takes the valid length as a device tensor
    (gptfast.model), so no call syncs;
  * the position is a device tensor advanced in place, so
    `torch.compile(mode="reduce-overhead")` can replay one CUDA graph per step;
  * sampling runs on the device (`gptfast.device_sampling`), new tokens are
    written into a device buffer, and stop ids only flip a device flag;
  * the host looks at the tokens every `callback_every` steps (default 16):
    one copy, then the stream callback, stop strings, and an early exit when
    every sequence has stopped.
Sequences whose prompts have the same length advance together (the window
slides for all of them at once); other lengths run as separate batches.

The engine runs on the CPU too (that is how the tests check it): there its
greedy output equals the C++ engine's.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import torch

from gptfast.device_sampling import sample_tensor
from gptfast.engine import Generation, StreamCallback, _finish, _stop_strings, _wrap_callback
from gptfast.reference.generate import default_window_keep, next_window_start
from gptfast.sampling import SamplingParams

DEFAULT_SYNC_EVERY = 16


class DeviceEngine:
    name = "torch"

    def __init__(self, model: torch.nn.Module, compile: bool = False):
        self.model = model.eval()
        self.config = model.config
        self.device = next(model.parameters()).device
        self.dtype = str(next(model.parameters()).dtype).replace("torch.", "")
        self.threads = torch.get_num_threads()
        self.last_stats: Dict[str, float] = {}
        self._decode = model.decode_one_token
        if compile:
            # One CUDA graph per decode step; the first calls compile (slow).
            self._decode = torch.compile(model.decode_one_token, mode="reduce-overhead")

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                 params: Optional[SamplingParams] = None, seed: int = 0, *,
                 callback: Optional[StreamCallback] = None, callback_every: int = DEFAULT_SYNC_EVERY,
                 stop_ids: Sequence[int] = (), stop_strings: Sequence[str] = (), decode=None,
                 stream_decoder=None, seq_ids: Optional[Sequence[int]] = None,
                 window_keep: Optional[int] = None) -> List[Generation]:
        """The interface of `gptfast.engine.CppEngine.generate`."""
        params = params or SamplingParams()
        params.check_vocab(self.config.vocab_size)
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        B = len(prompts)
        stops = _stop_strings(stop_strings, B, decode, stream_decoder)
        cb = _wrap_callback(callback, stops)
        seq_ids = list(seq_ids) if seq_ids is not None else list(range(B))
        keep = default_window_keep(self.config.block_size) if window_keep is None else window_keep
        tokens: List[List[int]] = [[] for _ in range(B)]
        reasons = ["length"] * B
        by_length = defaultdict(list)
        for b, p in enumerate(prompts):
            by_length[len(p)].append(b)
        for rows in by_length.values():
            self._run_group(rows, prompts, max_new_tokens, params, seed, seq_ids, stop_ids, keep,
                            cb, max(1, int(callback_every)), tokens, reasons, B)
        return _finish(tokens, reasons, stops, decode)

    def _run_group(self, rows, prompts, max_new_tokens, params, seed, seq_ids, stop_ids, keep, cb, every,
                   tokens, reasons, B) -> None:
        """Advance the sequences `rows` (prompts of one length) together;
        fills tokens[b] and reasons[b]."""
        dev, bs, n = self.device, self.config.block_size, len(rows)
        if self.model.max_batch_size < n or self.model.max_seq_len != bs:
            self.model.setup_caches(n, bs)
        prompt = torch.tensor([list(prompts[b]) for b in rows], dtype=torch.long, device=dev)   # (n, P)
        seq = torch.tensor([_int64_bits(seq_ids[b]) for b in rows], dtype=torch.long, device=dev)
        stop_t = torch.tensor(sorted(set(int(s) for s in stop_ids)), dtype=torch.long, device=dev)
        banned = torch.tensor(params.banned_ids, dtype=torch.long, device=dev)
        seen = None
        if params.repetition_penalty != 1.0:
            seen = torch.zeros(n, self.config.vocab_size, dtype=torch.bool, device=dev)
            seen.scatter_(1, prompt, True)
        out = torch.zeros(n, max_new_tokens, dtype=torch.long, device=dev)    # new tokens
        finished = torch.zeros(n, dtype=torch.bool, device=dev)
        length = prompt.shape[1]                                             # host-known: all rows alike
        start = max(0, length - bs)
        logits = self.model.prefill(prompt[:, start:])[:, -1]                # (n, V)
        pos = torch.tensor([length - start], dtype=torch.long, device=dev)   # next position, on the device
        done_host = [False] * n
        synced = 0
        for step in range(max_new_tokens):
            t = sample_tensor(logits, params, seed, seq, step, seen, banned)   # (n,)
            finished |= torch.isin(t, stop_t)
            out[:, step] = torch.where(finished, -1, t)
            if seen is not None:
                seen.scatter_(1, t[:, None], True)
            length += 1
            last = step + 1 == max_new_tokens
            if (step + 1) % every == 0 or last:
                fresh = out[:, synced:step + 1].tolist()                      # the one host sync
                synced = step + 1
                if self._deliver(rows, fresh, done_host, tokens, reasons, cb, B):
                    break
            if last:
                break
            new_start = next_window_start(start, length, bs, keep)
            if new_start != start:  # slide: re-prefill the window from the device-side text
                start = new_start
                text = torch.cat([prompt, out[:, :step + 1].clamp(min=0)], dim=1)
                logits = self.model.prefill(text[:, start:])[:, -1]
                pos.fill_(length - start)
            else:
                logits = self._decode(t[:, None], pos)[:, -1]
                pos += 1

    @staticmethod
    def _deliver(rows, fresh, done_host, tokens, reasons, cb, B) -> bool:
        """Hand the tokens since the last sync to the host side; True when
        every row of the group has stopped."""
        news: List[List[int]] = [[] for _ in range(B)]
        for i, b in enumerate(rows):
            if done_host[i]:
                continue
            for tok in fresh[i]:
                if tok < 0:                       # a stop id was drawn
                    done_host[i], reasons[b] = True, "stop"
                    break
                news[b].append(tok)
            tokens[b] += news[b]
        if cb is not None and any(news):
            result = cb(news)
            if result is False:
                for i, b in enumerate(rows):
                    if not done_host[i]:
                        done_host[i], reasons[b] = True, "callback"
            elif result not in (None, True):
                for b in (int(x) for x in result):
                    if b in rows and not done_host[rows.index(b)]:
                        done_host[rows.index(b)], reasons[b] = True, "callback"
        return all(done_host)


def _int64_bits(value: int) -> int:
    """A sequence id as the int64 with the same low 64 bits (ids are uint64)."""
    value = int(value) & ((1 << 64) - 1)
    return value - (1 << 64) if value >= 1 << 63 else value
