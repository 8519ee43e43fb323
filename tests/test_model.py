"""The fast GPT against the seed-style reference model with the same weights.

Tolerances are relative to the largest magnitude of the reference tensor
(max|fast - ref| / max|ref|): 1e-10 in float64, 1e-5 in float32.  Diffs are
printed before asserting (run with -s to see them)."""
import os

import pytest
import torch

from gptfast.config import ConfigError, GPTConfig, preset
from gptfast.model import GPT, KVCache, format_parameter_table, parameter_table, resolve_backend
from gptfast.reference.model import GPTLanguageModel
from gptfast.weights_mapping import fast_to_reference, reference_to_fast

# Triton kernels run on the CPU through the interpreter (must be set before
# Triton compiles anything; harmless when the kernels are absent).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: a second intra-op thread gains nothing, and on a
    shared, busy machine spin-waiting OpenMP threads make the tests ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TOL = {torch.float64: 1e-10, torch.float32: 1e-5}

# name -> (config, batch, T): odd shapes on purpose.
CASES = {
    # head size 42 (256 // 6), attention inner dim 252 != n_embd.
    "chat-dims": (preset("chat", vocab_size=13, dropout=0.0), 2, 17),
    # littera widths and its 528 block, one layer, a sequence of 130.
    "littera-1layer": (preset("littera", vocab_size=29, n_layer=1, dropout=0.0), 1, 130),
    # every option away from the seed: no biases, tied head, sinusoidal, qkv bias.
    "options": (GPTConfig(vocab_size=19, block_size=24, n_layer=2, n_head=3, n_embd=48, bias=False,
                          qkv_bias=True, tie_weights=True, pos_embedding="sinusoidal"), 3, 21),
    "tiny": (preset("tiny", vocab_size=23, n_layer=2), 3, 64),
}


def rel_err(fast: torch.Tensor, ref: torch.Tensor, floor: float = 1e-30) -> float:
    """max|fast - ref| / max|ref|; `floor` bounds the denominator from below for
    tensors that are zero in exact math (the key bias gradient: q.b_k adds the
    same constant to every score of a query, which softmax cancels)."""
    return ((fast - ref).abs().max() / ref.abs().max().clamp_min(floor)).item()


def make_pair(config: GPTConfig, dtype: torch.dtype, backend: str = "sdpa", seed: int = 0):
    """A reference model and a fast model holding the same weights, eval mode."""
    torch.manual_seed(seed)
    ref = GPTLanguageModel(config).to(dtype).eval()
    fast = GPT(config, backend=backend).to(dtype).eval()
    fast.load_state_dict(reference_to_fast(ref.state_dict()))
    return ref, fast


def grads(model) -> dict:
    return {name: p.grad for name, p in model.named_parameters()}


def check_parity(config, B, T, dtype, backend, tol=None):
    ref, fast = make_pair(config, dtype, backend)
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, config.vocab_size, (B, T), generator=g)
    targets = torch.randint(0, config.vocab_size, (B, T), generator=g)
    targets[0, :3] = -1  # padding positions are ignored by both
    logits_r, loss_r = ref(idx, targets)
    logits_f, loss_f = fast(idx, targets)
    loss_r.backward()
    loss_f.backward()
    grads_r = grads(ref)
    grads_f = fast_to_reference(grads(fast), config.n_head)
    assert grads_f.keys() == grads_r.keys()
    errors = {"logits": rel_err(logits_f, logits_r), "loss": rel_err(loss_f, loss_r)}
    floor = 1e-3 * max(g.abs().max().item() for g in grads_r.values())
    errors.update({f"grad {n}": rel_err(grads_f[n], grads_r[n], floor) for n in grads_r})
    worst = max(errors, key=errors.get)
    tol = tol or TOL[dtype]
    print(f"\n{backend} {dtype}: logits {errors['logits']:.2e}, loss {errors['loss']:.2e}, "
          f"worst {worst} {errors[worst]:.2e} (tol {tol:.0e})")
    bad = {n: e for n, e in errors.items() if not e <= tol}
    assert not bad, bad


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("backend", ["sdpa", "reference"])
@pytest.mark.parametrize("case", list(CASES))
def test_fast_matches_reference(case, backend, dtype):
    config, B, T = CASES[case]
    check_parity(config, B, T, dtype, backend)


@pytest.fixture(scope="module")
def flash_attention():
    try:
        from gptfast.kernels.flash_attention import flash_attention
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"gptfast.kernels.flash_attention not importable: {exc}")
    return flash_attention


@pytest.mark.parametrize(
    "config, B, T",
    [
        (GPTConfig(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=32), 2, 9),   # head size 16
        (preset("chat", vocab_size=13, n_layer=1, dropout=0.0), 2, 17),                    # head size 42
        (GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=32, bias=False), 2, 9),
    ],
    ids=["hs16", "hs42", "no-bias"],
)
def test_triton_backend_matches_reference(flash_attention, config, B, T):
    """Flash attention, LayerNorms fused with the residual adds and the fused
    cross-entropy, against the seed model: logits, loss and every gradient
    within the kernels' float32 contract (1e-4 relative)."""
    check_parity(config, B, T, torch.float32, "triton", tol=1e-4)


def test_triton_backend_runs_the_fused_kernels(flash_attention, monkeypatch):
    import gptfast.model as model_module

    calls = []
    real = model_module._fused()
    spy = type(real)(layer_norm=lambda *a, **k: calls.append("ln") or real.layer_norm(*a, **k),
                     cross_entropy=lambda *a, **k: calls.append("ce") or real.cross_entropy(*a, **k))
    monkeypatch.setattr(model_module, "_fused_ops", spy)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=32, attention="triton"))
    idx = torch.zeros(1, 5, dtype=torch.long)
    model(idx, idx)
    assert calls == ["ln"] * 5 + ["ce"]        # ln1 of block 0, then 2 fused adds per block; the loss
    calls.clear()
    model.fuse_ops = False
    model(idx, idx)
    assert calls == []


def test_triton_backend_unavailable_is_a_clear_construction_error(monkeypatch):
    import gptfast.model as model_module

    monkeypatch.setattr(model_module, "_flash_attention", None)
    monkeypatch.setattr(model_module, "_flash_import_error", ImportError("No module named 'triton'"))
    with pytest.raises(ConfigError, match="attention backend 'triton' is unavailable .*No module named 'triton'"):
        GPT(GPTConfig(n_embd=64, n_head=2), backend="triton")
    # "auto" does not need it off CUDA: it picks SDPA on the CPU.
    monkeypatch.delenv("GPTFAST_REFERENCE", raising=False)   # the suite may run under it
    cfg = GPTConfig(n_embd=64, n_head=2)
    idx = torch.zeros(1, 3, dtype=torch.long)
    assert resolve_backend("auto", cfg, idx) == "sdpa"
    monkeypatch.setenv("GPTFAST_REFERENCE", "1")  # the project-wide switch to the reference
    assert resolve_backend("auto", cfg, idx) == "reference"
    assert resolve_backend("sdpa", cfg, idx) == "sdpa"  # an explicit choice stands
    monkeypatch.delenv("GPTFAST_REFERENCE")
    GPT(cfg)(idx)


def test_unknown_backend_and_too_long_sequence():
    cfg = GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=2, n_embd=32)
    with pytest.raises(ConfigError, match="unknown attention backend 'flash'"):
        GPT(cfg, backend="flash")
    idx = torch.zeros(1, 9, dtype=torch.long)
    for model in (GPT(cfg), GPTLanguageModel(cfg)):
        with pytest.raises(ValueError, match="sequence of length 9 is longer than the model's block_size 8"):
            model(idx)


def test_state_dict_mapping_round_trip_and_seed_checkpoint():
    cfg = GPTConfig(vocab_size=9, block_size=8, n_layer=2, n_head=3, n_embd=48, qkv_bias=True)
    ref = GPTLanguageModel(cfg)
    sd = ref.state_dict()
    back = fast_to_reference(reference_to_fast(sd), cfg.n_head)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    # A seed checkpoint saved its causal masks; both models accept it.
    seed_sd = dict(sd, **{f"blocks.{i}.sa.heads.{h}.tril": torch.ones(8, 8).tril() for i in range(2) for h in range(3)})
    GPTLanguageModel(cfg).load_state_dict(seed_sd)
    GPT(cfg).load_state_dict(reference_to_fast(seed_sd))
    with pytest.raises(KeyError, match="unexpected parameter name 'blocks.0.mystery.weight'"):
        reference_to_fast({"blocks.0.mystery.weight": torch.zeros(1)})


# -- KV cache -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("backend", ["sdpa", "reference"])
def test_kv_cache_decode_equals_full_forward(backend, dtype):
    config, B, T = GPTConfig(vocab_size=17, block_size=24, n_layer=2, n_head=3, n_embd=48), 3, 20
    _, fast = make_pair(config, dtype, backend)
    idx = torch.randint(0, config.vocab_size, (B, T), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = fast(idx)[0]                                               # (B, T, V)
    fast.setup_caches(max_batch_size=4, max_seq_len=config.block_size)   # batch 3 < 4 rows
    for round_ in range(2):  # the second round reuses caches holding the first's values
        prompt = 5 + round_
        steps = [fast.prefill(idx[:, :prompt])]
        pos = prompt
        if round_ == 1:  # a multi-token chunk after the prompt, then one token at a time
            steps.append(fast(idx[:, pos:pos + 4], input_pos=torch.arange(pos, pos + 4))[0].detach())
            pos += 4
        for t in range(pos, T):
            steps.append(fast.decode_one_token(idx[:, t:t + 1], torch.tensor([t])))
        cached = torch.cat(steps, dim=1)                                  # (B, T, V)
        err = rel_err(cached, full)
        print(f"\nround {round_} {backend} {dtype}: cached vs full logits {err:.2e}")
        assert err <= TOL[dtype]
    assert not any("cache" in k for k in fast.state_dict())  # caches are never saved


def test_kv_cache_errors():
    cfg = GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=2, n_embd=32)
    model = GPT(cfg)
    tok = torch.zeros(2, 1, dtype=torch.long)
    with pytest.raises(RuntimeError, match="call model.setup_caches"):
        model(tok, input_pos=torch.tensor([0]))
    with pytest.raises(ValueError, match="exceeds the model's block_size 8"):
        model.setup_caches(2, 9)
    model.setup_caches(2, 6)
    with pytest.raises(ValueError, match="position 6 is past the caches' max_seq_len 6"):
        model(tok, input_pos=torch.tensor([6]))
    with pytest.raises(ValueError, match="batch of 3 exceeds"):
        model(torch.zeros(3, 1, dtype=torch.long), input_pos=torch.tensor([0]))
    model.clear_caches()
    assert model.blocks[0].attn.kv_cache is None


def test_kv_cache_update_writes_positions():
    cache = KVCache(max_batch_size=2, max_seq_len=5, n_head=1, head_size=2, dtype=torch.float32)
    k = torch.ones(1, 1, 2, 2)
    k_all, v_all = cache.update(torch.tensor([1, 2]), k, 2 * k)
    assert k_all.shape == (1, 1, 5, 2)
    assert k_all[0, 0, :, 0].tolist() == [0, 1, 1, 0, 0]
    assert v_all[0, 0, :, 0].tolist() == [0, 2, 2, 0, 0]


# -- training -------------------------------------------------------------------


def test_dropout_active_only_in_training():
    cfg = GPTConfig(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=32, dropout=0.3, embd_dropout=0.1)
    model = GPT(cfg)
    idx = torch.randint(0, 11, (2, 16))
    model.train()
    assert not torch.equal(model(idx)[0], model(idx)[0])
    model.eval()
    assert torch.equal(model(idx)[0], model(idx)[0])


# Loss-curve tolerance (relative).  float64 stays at rounding level; in float32
# AdamW amplifies last-bit gradient differences (g / sqrt(v) of tiny
# gradients), so the curves drift to ~1e-4 within 30 steps: Liger-Kernel's 5e-3.
CONVERGENCE_RTOL = {torch.float64: 1e-10, torch.float32: 5e-3}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_convergence_fast_equals_reference(dtype):
    """Train both with AdamW from the same weights on the same batches: the loss
    curves agree step by step and the loss falls."""
    config = GPTConfig(vocab_size=31, block_size=32, n_layer=2, n_head=4, n_embd=64)
    g = torch.Generator().manual_seed(3)
    # A random stream with structure to learn: each token mostly follows from the previous one.
    stream = torch.zeros(4000, dtype=torch.long)
    noise = torch.randint(0, config.vocab_size, (4000,), generator=g)
    keep = torch.rand(4000, generator=g) < 0.8
    for i in range(1, 4000):
        stream[i] = (stream[i - 1] * 7 + 3) % config.vocab_size if keep[i] else noise[i]
    starts = torch.randint(0, 4000 - 33, (30, 8), generator=g)

    curves = {}
    ref, fast = make_pair(config, dtype)
    for name, model in (("reference", ref), ("fast", fast)):
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
        curve = []
        for step in range(30):
            x = torch.stack([stream[s:s + 32] for s in starts[step]])      # (8, 32)
            y = torch.stack([stream[s + 1:s + 33] for s in starts[step]])
            _, loss = model(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            curve.append(loss.item())
        curves[name] = torch.tensor(curve, dtype=torch.float64)
    rel = ((curves["fast"] - curves["reference"]).abs() / curves["reference"]).max().item()
    print(f"\n{dtype}: loss {curves['reference'][0]:.4f} -> {curves['reference'][-1]:.4f}; "
          f"max relative curve diff {rel:.2e} (tol {CONVERGENCE_RTOL[dtype]:.0e})")
    assert rel <= CONVERGENCE_RTOL[dtype]
    assert curves["fast"][-5:].mean() < curves["fast"][:5].mean() - 0.5


# -- parameter counts --------------------------------------------------------------


@pytest.mark.parametrize("name, vocab", [("quijote", 92), ("littera", 115), ("chat", 256), ("refranes", 73)])
def test_both_models_have_the_configured_parameter_count(name, vocab):
    cfg = preset(name, vocab_size=vocab)
    fast = GPT(cfg)
    rows = parameter_table(fast)
    if name == "quijote":
        print("\n" + format_parameter_table(rows))
    n = sum(r[2] for r in rows)
    assert n == cfg.num_params() == sum(p.numel() for p in GPTLanguageModel(cfg).parameters())
    assert format_parameter_table(rows).splitlines()[-1].split()[1] == f"{n:,}"


@pytest.mark.parametrize("whole", [False, True], ids=["slots-in-use", "whole-cache"])
@pytest.mark.parametrize("config", [GPTConfig(vocab_size=11, block_size=24, n_layer=2, n_head=2, n_embd=32),
                                    preset("chat", vocab_size=13, n_layer=1, dropout=0.0, block_size=24)],
                         ids=["hs16", "hs42"])
def test_triton_cached_decoding_equals_full_forward(flash_attention, monkeypatch, config, whole):
    """The decode kernel in cached calls (and SDPA for prefills longer than
    the kernel takes), reading the slots in use (CPU) or the whole cache
    under the mask (the sync-free CUDA path): the logits of a full forward."""
    import gptfast.model as model_module

    monkeypatch.setattr(model_module, "DECODE_MAX_QUERIES", 4)   # the 6-token prefill goes to SDPA
    _, fast = make_pair(config, torch.float32, "sdpa")
    idx = torch.randint(0, config.vocab_size, (2, 13), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full = fast(idx)[0]                                               # (B, T, V)
    triton = GPT(config.replace(attention="triton"))
    triton.load_state_dict(fast.state_dict())
    triton.setup_caches(max_batch_size=2)
    triton.read_whole_cache = whole
    steps = [triton.prefill(idx[:, :6]), triton(idx[:, 6:9], input_pos=torch.arange(6, 9))[0]]
    steps += [triton.decode_one_token(idx[:, t:t + 1], torch.tensor([t])) for t in range(9, 13)]
    assert rel_err(torch.cat(steps, dim=1), full) <= 1e-4


def test_cached_positions_must_be_consecutive():
    model = GPT(GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=2, n_embd=32))
    model.setup_caches(1)
    with pytest.raises(ValueError, match=r"consecutive positions, got \[0, 2\]"):
        model(torch.zeros(1, 2, dtype=torch.long), input_pos=torch.tensor([0, 2]))
