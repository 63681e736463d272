"""KV caches in f16 and q8_0 against the f32 cache and transformers.

The f32 cache is the one test_forward_parity holds to transformers at 1e-4;
f16 and q8_0 keys and values are rounded (f16: 2^-11 of each value; q8_0:
1/254 of its block's largest magnitude), so their logits are bounded instead,
and wherever the f32 logits' top two are further apart than that bound the
top token must not change. What the rounding must not change at all: new rows
see the K/V a lossy cache gives back, so a prompt prefilled in chunks, a
forward batched with others and a drafted block verified at once give the
bits of one row at a time, and self-speculation at temperature 0 still emits
exactly the AR tokens under every cache type.
"""

from __future__ import annotations

import numpy as np
import pytest

import nld_cpp
from nld_cpp.models import default_model_path, held_out, render_prompt
from nld_cpp.scheduler import forward_batch
from reference import block_logits, causal_logits, load_reference
from test_forward_parity import prompt_for

pytestmark = pytest.mark.model

LOSSY = ("f16", "q8_0")
# max |logits - f32 cache's| / max |logit| over a prefill, AR steps and a
# block on the random fixtures (measured: f16 <= 2.5e-4, q8_0 <= 4.7e-3).
BOUND = {"f16": 1e-3, "q8_0": 2e-2}


def _phases(model: nld_cpp.Model, n_prompt: int = 40, n_steps: int = 8, n_block: int = 16):
    """Rows of logits of a causal prefill, greedy AR steps and a bidirectional block."""
    info = model.info
    tokens = prompt_for(info, n_prompt, seed=n_prompt)
    prefill = model.forward(tokens, kind="causal", logits="all")
    steps, last = [], prefill[-1]
    for _ in range(n_steps):
        tokens.append(int(np.argmax(last)))
        last = model.forward([tokens[-1]], kind="causal", logits="last")[0]
        steps.append(last)
    block = prompt_for(info, n_block, seed=7)
    block[3] = block[5] = info.mask_token_id
    return tokens, block, np.concatenate([prefill, np.stack(steps), model.forward(block, kind="bidirectional")])


@pytest.mark.parametrize("variant", ["base", "gqa4_sharded", "mha"])
def test_lossy_caches_stay_within_their_bound(variant, checkpoint, gguf_file):
    out = {}
    for t in ("f32",) + LOSSY:
        with nld_cpp.Model(gguf_file(variant, "f32"), n_ctx=128, n_threads=2, cache_type_k=t, cache_type_v=t) as m:
            tokens, block, out[t] = _phases(m)
    # The f32 cache is transformers' (so the bound is against the oracle too).
    ref = load_reference(checkpoint(variant))
    n_prompt = 40
    theirs = np.concatenate([causal_logits(ref, tokens[:n_prompt]).numpy(),
                             np.stack([causal_logits(ref, tokens[:n]).numpy()[-1] for n in range(n_prompt + 1, len(tokens) + 1)]),
                             block_logits(ref, tokens, block).numpy()])
    scale = np.abs(theirs).max()
    assert np.abs(out["f32"] - theirs).max() <= 1e-4 * scale
    top2 = np.sort(out["f32"], axis=-1)[:, -2:]
    for t in LOSSY:
        err = np.abs(out[t] - out["f32"]).max() / scale
        clear = (top2[:, 1] - top2[:, 0]) > 2 * BOUND[t] * scale  # a top token the bound cannot flip
        agree = out[t].argmax(-1) == out["f32"].argmax(-1)
        print(f"{variant} {t}: max rel err {err:.2e}, top-1 agreement {agree.mean():.3f} "
              f"({agree[clear].mean():.3f} on the {clear.sum()} of {len(agree)} rows with a clear top)")
        assert 0 < err <= BOUND[t], (t, err)
        assert agree[clear].all(), t


@pytest.mark.parametrize("cache_type", LOSSY)
def test_chunks_and_batches_give_the_bits_of_one_pass(cache_type, gguf_file):
    path = str(gguf_file("gqa4_sharded", "f32"))
    kw = dict(n_ctx=96, n_threads=2, cache_type_k=cache_type, cache_type_v=cache_type)
    with nld_cpp.Model(path, **kw) as whole, nld_cpp.Model(path, **kw) as chunked:
        tokens = prompt_for(whole.info, 50, seed=3)
        one = whole.forward(tokens, kind="causal", logits="all")
        parts = [chunked.forward(tokens[a:b], kind="causal", logits="all") for a, b in ((0, 17), (17, 18), (18, 50))]
        assert np.array_equal(one, np.concatenate(parts))
        # Then one step at a time against a 4-token forward over the same tokens.
        nxt = prompt_for(whole.info, 4, seed=4)
        rows = whole.forward(nxt, kind="causal", logits="all")
        singles = [chunked.forward([t], kind="causal", logits="last")[0] for t in nxt]
        assert np.array_equal(rows, np.stack(singles))
        block = prompt_for(whole.info, 8, seed=5)
        assert np.array_equal(whole.forward(block, kind="bidirectional"), chunked.forward(block, kind="bidirectional"))
    # Batched with contexts of other cache types: each part as it is alone.
    with nld_cpp.Model(path, **kw) as a, a.new_context(n_ctx=96, cache_type_k="f32", cache_type_v="q8_0") as b, \
            a.new_context(n_ctx=96, cache_type_k=cache_type, cache_type_v="f32") as c:
        prompts = [prompt_for(a.info, n, seed=20 + n) for n in (9, 14, 5)]
        alone = []
        for ctx, p in zip((a, b, c), prompts):
            alone.append(ctx.forward(p, kind="causal", logits="all"))
            ctx.truncate(0)
        together = forward_batch([(ctx, p, "causal", "all") for ctx, p in zip((a, b, c), prompts)])
        for x, y in zip(alone, together):
            assert np.array_equal(x, y)


@pytest.fixture(scope="module")
def tiny():
    with nld_cpp.Model(str(default_model_path()), n_ctx=512, n_threads=2) as model:
        yield model


@pytest.mark.parametrize("cache_type", ("f32",) + LOSSY)
def test_every_mode_runs_and_speculation_stays_ar(cache_type, tiny):
    """On the embedded model: at temperature 0 linear and quadratic
    self-speculation (with and without the drafter) emit exactly AR's tokens
    under each cache type; diffusion runs to its end; how often each mode's
    tokens equal those of the f32 cache is printed."""
    items = held_out()
    prompts = [tiny.tokenize(render_prompt(items[i]["turns"][0]["user"])) for i in (0, 45, 90, 135, 180, 225, 270)]
    with tiny.new_context(n_ctx=512, cache_type_k=cache_type, cache_type_v=cache_type) as m, \
            tiny.new_context(n_ctx=512, cache_type_k="f32", cache_type_v="f32") as exact:
        assert (m.cache_type_k, m.cache_type_v) == (cache_type, cache_type)
        same = {}
        for prompt in prompts:
            ar = m.generate(prompt, mode="ar", max_tokens=40).tokens
            assert ar, "AR emitted nothing"
            for mode, kw in (("spec", dict(block_length=8)), ("spec", dict(block_length=8, use_lora=False)),
                             ("spec-quadratic", dict(block_length=4))):
                assert m.generate(prompt, mode=mode, max_tokens=40, **kw).tokens == ar, (mode, kw)
            for mode in ("ar", "diffusion"):
                got = ar if mode == "ar" else m.generate(prompt, mode="diffusion", max_tokens=40, block_length=8).tokens
                assert got
                want = exact.generate(prompt, mode=mode, max_tokens=40, block_length=8).tokens
                same.setdefault(mode, []).append(got == want)
        print(f"{cache_type}: answers equal to the f32 cache's: "
              + ", ".join(f"{mode} {sum(v)}/{len(v)}" for mode, v in same.items()))


def test_cache_bytes_follow_the_types(gguf_file):
    """Sizes from the formats: f16 half of f32; q8_0 one byte per value and
    an f16 scale per block of 32 of a head's values (the fixture's 24-dim
    heads are one short block: 26 bytes; the real models' 128: 136)."""
    path = str(gguf_file("base", "f32"))
    sizes = {}
    for t in ("f32", "f16", "q8_0"):
        with nld_cpp.Model(path, n_ctx=64, n_threads=1, cache_type_k=t, cache_type_v=t) as m:
            info = m.info
            sizes[t] = m.cache_bytes
    vectors = 2 * info.n_layer * 64 * info.n_head_kv  # keys and values of every layer, slot and KV head
    hd = info.head_dim
    assert sizes == {"f32": 4 * vectors * hd, "f16": 2 * vectors * hd, "q8_0": vectors * (hd + 2 * -(-hd // 32))}


def test_cache_type_errors(gguf_file):
    path = str(gguf_file("base", "f32"))
    for bad in ("q4_0", "F64", "", 2, None, True):
        with pytest.raises(ValueError, match="cache_type_k must be one of f32, f16, q8_0"):
            nld_cpp.Model(path, cache_type_k=bad)
    with pytest.raises(ValueError, match="cache_type_v must be one of"):
        nld_cpp.Model(path, cache_type_v="bf16")
    with nld_cpp.Model(path, n_ctx=32, cache_type_k="Q8_0", cache_type_v=1) as m:  # any case; GGML ids
        assert (m.cache_type_k, m.cache_type_v) == ("q8_0", "f16")
        with m.new_context(n_ctx=32) as other:  # a new context keeps the types
            assert (other.cache_type_k, other.cache_type_v) == ("q8_0", "f16")


def test_c_api_refuses_an_unknown_cache_type(gguf_file):
    from nld_cpp._binding import ffi, lib

    with nld_cpp.Model(str(gguf_file("base", "f32")), n_ctx=32) as m:
        params = lib.nld_context_default_params()
        assert (params.type_k, params.type_v) == (1, 1)  # f16 by default, as llama.cpp
        params.type_v = 2  # q4_0: not a cache type here
        out = ffi.new("nld_context **")
        assert lib.nld_context_create(m._model, ffi.addressof(params), out) != 0
        assert "type_v 2 is not a cache type" in ffi.string(lib.nld_last_error()).decode()
        assert out[0] == ffi.NULL


def test_cli_and_server_take_the_cache_types(tmp_path, tiny):
    """`nld run -ctk/-ctv` and `nld-server -ctk/-ctv` answer as the Python
    API with the same cache types (q8_0 keys, f32 values)."""
    import subprocess
    import sys

    from nld_cpp.testing.server import running_server

    user = held_out()[45]["turns"][0]["user"]
    with tiny.new_context(n_ctx=512, cache_type_k="q8_0", cache_type_v="f32") as m:
        want = m.create_chat_completion([{"role": "user", "content": user}], max_tokens=24, temperature=0)
    text = want["choices"][0]["message"]["content"]
    res = subprocess.run([sys.executable, "-m", "nld_cpp.cli", "run", "-p", user, "-n", "24", "-ctk", "q8_0",
                          "-ctv", "f32"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == text.strip()
    with running_server(["-ctk", "q8_0", "-ctv", "f32"], log_dir=tmp_path) as srv:
        status, got = srv.json("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": user}],
                                                                 "max_tokens": 24, "temperature": 0})
    assert status == 200, got
    assert got["choices"][0]["message"]["content"] == text
