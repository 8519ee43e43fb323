"""GPTConfig validation, presets and parameter counts."""
import pytest

from gptfast.config import PRESETS, ConfigError, GPTConfig, preset
from gptfast.errors import InputError


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(n_embd=4, n_head=8), "smaller than n_head"),
        (dict(vocab_size=0), "vocab_size must be a positive integer"),
        (dict(block_size=-3), "block_size must be a positive integer"),
        (dict(n_layer=0), "n_layer must be a positive integer"),
        (dict(n_head=2.0), "n_head must be a positive integer"),
        (dict(n_embd=True), "n_embd must be a positive integer"),
        (dict(dropout=1.0), "dropout must be a number in [0, 1)"),
        (dict(dropout=-0.1), "dropout must be a number in [0, 1)"),
        (dict(attn_dropout=1.5), "attn_dropout must be a number in [0, 1)"),
        (dict(pos_embedding="rotary"), "pos_embedding must be one of learned, sinusoidal"),
        (dict(attention="flash"), "attention must be one of auto, sdpa, triton, reference"),
        (dict(n_embd=33, n_head=3, pos_embedding="sinusoidal"), "sinusoidal positions need an even n_embd"),
        (dict(n_embd=32, n_head=4, attention="triton"), "supports head sizes 16..128"),
        (dict(n_embd=1032, n_head=4, attention="triton"), "= 258"),
    ],
)
def test_bad_config_is_one_clear_line(fields, message):
    with pytest.raises(ConfigError) as info:
        GPTConfig(**fields)
    text = str(info.value)
    print(text)
    assert message in text
    assert "\n" not in text
    # A ValueError for library callers, an InputError (exit 2, no traceback) for entry points.
    assert isinstance(info.value, ValueError) and isinstance(info.value, InputError)


def test_head_size_not_dividing_is_allowed_the_seed_way():
    cfg = preset("chat")
    assert (cfg.head_size, cfg.inner_dim) == (42, 252)
    # The range check only applies to the Triton backend: 42 is inside 16..128.
    assert GPTConfig(n_embd=256, n_head=6, attention="triton").head_size == 42


def test_dropout_fields_default_to_dropout():
    cfg = GPTConfig(dropout=0.2)
    assert (cfg.attn_dropout_p, cfg.resid_dropout_p, cfg.embd_dropout) == (0.2, 0.2, 0.0)
    cfg = GPTConfig(dropout=0.2, attn_dropout=0.0)
    assert (cfg.attn_dropout_p, cfg.resid_dropout_p) == (0.0, 0.2)
    # replace() re-derives: the override is not baked in.
    assert cfg.replace(dropout=0.1, attn_dropout=None).attn_dropout_p == 0.1


def test_unknown_preset_lists_known_names():
    with pytest.raises(ConfigError, match="unknown model preset 'gpt5'; known presets: quijote, littera, chat"):
        preset("gpt5")


def test_preset_overrides_and_dict_round_trip():
    cfg = preset("quijote", vocab_size=70, dropout=0.0)
    assert (cfg.vocab_size, cfg.dropout, cfg.n_embd) == (70, 0.0, 384)
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown field"):
        GPTConfig.from_dict({**cfg.to_dict(), "n_embed": 3})
    with pytest.raises(ConfigError, match="n_layer"):
        preset("tiny", n_layer=0)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds(name):
    cfg = preset(name)
    assert cfg.num_params() > 0


@pytest.mark.parametrize(
    "name, vocab, lo, hi",
    [
        ("quijote", 92, 10.75e6, 10.85e6),   # 10.81M with Don Quijote's 92 characters
        ("littera", 115, 19.25e6, 19.35e6),  # LitteraGPT's 19.3M
    ],
)
def test_seed_parameter_counts(name, vocab, lo, hi):
    n = preset(name, vocab_size=vocab).num_params()
    print(f"{name} (vocab {vocab}): {n:,} parameters")
    assert lo < n < hi


def test_quijote_is_the_lecture_model():
    # karpathy's gpt.py on tiny-shakespeare (vocab 65) prints "10.788929 M parameters".
    assert preset("quijote", vocab_size=65).num_params() == 10_788_929
