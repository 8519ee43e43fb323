"""python -m gptfast: the quickstart main job, offline, on a CPU, in ~2-3 minutes.

1. prepares a token dataset from the embedded default corpus (or --data),
2. trains the `tiny` preset briefly (a fixed number of steps, capped by a
   wall-clock budget) into out/runs/quickstart,
3. prints a sample of generated text (the model's own KV-cached sampler in
   plain torch; no dependency on the C++ engine).
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from gptfast.cli import ArgumentParser, positive_int
from gptfast.errors import exit_on_input_error


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m gptfast",
                       description="Quickstart: prepare the embedded corpus (or --data), train the tiny preset "
                       "for a couple of minutes, print generated text.  See python -m gptfast.train --help "
                       "for real runs.")
    p.add_argument("--data", nargs="+", metavar="PATH", help="your text instead of the embedded corpus")
    p.add_argument("--max-iters", type=positive_int, default=600, help="training steps (default 600)")
    p.add_argument("--max-minutes", type=float, default=2.0, help="wall-clock cap on training (default 2)")
    p.add_argument("--out", default="out/runs/quickstart", help="run directory (default out/runs/quickstart)")
    p.add_argument("--sample-tokens", type=positive_int, default=400, help="length of the final sample")
    return p


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    with exit_on_input_error("gptfast"):
        from gptfast.training.config import TrainConfig
        from gptfast.training.data import get_dataset
        from gptfast.training.loop import train
        from gptfast.training.sample import sample_text

        cfg = TrainConfig(data=args.data, preset="tiny", max_iters=args.max_iters, max_minutes=args.max_minutes,
                          lr=2e-3, warmup_iters=50, eval_interval=200, eval_iters=20, log_interval=50,
                          sample_tokens=120, out=args.out)
        cfg.validate()
        print("gptfast quickstart: 1/3 preparing the dataset", file=sys.stderr)
        info = get_dataset(cfg.data, cfg.prepare_options())
        print(info.summary())
        cfg.data = [str(info.path)]  # train on the folder just prepared (no second freshness check)
        print(f"gptfast quickstart: 2/3 training the tiny preset ({args.max_iters} steps, "
              f"at most {args.max_minutes:g} minutes)", file=sys.stderr)
        result = train(cfg)
        print(f"trained {result.iter} steps: val loss {result.val_loss:.4f}; run directory {result.run_dir}")
        print("gptfast quickstart: 3/3 sampling", file=sys.stderr)
        print(sample_text(result.model, result.tokenizer, args.sample_tokens, seed=0))
        print(f"\nnext: python -m gptfast.generate --run {result.run_dir} --prompt \"The \"   (more samples)\n"
              f"      python -m gptfast.train --data YOUR_TEXT.txt --max-minutes 10   "
              f"(or --resume {result.run_dir})", file=sys.stderr)


if __name__ == "__main__":
    main()
