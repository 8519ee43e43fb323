"""The trainer: `train(config)` runs one training run end to end.

Order of a step (k = steps done so far):
    evaluate + checkpoint when k % eval_interval == 0 or k == max_iters
    stop when k == max_iters, the time budget is spent, or Ctrl-C was pressed
    lr = schedule(k); grad_accum micro-batches (DDP syncs only on the last);
    clip; optimizer step; k += 1

Everything random comes from saved state: model init from `seed`, dropout
from the torch RNG (state saved per rank), batches from a torch.Generator
seeded with seed + rank (state saved per rank), evaluation windows and
samples from generators seeded afresh from `seed` at every evaluation (so
they never disturb training).  Hence on CPU a run stopped at step k and
resumed reproduces the uninterrupted run's losses bit for bit.
"""
from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from gptfast.config import ConfigError, GPTConfig
from gptfast.errors import InputError
from gptfast.io_utils import atomic_write_text
from gptfast.model import GPT
from gptfast.training import ddp
from gptfast.training.checkpoint import (
    CheckpointError,
    decode_state,
    encode_state,
    load_checkpoint,
    load_model_weights,
    save_checkpoint,
)
from gptfast.training.config import TrainConfig
from gptfast.training.data import check_split, get_batch, get_dataset
from gptfast.training.metrics import MetricsLog
from gptfast.training.optim import make_optimizer
from gptfast.training.progress import Progress
from gptfast.training.runtime import cpu_has_native_bf16, flops_per_token, make_runtime, resolve_device
from gptfast.training.sample import sample_text
from gptfast.training.schedule import lr_at

RUNS_ROOT = Path("out") / "runs"
EVAL_SEED_OFFSET = 1_000_003  # evaluation windows never share a stream with training batches


@dataclass
class TrainResult:
    run_dir: Path
    iter: int
    best_val_loss: float
    val_loss: Optional[float]
    stopped: str                 # "max_iters" | "max_minutes" | "interrupted"
    model: GPT                   # the trained (uncompiled, unwrapped) model, in eval mode
    tokenizer: object
    losses: List[float]          # the train loss of every step run by this process
    val_iter: Optional[int] = None   # the iter val_loss was measured at (the last evaluation)


def default_run_dir(cfg: TrainConfig, data_name: str) -> Path:
    return RUNS_ROOT / f"{data_name}-{cfg.preset}"


def train(cfg: TrainConfig, resume: Optional[str] = None, progress: str = "auto",
          on_step: Optional[Callable[[int, "Trainer"], None]] = None,
          log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)) -> TrainResult:
    """Run training; `resume` is a run directory (or checkpoint folder) to continue."""
    cfg.validate()
    device = resolve_device(cfg.device)
    dist_info = ddp.setup(device)
    trainer = None
    try:
        trainer = Trainer(cfg, dist_info, ddp.device_for(dist_info, device), resume, progress, log)
        result = trainer.run(on_step)
        # Rank 0 may still be writing the last checkpoint; a rank that tears
        # its gloo group down while a peer still holds the connection can
        # abort in gloo ("terminate called without an active exception").
        ddp.barrier(dist_info)
        return result
    finally:
        # The DDP wrapper holds the process group too: drop it first, so the
        # group is released in destroy_process_group (gloo can still abort
        # at the interpreter's exit: see ddp.exit_finished_rank).
        del trainer
        ddp.teardown(dist_info)


class Trainer:
    def __init__(self, cfg: TrainConfig, dist_info: ddp.DistInfo, device: str, resume: Optional[str],
                 progress: str, log: Callable[[str], None]):
        self.cfg, self.dist = cfg, dist_info
        self.main = dist_info.is_main
        self.log = log if self.main else (lambda m: None)
        self.rt = make_runtime(device, cfg.dtype, cfg.compile)
        self.stop_reason: Optional[str] = None

        # -- checkpoint to continue from or to start from -------------------
        self.ckpt = None
        self.resuming = resume is not None
        if resume is not None:
            self.ckpt = load_checkpoint(resume)
        elif cfg.init_from is not None:
            self.ckpt = load_checkpoint(cfg.init_from, with_optimizer=False)

        # -- data: rank 0 prepares, the others wait and load ----------------
        if self.main:
            self.dataset = get_dataset(cfg.data, cfg.prepare_options(), log=self.log)
        ddp.barrier(dist_info)
        if not self.main:
            self.dataset = get_dataset(cfg.data, cfg.prepare_options(), log=lambda m: None)
        self.tokenizer = self.dataset.tokenizer
        self.mcfg = self._model_config()
        self.train_tokens = self.dataset.tokens("train")
        self.val_tokens = self.dataset.tokens("val")
        check_split(self.train_tokens, self.mcfg.block_size, "train", self.dataset.path)
        check_split(self.val_tokens, self.mcfg.block_size, "val", self.dataset.path)

        # -- run directory ---------------------------------------------------
        if resume is not None:
            p = self.ckpt.path
            self.run_dir = p.parent if p.name in ("last", "best", ".last.old") else p
        else:
            self.run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg, self.dataset.meta.get("source", {}).get("name") or self.dataset.path.name)
        cfg.out = str(self.run_dir)

        # -- batch size ------------------------------------------------------
        self.grad_accum = cfg.grad_accum
        per_step = cfg.batch_size * dist_info.world_size
        if cfg.total_batch_size is not None:
            if cfg.total_batch_size % per_step:
                raise ConfigError(f"total_batch_size {cfg.total_batch_size} is not a multiple of batch_size "
                                  f"{cfg.batch_size} x {dist_info.world_size} process(es)")
            self.grad_accum = cfg.total_batch_size // per_step

        # -- model, optimizer, RNGs ------------------------------------------
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.model = GPT(self.mcfg).to(self.rt.device)
        self.optimizer = make_optimizer(self.model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2),
                                        self.rt.device_type)
        self.scaler = self.rt.grad_scaler()
        self.batch_gen = torch.Generator().manual_seed(cfg.seed + dist_info.rank)
        torch.manual_seed(cfg.seed + dist_info.rank)  # dropout differs per rank
        self.start_iter, self.best_val = 0, math.inf
        if self.ckpt is not None:
            load_model_weights(self.model, {k: v.to(self.rt.device) for k, v in self.ckpt.model_state.items()},
                               str(self.ckpt.path))
        if resume is not None:
            self._restore_training_state()

        self.fwd_model = torch.compile(self.model) if self.rt.compile else self.model
        if dist_info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.rt.device.index] if self.rt.device_type == "cuda" else None
            self.fwd_model = DDP(self.fwd_model, device_ids=ids)
        self.metrics = MetricsLog(self.run_dir, enabled=self.main)
        self.progress_mode = progress

    # ------------------------------------------------------------- setup
    def _model_config(self) -> GPTConfig:
        cfg, vocab = self.cfg, self.tokenizer.vocab_size
        if self.ckpt is None:
            return cfg.model_config(vocab)
        where = str(self.ckpt.path)
        if self.ckpt.meta["tokenizer"] != self.tokenizer.to_dict():
            raise CheckpointError(f"the checkpoint's tokenizer ({_tok_desc(self.ckpt.meta['tokenizer'])}) differs "
                                  f"from the data's ({_tok_desc(self.tokenizer.to_dict())}); train on text "
                                  "prepared with the same tokenizer, or start a new run", path=where)
        try:
            saved = GPTConfig.from_dict(self.ckpt.meta["model_config"])
        except (InputError, TypeError) as err:
            raise CheckpointError(f"corrupt model config in the checkpoint ({err})", path=where) from None
        keep = {k: getattr(cfg, k) for k in ("dropout", "attention") if getattr(cfg, k) is not None}
        if not self.resuming:
            # Fine-tuning (--init-from): the trained architecture; only dropout/attention may change.
            asked = {k: getattr(cfg, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "bias",
                                                 "pos_embedding", "tie_weights") if getattr(cfg, k) is not None}
            clash = {k: v for k, v in asked.items() if getattr(saved, k) != v}
            if clash:
                raise CheckpointError("--init-from keeps the trained model's architecture, but "
                                      + ", ".join(f"{k}={v} (checkpoint: {getattr(saved, k)})" for k, v in clash.items())
                                      + " was asked for", path=where)
            return saved.replace(**keep)
        built = cfg.model_config(vocab) if not cfg.init_from else saved.replace(**keep)
        diff = [k for k, v in built.to_dict().items() if k != "attention" and saved.to_dict().get(k) != v]
        if diff:
            raise CheckpointError("cannot resume: the model config differs from the checkpoint's ("
                                  + ", ".join(f"{k}: {getattr(saved, k)} -> {getattr(built, k)}" for k in diff)
                                  + "); use the same settings, or --init-from to start a new run", path=where)
        return built

    def _restore_training_state(self) -> None:
        meta, where = self.ckpt.meta, str(self.ckpt.path)
        if self.ckpt.optimizer_state is None:
            raise CheckpointError("the checkpoint has no optimizer state (a best/ checkpoint?); "
                                  "resume from the run's last/ checkpoint, or use --init-from", path=where)
        try:
            self.optimizer.load_state_dict(self.ckpt.optimizer_state)
            rng = meta["rng"]
            r = self.dist.rank if len(rng["batch_generator"]) > self.dist.rank else 0
            self.batch_gen.set_state(decode_state(rng["batch_generator"][r]))
            torch.set_rng_state(decode_state(rng["torch_cpu"][r]))
            if self.rt.device_type == "cuda" and rng.get("torch_cuda") and rng["torch_cuda"][r]:
                torch.cuda.set_rng_state(decode_state(rng["torch_cuda"][r]), self.rt.device)
            if meta.get("scaler"):
                self.scaler.load_state_dict(meta["scaler"])
            self.start_iter = int(meta["iter"])
            self.best_val = float(meta.get("best_val_loss", math.inf))
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as err:
            raise CheckpointError(f"corrupt training state in the checkpoint ({type(err).__name__}: {err})",
                                  path=where) from None
        if len(meta["rng"]["batch_generator"]) != self.dist.world_size:
            self.log(f"note: the checkpoint was written by {len(meta['rng']['batch_generator'])} process(es), "
                     f"this run has {self.dist.world_size}; batches will differ from an uninterrupted run")

    # ------------------------------------------------------------- helpers
    def request_stop(self, reason: str = "interrupted") -> None:
        self.stop_reason = self.stop_reason or reason

    def lr(self, step: int) -> float:
        c = self.cfg
        min_lr = c.min_lr if c.min_lr is not None else c.lr / 10
        return lr_at(step, c.lr, min_lr, c.warmup_iters, c.lr_decay_iters or c.max_iters, c.lr_schedule)

    @torch.no_grad()
    def evaluate(self) -> Dict[str, float]:
        """Mean loss over eval_iters fixed windows of each split (same windows
        at every evaluation: curves compare like with like)."""
        self.model.eval()
        out = {}
        for split, tokens in (("train", self.train_tokens), ("val", self.val_tokens)):
            g = torch.Generator().manual_seed(self.cfg.seed + EVAL_SEED_OFFSET)
            total = 0.0
            for _ in range(self.cfg.eval_iters):
                x, y = get_batch(tokens, self.cfg.batch_size, self.mcfg.block_size, g, self.rt.device)
                with self.rt.autocast():
                    _, loss = self.model(x, y, return_logits=False)
                total += float(loss)
            out[split] = total / self.cfg.eval_iters
        self.model.train()
        return out

    def checkpoint_meta(self, step: int, val_loss: Optional[float]) -> Dict:
        cuda = encode_state(torch.cuda.get_rng_state(self.rt.device)) if self.rt.device_type == "cuda" else ""
        mine = json.dumps({"b": encode_state(self.batch_gen.get_state()),
                           "c": encode_state(torch.get_rng_state()), "g": cuda})
        states = [json.loads(s) for s in ddp.all_gather_strings(mine, self.dist)]  # collective: every rank
        return {
            "model_config": self.mcfg.to_dict(),
            "tokenizer": self.tokenizer.to_dict(),
            "train_config": self.cfg.to_dict(),
            "iter": step,
            "best_val_loss": self.best_val if math.isfinite(self.best_val) else None,
            "val_loss": val_loss,
            "world_size": self.dist.world_size,
            "rng": {"batch_generator": [s["b"] for s in states], "torch_cpu": [s["c"] for s in states],
                    "torch_cuda": [s["g"] for s in states]},
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "dataset": {"path": str(self.dataset.path), "key": self.dataset.meta.get("key")},
            "contacts": list(self.dataset.meta.get("contacts") or []),   # the chat REPL's speakers
        }

    def save(self, step: int, val_loss: Optional[float], best: bool) -> None:
        meta = self.checkpoint_meta(step, val_loss)
        if self.main:
            save_checkpoint(self.run_dir / "last", self.model, meta, self.optimizer)
            if best:
                save_checkpoint(self.run_dir / "best", self.model, meta)

    def _agree_stop(self) -> bool:
        """Every rank must stop at the same step; rank 0 decides."""
        if not self.dist.enabled:
            return self.stop_reason is not None
        import torch.distributed as dist

        codes = {None: 0, "interrupted": 1, "max_minutes": 2}
        t = torch.tensor([codes[self.stop_reason] if self.main else 0], device=self.rt.device)
        dist.broadcast(t, 0)
        self.stop_reason = {v: k for k, v in codes.items()}[int(t.item())]
        return self.stop_reason is not None

    # ---------------------------------------------------------------- run
    def run(self, on_step=None) -> TrainResult:
        cfg, main = self.cfg, self.main
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.json", json.dumps(cfg.to_dict(), indent=1, ensure_ascii=False))
            if self.start_iter:
                self.metrics.truncate_after(self.start_iter)
        self.log(f"run {self.run_dir}: {self.mcfg.n_layer} layers, {self.mcfg.n_embd} wide, block "
                 f"{self.mcfg.block_size}, vocab {self.mcfg.vocab_size}, {self.model.num_params() / 1e6:.2f}M "
                 f"parameters on {self.rt.device} ({str(self.rt.dtype).replace('torch.', '')}"
                 f"{', compiled' if self.rt.compile else ''}{f', {self.dist.world_size} processes' if self.dist.enabled else ''})"
                 + (f"; resuming at iter {self.start_iter}" if self.start_iter else ""))
        # Measured fp32 / bf16 step times: tiny (128 wide) 0.88x, chat (256) 1.96x, quijote (384) 2.2x.
        if self.rt.device_type == "cpu" and self.rt.dtype == torch.bfloat16 and not cpu_has_native_bf16():
            self.log("note: this CPU has no bfloat16 matmul in hardware (AMX or AVX512-BF16): "
                     "--dtype float32 is faster here")
        elif self.rt.device_type == "cpu" and cfg.dtype == "auto" and self.mcfg.n_embd >= 256 and cpu_has_native_bf16():
            self.log("this CPU multiplies bfloat16 in hardware: --dtype bfloat16 trains this model about 2x faster")
        tokens_per_step = cfg.batch_size * self.mcfg.block_size * self.grad_accum * self.dist.world_size
        fpt = flops_per_token(self.model.num_params(), self.mcfg.n_layer, self.mcfg.n_embd, self.mcfg.block_size)
        progress = Progress(self.progress_mode, self.start_iter, cfg.max_iters, enabled=main)
        deadline = time.monotonic() + 60 * cfg.max_minutes if cfg.max_minutes else None
        old_handler = self._install_sigint()
        step, losses, val_loss, val_iter = self.start_iter, [], None, None
        t_log, steps_since_log = time.perf_counter(), 0
        t_start = time.perf_counter()
        try:
            while True:
                if (step % cfg.eval_interval == 0 or step == cfg.max_iters) and not (step == self.start_iter and self.start_iter):
                    val_loss, val_iter = self._eval_and_save(step, progress, t_start), step
                    t_log = time.perf_counter()  # tokens/s measures training only
                if step >= cfg.max_iters:
                    self.stop_reason = "max_iters"
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    self.request_stop("max_minutes")
                if self._agree_stop():
                    if self.stop_reason == "max_minutes":  # a budgeted run ends with its figures
                        val_loss, val_iter = self._eval_and_save(step, progress, t_start), step
                    else:
                        self.save(step, val_loss, best=False)
                        progress.message(f"interrupted: checkpoint saved at iter {step} in {self.run_dir / 'last'}")
                    break
                loss = self._train_step(step)
                losses.append(loss)
                step += 1
                steps_since_log += 1
                if step % cfg.log_interval == 0 or step == cfg.max_iters:
                    loss_all = ddp.all_reduce_mean(loss, self.dist, self.rt.device)
                    dt = time.perf_counter() - t_log
                    tok_s = tokens_per_step * steps_since_log / max(dt, 1e-9)
                    eta = (cfg.max_iters - step) * dt / steps_since_log
                    if deadline is not None:
                        eta = min(eta, max(0.0, deadline - time.monotonic()))
                    progress.step(step, loss_all, self.lr(step - 1), tok_s, tok_s * fpt / 1e9, eta)
                    self.metrics.append({"kind": "train", "iter": step - 1, "loss": loss_all, "lr": self.lr(step - 1),
                                         "tokens_per_s": tok_s, "gflops": tok_s * fpt / 1e9,
                                         "elapsed_s": time.perf_counter() - t_start})
                    t_log, steps_since_log = time.perf_counter(), 0
                if on_step is not None:
                    on_step(step, self)
        finally:
            progress.close()
            self._restore_sigint(old_handler)
        self.model.eval()
        best = self.best_val if math.isfinite(self.best_val) else math.inf
        return TrainResult(self.run_dir, step, best, val_loss, self.stop_reason or "max_iters",
                           self.model, self.tokenizer, losses, val_iter)

    def _train_step(self, step: int) -> float:
        cfg = self.cfg
        lr = self.lr(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = 0.0
        for micro in range(self.grad_accum):
            x, y = get_batch(self.train_tokens, cfg.batch_size, self.mcfg.block_size, self.batch_gen, self.rt.device)
            last = micro == self.grad_accum - 1
            # DDP all-reduces gradients only on the last micro-step.
            sync = self.fwd_model.no_sync() if (self.dist.enabled and not last) else _null()
            with sync:
                with self.rt.autocast():
                    _, loss = self.fwd_model(x, y, return_logits=False)   # no (B, T, vocab) logits on the CPU
                    loss = loss / self.grad_accum
                self.scaler.scale(loss).backward()
            total += loss.detach()
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return float(total)

    def _eval_and_save(self, step: int, progress: Progress, t_start: float) -> float:
        # Evaluation runs on every rank (same fixed windows), so no rank waits
        # at the next all-reduce for long; only rank 0 prints and writes.
        losses = self.evaluate()
        val = losses["val"]
        improved = val < self.best_val
        self.best_val = min(self.best_val, val)
        progress.message(f"iter {step}: train loss {losses['train']:.4f}, val loss {val:.4f} "
                         f"(perplexity {math.exp(min(val, 50)):.2f}){' *' if improved else ''}")
        if self.main:
            self.metrics.append({"kind": "eval", "iter": step, "train_loss": losses["train"], "val_loss": val,
                                 "val_ppl": math.exp(min(val, 50)), "lr": self.lr(step),
                                 "elapsed_s": time.perf_counter() - t_start})
            if self.cfg.plot:
                self.metrics.plot()
            if self.cfg.sample_tokens:
                text = sample_text(self.model, self.tokenizer, self.cfg.sample_tokens, seed=self.cfg.seed)
                progress.message("---- sample ----\n" + text.strip("\n") + "\n----------------")
        self.save(step, val, best=improved)
        return val

    # ------------------------------------------------------------ Ctrl-C
    def _install_sigint(self):
        """First Ctrl-C: finish the step, save, stop.  Second: stop now."""
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            if self.stop_reason == "interrupted":
                raise KeyboardInterrupt
            self.request_stop("interrupted")
            if self.main:
                print("\nCtrl-C: saving a checkpoint after this step (press again to quit without saving)",
                      file=sys.stderr, flush=True)

        return signal.signal(signal.SIGINT, handler)

    @staticmethod
    def _restore_sigint(old) -> None:
        if old is not None:
            signal.signal(signal.SIGINT, old)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _tok_desc(d: dict) -> str:
    return f"{d.get('kind')} level, {len(d.get('vocab') or [])} tokens"
