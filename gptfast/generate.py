"""python -m gptfast.generate: sample from a trained run, or chat with it.

    python -m gptfast.generate --run out/runs/el_quijote-tiny --prompt "En un lugar" --max-new-tokens 300
    python -m gptfast.generate --run RUN --num-samples 4 --temperature 0.8 --top-k 40 --seed 7
    python -m gptfast.generate --run RUN --prompt "Sancho" --show-probs 5     # the candidates at each step
    python -m gptfast.generate --run RUN --json                               # tokens, text and timing as JSON
    python -m gptfast.generate --run out/runs/chat-chat --chat --as Alice     # the WhatsApp REPL

Engines (--engine): cpp (the C++ KV-cached engine, the default on a CPU),
torch (the KV-cached PyTorch loop on the model's device, the default on
CUDA), reference (the seeds' loop: a full forward per token).  All three use
the same counter-based sampler, so on a CPU they print the same text for the
same seed.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

from gptfast.cli import NONNEG_FLOAT, NONNEG_INT, POS_FLOAT, POS_INT, ArgumentParser
from gptfast.engine import DTYPES, ENGINES
from gptfast.errors import InputError, exit_on_input_error, out_of_memory, unknown_words_note

DEVICES = ("auto", "cpu", "cuda")


def _top_p(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m gptfast.generate",
                       description="Sample text from a trained gptfast run, or chat with a model trained on a "
                       "chat export (--chat).")
    src = p.add_argument_group("model")
    src.add_argument("--run", required=True, metavar="PATH", help="run directory (or one of its checkpoint folders)")
    src.add_argument("--checkpoint", choices=("best", "last"), help="which checkpoint of the run (default: best, "
                     "else last)")
    src.add_argument("--engine", choices=ENGINES, default="auto", help="cpp, torch or reference (default: cpp on "
                     "a CPU, torch on CUDA)")
    src.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="weights: float32, or 16-bit "
                     "(half the bytes per token; float32 arithmetic in the cpp engine)")
    src.add_argument("--kv-dtype", choices=tuple(DTYPES), help="cpp engine: how keys and values are cached "
                     "(default: as --dtype; 16-bit halves what attention reads at long contexts or large batches)")
    src.add_argument("--threads", type=POS_INT, metavar="N", help="CPU threads (default: one per physical core)")
    src.add_argument("--device", choices=DEVICES, default="auto", help="where the torch engines run")
    src.add_argument("--compile", action="store_true", help="CUDA: capture the decode step with "
                     "torch.compile(mode='reduce-overhead') (slow first tokens, faster after)")

    text = p.add_argument_group("prompt and output")
    text.add_argument("--prompt", metavar="TEXT", help="text to continue (default: start of a line)")
    text.add_argument("--prompt-file", metavar="FILE", help="read the prompt from a UTF-8 file ('-': stdin)")
    text.add_argument("--num-samples", type=POS_INT, default=1, metavar="N", help="independent samples (default 1)")
    text.add_argument("--max-new-tokens", type=POS_INT, default=256, metavar="N", help="tokens per sample "
                      "(default 256)")
    text.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop at this text, or at this "
                      "special token such as <END> (repeatable)")
    text.add_argument("--stream", action=argparse.BooleanOptionalAction, help="print tokens as they come "
                      "(default: on in a terminal)")
    text.add_argument("--json", action="store_true", help="one JSON object with texts, tokens and timing")
    text.add_argument("--show-probs", type=POS_INT, nargs="?", const=5, metavar="K", help="print the K most "
                      "likely candidates at each step (default K 5; with --json, as JSON); one sample, drawn by "
                      "the PyTorch KV-cache loop with the same sampler, so the same text as the engines")

    samp = p.add_argument_group("sampling")
    samp.add_argument("--temperature", type=NONNEG_FLOAT, default=0.8, metavar="T", help="0 = greedy (default 0.8)")
    samp.add_argument("--top-k", type=NONNEG_INT, default=0, metavar="K", help="keep the K most likely (0 = off)")
    samp.add_argument("--top-p", type=_top_p, default=1.0, metavar="P", help="nucleus sampling, P in (0, 1] "
                      "(1 = off)")
    samp.add_argument("--repetition-penalty", type=POS_FLOAT, default=1.0, metavar="R", help="> 1 discourages "
                      "tokens already in the text (1 = off)")
    samp.add_argument("--ban", action="append", default=[], metavar="TOKEN", help="never emit this token "
                      "(repeatable; <UNK> is always banned)")
    samp.add_argument("--seed", type=NONNEG_INT, metavar="N", help="sampling seed (default 1337; random in --chat)")

    chat = p.add_argument_group("chat (models trained on a chat export)")
    chat.add_argument("--chat", action="store_true", help="interactive chat: you write as one contact, the model "
                      "answers as the others")
    chat.add_argument("--as", dest="user", metavar="NAME", help="the contact you write as (default: the first)")
    chat.add_argument("--turns", type=POS_INT, default=1, metavar="N", help="model messages after each of yours")
    chat.add_argument("--max-turn-tokens", type=POS_INT, default=64, metavar="N", help="longest model message")
    return p


# ------------------------------------------------------------------ helpers
def _read_prompt(args) -> str:
    if args.prompt is not None and args.prompt_file is not None:
        raise InputError("give --prompt or --prompt-file, not both")
    if args.prompt_file is None:
        return args.prompt or ""
    path = Path(args.prompt_file)
    try:
        data = sys.stdin.buffer.read() if args.prompt_file == "-" else path.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read the prompt ({err.strerror or err})", path=str(path)) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        where = "<stdin>" if args.prompt_file == "-" else str(path)
        raise InputError("the prompt is not UTF-8 text", path=where, position=f"byte {err.start}") from None


def _token_id(tokenizer, token: str, option: str) -> int:
    if token not in tokenizer.stoi:
        raise InputError(f"{option} {token!r} is not a token of this model's vocabulary")
    return tokenizer.stoi[token]


def _stops(tokenizer, stops: Sequence[str]) -> Tuple[List[int], List[str]]:
    """--stop values: special tokens (and single tokens of a word vocabulary
    such as "<END>") stop by id; anything else is matched in the text."""
    ids, strings = [], []
    for s in stops:
        if not s:
            raise InputError("--stop needs a non-empty text")
        if s in tokenizer.specials or s == tokenizer.unk_token:
            ids.append(tokenizer.stoi[s])
        else:
            strings.append(s)
    return ids, strings


def _device(args) -> str:
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available")
    if args.device == "auto":
        return "cuda" if torch.cuda.is_available() and args.engine != "cpp" else "cpu"
    return args.device


def _describe(engine) -> str:
    kv = f", {engine.kv_dtype} KV cache" if hasattr(engine, "kv_dtype") else ""
    return f"engine {engine.name}, {engine.dtype} weights{kv}, {engine.threads} threads"


@contextlib.contextmanager
def _memory_for_samples(engine, samples: int) -> Iterator[None]:
    """Out of memory while the engine allocates the samples' key/value caches
    (a large --num-samples): one line that says how much they need."""
    try:
        yield
    except Exception as err:
        if not out_of_memory(err):
            raise
        c = engine.config
        kv_dtype = getattr(engine, "kv_dtype", engine.dtype)
        per_sample = c.n_layer * c.block_size * c.n_embd * 2 * (4 if kv_dtype == "float32" else 2)
        raise InputError(f"--num-samples {samples}: out of memory; their key/value caches need "
                         f"{samples * per_sample / 2**30:.1f} GiB ({kv_dtype}); ask for fewer samples"
                         + (", or --kv-dtype float16" if kv_dtype == "float32" else "")) from None


# --------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    with exit_on_input_error("gptfast.generate"):
        import torch

        from gptfast.engine import make_engine
        from gptfast.sampling import SamplingParams
        from gptfast.trained import load_trained

        prompt_text = _read_prompt(args)
        if args.threads:
            cpus = os.cpu_count() or 1
            if args.threads > cpus:  # (the engine's threads spin between sections: extra ones only slow it)
                raise InputError(f"--threads {args.threads}: this machine has {cpus} logical CPUs")
            torch.set_num_threads(args.threads)
        device = _device(args)
        trained = load_trained(args.run, args.checkpoint, device=device)
        tok = trained.tokenizer
        runs_torch = args.engine in ("torch", "reference") or (args.engine == "auto" and device == "cuda")
        if args.dtype != "float32" and runs_torch:  # (the cpp engine rounds its own copy)
            trained.model.to(DTYPES[args.dtype])
        banned = [_token_id(tok, t, "--ban") for t in args.ban]
        if tok.unk_id is not None:
            banned.append(tok.unk_id)  # the seed never emits <UNK>: masked, not resampled
        params = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                repetition_penalty=args.repetition_penalty, banned_ids=tuple(sorted(set(banned))))
        params.check_vocab(tok.vocab_size)
        engine = make_engine(args.engine, trained.model, dtype=args.dtype, threads=args.threads,
                             compile=args.compile, kv_dtype=args.kv_dtype)

        if args.chat:
            from gptfast.chat import ChatSession, random_seed, run_chat

            session = ChatSession(engine, tok, trained.contacts, user=args.user, params=params, turns=args.turns,
                                  max_turn_tokens=args.max_turn_tokens,
                                  seed=random_seed() if args.seed is None else args.seed)
            run_chat(session)
            return

        seed = 1337 if args.seed is None else args.seed
        from gptfast.training.sample import start_ids

        prompt = [int(t) for t in tok.encode(prompt_text, source="<prompt>")] if prompt_text else start_ids(tok)
        note = unknown_words_note(tok, prompt_text, "the prompt") if prompt_text else None
        if note:
            print(note, file=sys.stderr)
        stop_ids, stop_strings = _stops(tok, args.stop)
        if args.show_probs:
            _show_probs(trained, prompt, prompt_text, params, seed, args, stop_ids, stop_strings)
            return
        stream = (sys.stdout.isatty() if args.stream is None else args.stream) and not args.json
        _generate(engine, tok, prompt, prompt_text, params, seed, stop_ids, stop_strings, stream, args)


def _show_probs(trained, prompt, prompt_text, params, seed, args, stop_ids, stop_strings) -> None:
    from gptfast import probs
    from gptfast.streaming import render

    rows = probs.iter_step_probs(trained.model, prompt, args.max_new_tokens, params, seed, args.show_probs, stop_ids)
    tok = trained.tokenizer
    context = prompt if prompt_text else []   # as _generate shows it: decoded with the new tokens
    if args.json:
        steps = probs.as_json(rows, tok.vocab)
        chosen = [s["id"] for s in steps]
        text = render(tok.decode, context, chosen, stop_strings)[0]
        print(json.dumps({"prompt": prompt_text, "text": text, "completion": tok.decode(chosen), "steps": steps},
                         ensure_ascii=False))
    else:
        chosen = probs.write_table(rows, tok.vocab, sys.stdout)
        print("\n" + render(tok.decode, context, chosen, stop_strings)[0])


def _generate(engine, tok, prompt, prompt_text, params, seed, stop_ids, stop_strings, stream, args) -> None:
    from gptfast.streaming import TextStream, render

    context = prompt if prompt_text else []   # shown with each sample (not the implicit start token)
    common = dict(stop_ids=stop_ids, stop_strings=stop_strings, decode=tok.decode,
                  stream_decoder=tok.stream_decoder)
    first_token = []
    t0 = time.perf_counter()

    def mark_first(fresh):
        if not first_token and any(fresh):
            first_token.append(time.perf_counter() - t0)

    if stream:
        # The samples run as one batch (copies of the prompt share its prefill);
        # the first streams as it comes and the others follow when the batch ends.
        printer = TextStream(tok.stream_decoder(), sys.stdout, stop_strings, context)

        def show_first_sample(fresh):
            mark_first(fresh)
            printer.feed(fresh[0])

        with _memory_for_samples(engine, args.num_samples):
            results = engine.generate([prompt] * args.num_samples, args.max_new_tokens, params, seed,
                                      callback=show_first_sample, **common)
        printer.finish()
        sys.stdout.write("\n")
    else:
        # The C++ engine times its first token itself; a per-token callback would only slow it.
        with _memory_for_samples(engine, args.num_samples):
            results = engine.generate([prompt] * args.num_samples, args.max_new_tokens, params, seed,
                                      callback=None if engine.name == "cpp" else mark_first, **common)
    seconds = time.perf_counter() - t0
    new_tokens = sum(len(r.tokens) for r in results)
    first = engine.last_stats.get("first_token_s") if not stream else None
    first = first if first is not None else (first_token[0] if first_token else None)
    timing = {"new_tokens": new_tokens, "seconds": seconds, "tokens_per_second": new_tokens / max(seconds, 1e-9),
              "first_token_s": first, "prompt_tokens": len(prompt), "engine": _describe(engine)}
    texts = [render(tok.decode, context, r.tokens, stop_strings)[0] for r in results]
    if args.json:
        samples = [{"text": text, "completion": r.text, "tokens": r.tokens, "finish_reason": r.finish_reason}
                   for text, r in zip(texts, results)]
        print(json.dumps({"prompt": prompt_text, "seed": seed, "samples": samples, **timing}, ensure_ascii=False))
        return
    if stream:  # the first sample is on screen already
        for text in texts[1:]:
            print("-" * 40 + "\n" + text)
    else:
        print(("\n" + "-" * 40 + "\n").join(texts))
    first_ms = f"; first token {first * 1000:.0f} ms" if first is not None else ""
    print(f"{new_tokens} tokens in {seconds:.2f} s: {timing['tokens_per_second']:,.0f} tokens/s "
          f"({timing['engine']}{first_ms})", file=sys.stderr)


if __name__ == "__main__":
    main()
