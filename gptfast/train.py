"""python -m gptfast.train: train a GPT on your own text.

    python -m gptfast.train --data el_quijote.txt --preset tiny --max-minutes 10
    python -m gptfast.train --data book.txt --n-layer 2 --n-embd 64 --lr-schedule constant
    python -m gptfast.train --config run.toml                  # settings from a TOML or JSON file
    python -m gptfast.train --resume out/runs/el_quijote-tiny  # continue exactly where it stopped
    python -m gptfast.train --data chat.txt --init-from out/runs/x --max-iters 500   # fine-tune
    torchrun --nproc_per_node 4 -m gptfast.train --data book.txt                     # DDP

Argument parsing only: the work is gptfast.training.loop.train.  Every option
defaults to "not given" (argparse.SUPPRESS), so the precedence is defaults <
--config file < command line, and a resumed run can tell which settings the
user asked to change.
"""
from __future__ import annotations

import argparse
from typing import Any, Dict, Optional, Sequence

from gptfast.cli import NONNEG_FLOAT, NONNEG_INT, POS_FLOAT, POS_INT, ArgumentParser, number as _number
from gptfast.config import PRESETS
from gptfast.data.corpus import FORMATS
from gptfast.errors import InputError, exit_on_input_error, out_of_memory
from gptfast.tokenizer import KINDS
from gptfast.training.config import DEVICES, DTYPES, LR_SCHEDULES, TrainConfig, config_for_resume, load_config_file

S = argparse.SUPPRESS


def _dropout(text: str) -> float:
    v = _number(float, 0, what="a dropout in [0, 1)")(text)
    if v >= 1:
        raise argparse.ArgumentTypeError(f"expected a dropout in [0, 1), got {text!r}")
    return v


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m gptfast.train", argument_default=S,
        description="Train a GPT on your text: prepares the data if needed, trains, writes a run directory "
        "(checkpoints last/ and best/, config.json, metrics.jsonl/csv, loss.png).",
        epilog="Defaults < --config file < command line.  Multi-GPU: torchrun --nproc_per_node N -m gptfast.train ...",
    )
    run = p.add_argument_group("run")
    run.add_argument("--config", metavar="FILE", help="settings from a TOML (.toml) or JSON file "
                     "(e.g. a run's config.json), field names as in config.json")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue a run exactly (its last/ checkpoint)")
    run.add_argument("--init-from", metavar="RUN_DIR", help="start a new run from trained weights (fine-tuning)")
    run.add_argument("--out", metavar="DIR", help="run directory (default: out/runs/<data>-<preset>)")

    data = p.add_argument_group("data (prepared into out/data/<corpus>-<tokenizer>, reused while unchanged)")
    data.add_argument("--data", nargs="+", metavar="PATH", help="text files, folders, a WhatsApp export, a named "
                      "dataset, or a prepared dataset folder (default: the embedded corpus)")
    data.add_argument("--tokenizer", choices=KINDS, help="char or word level (default: word for chats, else char)")
    data.add_argument("--format", choices=FORMATS, help="corpus format (default: auto)")
    data.add_argument("--val-fraction", type=_number(float, 0, what="a fraction in [0, 1)"),
                      help="share of tokens held out for validation (default 0.1)")
    data.add_argument("--shuffle-sentences", type=NONNEG_INT, metavar="N",
                      help="shuffle chunks of N sentences before the split (LitteraGPT recipe; default: off)")
    data.add_argument("--lowercase", action="store_true", help="lowercase the text")
    data.add_argument("--min-count-chars", type=POS_INT, metavar="N", help="drop characters seen fewer than N times")
    data.add_argument("--min-count-tokens", type=POS_INT, metavar="N", help="rarer tokens become <UNK>")
    data.add_argument("--pattern", help="word-level regex")
    data.add_argument("--special", dest="specials", action="append", metavar="TOKEN", help="a special token (repeatable)")
    data.add_argument("--encoding-errors", choices=("strict", "replace"), help="undecodable bytes: stop or replace")

    model = p.add_argument_group("model (a preset plus overrides; vocab_size comes from the data)")
    model.add_argument("--preset", help=f"model preset: {', '.join(PRESETS)} (default tiny)")
    model.add_argument("--n-layer", type=POS_INT, metavar="N", help="transformer blocks")
    model.add_argument("--n-head", type=POS_INT, metavar="N", help="attention heads")
    model.add_argument("--n-embd", type=POS_INT, metavar="N", help="embedding width")
    model.add_argument("--block-size", type=POS_INT, metavar="N", help="context length")
    model.add_argument("--dropout", type=_dropout, metavar="P", help="dropout probability")
    model.add_argument("--bias", action=argparse.BooleanOptionalAction, help="biases in Linears and LayerNorms")
    model.add_argument("--pos-embedding", choices=("learned", "sinusoidal"), help="position embedding")
    model.add_argument("--tie-weights", action=argparse.BooleanOptionalAction, help="share embedding and lm_head")
    model.add_argument("--attention", choices=("auto", "sdpa", "triton", "reference"), help="attention backend")

    opt = p.add_argument_group("optimization")
    opt.add_argument("--batch-size", type=POS_INT, metavar="N", help="sequences per micro-batch per process (default 32)")
    opt.add_argument("--grad-accum", type=POS_INT, metavar="N", help="micro-batches per optimizer step (default 1)")
    opt.add_argument("--total-batch-size", type=POS_INT, metavar="N",
                     help="sequences per step over all processes; sets --grad-accum")
    opt.add_argument("--max-iters", type=NONNEG_INT, metavar="N", help="optimizer steps (default 2000)")
    opt.add_argument("--max-minutes", type=POS_FLOAT, metavar="M", help="wall-clock budget; stops, evaluates and saves")
    opt.add_argument("--lr", type=NONNEG_FLOAT, help="peak learning rate (default 1e-3)")
    opt.add_argument("--min-lr", type=NONNEG_FLOAT, help="cosine floor (default lr/10)")
    opt.add_argument("--warmup-iters", type=NONNEG_INT, metavar="N", help="linear warmup steps (default 100)")
    opt.add_argument("--lr-decay-iters", type=POS_INT, metavar="N", help="end of the cosine (default max-iters)")
    opt.add_argument("--lr-schedule", choices=LR_SCHEDULES, help="cosine (default) or constant (the seeds)")
    opt.add_argument("--weight-decay", type=NONNEG_FLOAT, help="AdamW decay on weight matrices (default 0.1)")
    opt.add_argument("--beta1", type=NONNEG_FLOAT, help="AdamW beta1 (default 0.9)")
    opt.add_argument("--beta2", type=NONNEG_FLOAT, help="AdamW beta2 (default 0.99)")
    opt.add_argument("--grad-clip", type=NONNEG_FLOAT, help="clip the gradient norm (default 1.0, 0 = off)")
    opt.add_argument("--seed", type=int, help="seed of init, batches and dropout (default 1337)")

    ev = p.add_argument_group("evaluation and logging")
    ev.add_argument("--eval-interval", type=POS_INT, metavar="N", help="evaluate + checkpoint every N steps (default 250)")
    ev.add_argument("--eval-iters", type=POS_INT, metavar="N", help="batches per evaluation (default 50)")
    ev.add_argument("--log-interval", type=POS_INT, metavar="N", help="log every N steps (default 10)")
    ev.add_argument("--sample-tokens", type=NONNEG_INT, metavar="N", help="sample length at each evaluation (0 = none)")
    ev.add_argument("--plot", action=argparse.BooleanOptionalAction, help="refresh loss.png at each evaluation (default on)")
    ev.add_argument("--quiet", action="store_true", help="no progress output (evaluations still print)")
    ev.add_argument("--plain", action="store_true", help="one line per log interval instead of a progress bar "
                    "(automatic when stderr is not a terminal)")

    hw = p.add_argument_group("hardware")
    hw.add_argument("--device", help=f"{', '.join(DEVICES)} or cuda:N (default auto: CUDA if available)")
    hw.add_argument("--dtype", choices=DTYPES, help="autocast dtype (default: bfloat16/float16 on GPU, float32 on CPU)")
    hw.add_argument("--compile", action=argparse.BooleanOptionalAction, help="torch.compile (default: on for CUDA)")
    return p


RUN_FLAGS = ("config", "resume", "init_from", "quiet", "plain")


def config_from_args(args: argparse.Namespace) -> tuple:
    """(TrainConfig, resume dir or None, progress mode) from parsed arguments."""
    given: Dict[str, Any] = {k: v for k, v in vars(args).items() if k not in RUN_FLAGS}
    if "data" in given:
        given["data"] = [str(d) for d in given["data"]]
    file_values = load_config_file(args.config) if getattr(args, "config", None) else {}
    resume = getattr(args, "resume", None)
    if resume is not None:
        from gptfast.training.checkpoint import read_meta, resolve_checkpoint

        folder = resolve_checkpoint(resume)
        cfg = config_for_resume(read_meta(folder).get("train_config"), {**file_values, **given}, str(folder))
    else:
        cfg = TrainConfig.from_dict({**file_values, **given}, args.config if file_values else "<command line>")
        if getattr(args, "init_from", None):
            cfg.init_from = args.init_from
    progress = "quiet" if getattr(args, "quiet", False) else ("plain" if getattr(args, "plain", False) else "auto")
    return cfg, resume, progress


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    with exit_on_input_error("gptfast.train"):
        from gptfast.training import ddp
        from gptfast.training.loop import train

        cfg, resume, progress = config_from_args(args)
        try:
            result = train(cfg, resume=resume, progress=progress)
        except Exception as err:
            if not out_of_memory(err):
                raise
            block = cfg.model_config(vocab_size=2).block_size
            raise InputError(f"out of memory with --batch-size {cfg.batch_size} at block size {block}: lower "
                             "--batch-size (--grad-accum N keeps the batch the optimizer sees)") from None
        val = "-" if result.val_loss is None else (f"{result.val_loss:.4f}" if result.val_iter == result.iter
                                                     else f"{result.val_loss:.4f} (at iter {result.val_iter})")
        print(f"stopped ({result.stopped}) at iter {result.iter}: val loss {val}, best {result.best_val_loss:.4f}; "
              f"run directory {result.run_dir}")
        ddp.exit_finished_rank()


if __name__ == "__main__":
    main()
