"""python -m gptfast.prepare: turn a corpus into a token dataset.

    python -m gptfast.prepare --data el_quijote.txt --tokenizer char
    python -m gptfast.prepare --data chat.txt            # WhatsApp export: word level, contacts as tokens
    python -m gptfast.prepare --data quijote             # named dataset: downloaded once, verified, cached
    python -m gptfast.prepare                            # embedded default corpus (offline)
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

from gptfast.cli import ArgumentParser, positive_int
from gptfast.data import named
from gptfast.data.corpus import FORMATS, resolve
from gptfast.data.dataset import PrepareOptions, prepare_dataset
from gptfast.errors import exit_on_input_error
from gptfast.tokenizer import KINDS

DEFAULT_OUT_ROOT = Path("out") / "data"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m gptfast.prepare",
        description="Prepare a token dataset (train.bin, val.bin, meta.json) from text files, "
        "a folder, a WhatsApp export, a named dataset or the embedded default.",
    )
    src = p.add_argument_group("corpus")
    src.add_argument("--data", nargs="+", metavar="PATH",
                     help="text files or folders, a WhatsApp export, or a dataset name "
                     f"({', '.join(sorted(named.DATASETS))}); default: the embedded corpus")
    src.add_argument("--format", choices=FORMATS, default="auto", help="corpus format (default: auto-detect)")
    src.add_argument("--encoding-errors", choices=("strict", "replace"), default="strict",
                     help="what to do with bytes that are not UTF-8 (default: stop with an error)")
    src.add_argument("--lowercase", action="store_true", help="lowercase the text")
    src.add_argument("--min-count-chars", type=positive_int, default=1, metavar="N",
                     help="drop characters seen fewer than N times (default 1: keep all)")
    tok = p.add_argument_group("tokenizer")
    tok.add_argument("--tokenizer", choices=KINDS, default=None,
                     help="char or word level (default: word for chats, char otherwise)")
    tok.add_argument("--pattern", default=None, help=r"word-level regex (default: the seed's \d|\w+|[^\s])")
    tok.add_argument("--special", action="append", default=[], metavar="TOKEN",
                     help="a special token, matched before the pattern (repeatable)")
    tok.add_argument("--min-count-tokens", type=positive_int, default=1, metavar="N",
                     help="tokens seen fewer than N times become <UNK> (default 1)")
    split = p.add_argument_group("split and output")
    split.add_argument("--out", type=Path, default=None,
                       help=f"dataset directory (default: {DEFAULT_OUT_ROOT}/<corpus>-<tokenizer>)")
    split.add_argument("--val-fraction", type=float, default=0.1, help="share of tokens held out (default 0.1)")
    split.add_argument("--shuffle-sentences", type=int, default=0, metavar="N",
                       help="shuffle chunks of N sentences before splitting (LitteraGPT recipe; default: off)")
    split.add_argument("--seed", type=int, default=1337, help="seed of the sentence shuffle")
    split.add_argument("--threads", type=positive_int, default=None, help="encoding threads (default: all cores)")
    split.add_argument("--quiet", action="store_true", help="print only the final statistics")
    return p


def options_from_args(args) -> PrepareOptions:
    return PrepareOptions(
        tokenizer=args.tokenizer, format=args.format, val_fraction=args.val_fraction,
        shuffle_sentences=args.shuffle_sentences, seed=args.seed, lowercase=args.lowercase,
        min_count_chars=args.min_count_chars, min_count_tokens=args.min_count_tokens,
        pattern=args.pattern, specials=args.special, encoding_errors=args.encoding_errors,
        threads=args.threads,
    )


def default_out_dir(data: Optional[Sequence[str]], tokenizer: Optional[str]) -> Path:
    return DEFAULT_OUT_ROOT / f"{resolve(data).name}-{tokenizer or 'auto'}"


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    with exit_on_input_error("gptfast.prepare"):
        options = options_from_args(args)
        options.validate()  # bad options fail before any file is read or downloaded
        out = args.out or default_out_dir(args.data, args.tokenizer)
        log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
        info = prepare_dataset(args.data, out, options, log=log)
        print(info.summary())


if __name__ == "__main__":
    main()
