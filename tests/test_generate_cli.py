"""python -m gptfast.generate on small trained runs: engines agree, output
modes (stream, JSON, --show-probs) tell the same story, bad input exits 2."""
from __future__ import annotations

import json
import pickle

import pytest

from gptfast import generate as cli
from gptfast.trained import load_trained
from generate_helpers import char_run, needs_cpp_engine
from train_helpers import one_thread  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return char_run(tmp_path_factory.mktemp("generate"))


def main(capsys, *argv):
    cli.main([str(a) for a in argv])
    return capsys.readouterr()


def as_json(capsys, run, *argv):
    return json.loads(main(capsys, "--run", run, "--json", *argv).out)


@needs_cpp_engine
@pytest.mark.parametrize("engine", ["torch", "reference"])
@pytest.mark.parametrize("temperature", ["0", "0.9"])
def test_engines_print_the_same_text(capsys, run, engine, temperature):
    # The reference engine is the seeds' loop, which crops the context every
    # step: the same text as the cached engines until the block (16) is full.
    n = 40 if engine == "torch" else 10
    common = ["--prompt", "Quien ", "--max-new-tokens", n, "--temperature", temperature, "--seed", 3,
              "--no-stream"]
    cpp = main(capsys, "--run", run, "--engine", "cpp", *common).out
    other = main(capsys, "--run", run, "--engine", engine, *common).out
    assert cpp == other and cpp.startswith("Quien ")


@needs_cpp_engine
def test_a_16bit_kv_cache(capsys, run):
    args = ["--run", run, "--engine", "cpp", "--prompt", "Quien ", "--max-new-tokens", 20, "--no-stream"]
    out = main(capsys, *args, "--kv-dtype", "float16")
    assert out.out.startswith("Quien ") and "float32 weights, float16 KV cache" in out.err
    assert "float16 weights, float16 KV cache" in main(capsys, *args, "--dtype", "float16").err


def test_json_output(capsys, run):
    out = as_json(capsys, run, "--prompt", "Mas vale", "--max-new-tokens", 25, "--num-samples", 3, "--seed", 9)
    trained = load_trained(run)
    assert len(out["samples"]) == 3 and out["new_tokens"] == 75 and out["prompt_tokens"] == 8
    for s in out["samples"]:
        assert len(s["tokens"]) == 25 and s["finish_reason"] == "length"
        assert s["completion"] == trained.tokenizer.decode(s["tokens"]) and s["text"] == "Mas vale" + s["completion"]
    assert out["tokens_per_second"] > 0 and out["first_token_s"] > 0
    again = as_json(capsys, run, "--prompt", "Mas vale", "--max-new-tokens", 25, "--num-samples", 3, "--seed", 9)
    assert again["samples"] == out["samples"]               # a seed reproduces
    other = as_json(capsys, run, "--prompt", "Mas vale", "--max-new-tokens", 25, "--num-samples", 3, "--seed", 10)
    assert other["samples"] != out["samples"]


@pytest.mark.parametrize("engine", ["auto", "torch"])
@pytest.mark.parametrize("stop", [[], ["--stop", "e"]])
def test_streaming_prints_what_the_batch_prints(capsys, run, engine, stop):
    """Streaming shows the first sample as it comes and the others after the
    batch: the same text as --no-stream, and as one sample at a time."""
    args = ["--run", run, "--engine", engine, "--prompt", "Dime ", "--max-new-tokens", 30, "--seed", 4, *stop]
    streamed = main(capsys, *args, "--num-samples", 3, "--stream")
    batched = main(capsys, *args, "--num-samples", 3, "--no-stream")
    assert streamed.out == batched.out and streamed.out.count("-" * 40) == 2
    assert "tokens/s" in streamed.err and "tokens/s" in batched.err
    first = main(capsys, *args, "--num-samples", 1, "--stream").out
    assert streamed.out.startswith(first)


def test_stop_string_cuts_the_text(capsys, run):
    full = as_json(capsys, run, "--prompt", "A", "--max-new-tokens", 80, "--seed", 1)["samples"][0]
    assert "a" in full["completion"]
    cut = as_json(capsys, run, "--prompt", "A", "--max-new-tokens", 80, "--seed", 1, "--stop", "a")["samples"][0]
    assert cut["finish_reason"] == "stop_string"
    assert cut["completion"] == full["completion"][: full["completion"].index("a")]
    streamed = main(capsys, "--run", run, "--prompt", "A", "--max-new-tokens", 80, "--seed", 1, "--stop", "a",
                    "--stream").out
    assert streamed == "A" + cut["completion"] + "\n"


def test_show_probs_agrees_with_generate(capsys, run):
    args = ["--prompt", "El que", "--max-new-tokens", 12, "--seed", 5, "--temperature", "0.8", "--top-k", 10]
    probs = as_json(capsys, run, "--show-probs", 4, *args)
    sample = as_json(capsys, run, *args)["samples"][0]
    assert [s["id"] for s in probs["steps"]] == sample["tokens"]
    assert (probs["text"], probs["completion"]) == (sample["text"], sample["completion"])
    for s in probs["steps"]:
        ps = [c["prob"] for c in s["candidates"]]
        assert len(ps) <= 4 and ps == sorted(ps, reverse=True) and sum(ps) <= 1 + 1e-9
        assert s["prob"] > 0
    table = main(capsys, "--run", run, "--show-probs", 4, *args).out.splitlines()
    assert table[0].split()[:3] == ["step", "chosen", "p"] and len(table) >= 13
    assert table[-1] == sample["text"]


def test_greedy_show_probs_shows_the_model_distribution(capsys, run):
    probs = as_json(capsys, run, "--show-probs", 3, "--prompt", "Al", "--max-new-tokens", 5, "--temperature", 0)
    for s in probs["steps"]:
        assert s["id"] == s["candidates"][0]["id"] and s["prob"] < 1.0


def write_pickle(path):
    path.mkdir()
    (path / "checkpoint.json").write_text(json.dumps({"format": "gptfast.checkpoint", "model_config": {},
                                                      "tokenizer": {}, "iter": 0}))
    (path / "model.safetensors").write_bytes(pickle.dumps({"w": [1, 2, 3]}))
    return path


@pytest.mark.parametrize("argv, expected", [
    (["--run", "{tmp}/missing"], "no such run directory"),
    (["--run", "{run}", "--prompt", "Quien €"], "(character 6): character '€'"),
    (["--run", "{run}", "--top-p", "0"], "--top-p: expected a number in (0, 1]"),
    (["--run", "{run}", "--top-p", "1.5"], "--top-p: expected a number in (0, 1]"),
    (["--run", "{run}", "--temperature", "-0.5"], "--temperature: expected a number >= 0"),
    (["--run", "{run}", "--top-k", "x"], "--top-k"),
    (["--run", "{run}", "--top-k", "100000000000"], "--top-k: expected an integer in 0..2147483647"),
    (["--run", "{run}", "--max-new-tokens", "100000000000"], "expected a positive integer up to 2147483647"),
    (["--run", "{run}", "--ban", "<nope>"], "--ban '<nope>' is not a token"),
    (["--run", "{run}", "--chat"], "--chat needs a model trained on a chat export"),
    (["--run", "{run}", "--prompt-file", "{tmp}/none.txt"], "none.txt: cannot read the prompt"),
    (["--run", "{run}", "--prompt-file", "{tmp}/latin1.txt"], "latin1.txt (byte 3): the prompt is not UTF-8"),
    (["--run", "{run}", "--prompt", "a", "--prompt-file", "{tmp}/latin1.txt"], "not both"),
    (["--run", "{run}/last", "--engine", "gpu"], "--engine: invalid choice"),
    (["--run", "{run}", "--threads", "100000"], "--threads 100000: this machine has"),
    (["--run", "{run}", "--engine", "torch", "--kv-dtype", "float16"], "--kv-dtype applies to the cpp engine"),
    (["--run", "{tmp}/pickled"], "never unpickles"),
    (["--run", "{tmp}"], "not a gptfast run directory"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, run, tmp_path, argv, expected):
    (tmp_path / "latin1.txt").write_bytes("Qui\xe9n".encode("latin-1"))
    write_pickle(tmp_path / "pickled")
    argv = [a.format(tmp=tmp_path, run=run) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expected in err, err


@needs_cpp_engine
@pytest.mark.parametrize("stream", ["--stream", "--no-stream"])
def test_out_of_memory_for_many_samples_is_one_line(capsys, run, monkeypatch, stream):
    """The engine cannot allocate the caches of a huge --num-samples (the
    C++ std::bad_alloc arrives as MemoryError): one line with what they
    need, exit code 2, no traceback."""
    from gptfast.engine import CppEngine

    def no_memory(self, *args, **kwargs):
        raise MemoryError("std::bad_alloc")

    monkeypatch.setattr(CppEngine, "generate", no_memory)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--run", str(run), "--num-samples", "100000", stream])
    c = load_trained(run).model.config
    gib = 100000 * c.n_layer * c.block_size * c.n_embd * 2 * 4 / 2**30
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert f"--num-samples 100000: out of memory; their key/value caches need {gib:.1f} GiB (float32)" in err


def test_prompt_from_stdin(capsys, run, monkeypatch):
    """--prompt-file - reads the prompt from stdin: the same text as --prompt;
    bytes that are not UTF-8 name <stdin> and the byte."""
    import io

    common = ["--max-new-tokens", 12, "--seed", 2, "--no-stream"]
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO("Quien ".encode())))
    piped = main(capsys, "--run", run, "--prompt-file", "-", *common).out
    assert piped == main(capsys, "--run", run, "--prompt", "Quien ", *common).out and piped.startswith("Quien ")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO("Qui\xe9n".encode("latin-1"))))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--run", str(run), "--prompt-file", "-"])
    assert exit_info.value.code == 2 and "<stdin> (byte 3): the prompt is not UTF-8" in capsys.readouterr().err


def test_checkpoint_choice_and_fallback(run, tmp_path):
    assert load_trained(run).path.name == "best"
    assert load_trained(run, "last").path.name == "last"
    import shutil

    shutil.copytree(run / "last", tmp_path / "only-last" / "last")
    assert load_trained(tmp_path / "only-last").path.name == "last"


STREAM_TEXT = "¿Qué? Dijo: \"l'homme\" (no), ¡sí! 3.14 d'Artagnan's end.\nOtra línea, ok. Dijo: \"sí\"."


@pytest.mark.parametrize("kind", ["char", "word"])
def test_text_stream_prints_exactly_the_final_text(kind):
    """Fed one token at a time, the stream prints decode(all tokens) and
    never a character it would have to take back."""
    import io

    from gptfast.streaming import TextStream
    from gptfast.tokenizer import Tokenizer

    tok = Tokenizer.fit(STREAM_TEXT, kind=kind)
    ids = [int(i) for i in tok.encode(STREAM_TEXT)]
    out = io.StringIO()
    stream = TextStream(tok.stream_decoder(), out)
    for t in ids:
        stream.feed([t])
        assert tok.decode(ids).startswith(out.getvalue())
    assert stream.finish() == out.getvalue() == tok.decode(ids)


@pytest.mark.parametrize("kind", ["char", "word"])
@pytest.mark.parametrize("stops", [[], ["Dijo"], ["sí", "ok."], ["\"\n"], ["end.\nOtra"], ["nowhere"]])
def test_text_stream_equals_render_in_any_chunks(kind, stops):
    """A context (its text printed, never searched for stops), stop strings
    that span tokens, and random chunk sizes: the stream prints what render
    returns for the same tokens, and nothing it would take back."""
    import io
    import random

    from gptfast.streaming import TextStream, render
    from gptfast.tokenizer import Tokenizer

    tok = Tokenizer.fit(STREAM_TEXT, kind=kind)
    ids = [int(i) for i in tok.encode(STREAM_TEXT)]
    rng = random.Random(len(stops) + len(kind))
    for cut in (0, 1, 5, len(ids) // 2):
        context, tokens = ids[:cut], ids[cut:]
        expected, _ = render(tok.decode, context, tokens, stops)
        out = io.StringIO()
        stream = TextStream(tok.stream_decoder(), out, stops, context)
        i = 0
        while i < len(tokens):
            n = rng.randint(1, 4)
            stream.feed(tokens[i:i + n])
            i += n
            assert expected.startswith(out.getvalue())
        assert stream.finish() == out.getvalue() == expected
