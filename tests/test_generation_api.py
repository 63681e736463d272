"""The generator as the Python API exposes it: streaming, cancellation, the
one cache shared by every mode, and the thinking budget
(docs/generation.md)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import nld_cpp
from test_model_malformed import rewrite

pytestmark = pytest.mark.model

MODES = ["ar", "diffusion", "spec", "spec-quadratic"]
PROMPT = [1, 10, 1050, 1100, 1200, 11, 10]


@pytest.fixture(scope="module")
def model_path(gguf_file):
    return gguf_file("base", "f32")


@pytest.mark.parametrize("mode", MODES)
def test_streaming_equals_one_shot(model_path, mode):
    with nld_cpp.Model(model_path, n_ctx=256) as model:
        kwargs = dict(mode=mode, max_tokens=21, block_length=8, ignore_eos=True)
        whole = model.generate(PROMPT, **kwargs)
        model.truncate(0)
        steps = list(model.generate_steps(PROMPT, **kwargs))
    streamed = [t for s in steps for t in s.tokens]
    assert streamed == whole.tokens and len(whole.tokens) == 21
    assert steps[-1].finish_reason == whole.finish_reason == "length"
    assert all(s.finish_reason is None for s in steps[:-1])
    assert steps[-1].n_forwards == whole.n_forwards
    if mode == "diffusion":  # the canvas shows the block as it is denoised
        canvases = [s.canvas for s in steps if s.canvas is not None]
        assert any(100 in c for c in canvases) and all(len(c) == 8 for c in canvases)
    if mode.startswith("spec"):
        assert whole.accepted_lengths == [s.accepted for s in steps if s.accepted is not None]


@pytest.mark.parametrize("mode", MODES)
def test_cache_holds_only_committed_tokens(model_path, mode):
    """After any generation the cache equals a causal pass over the first
    n_cached tokens of prompt + output: continuing from it gives the logits
    a fresh context gives."""
    with nld_cpp.Model(model_path, n_ctx=256) as model, nld_cpp.Model(model_path, n_ctx=256) as fresh:
        out = model.generate(PROMPT, mode=mode, max_tokens=19, block_length=8, ignore_eos=True).tokens
        seq = PROMPT + out
        n = model.n_cached
        assert len(PROMPT) <= n < len(seq)
        ours = model.forward(seq[n:], logits="last")
        theirs = fresh.forward(seq, logits="last")
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5 * np.abs(theirs).max())


@pytest.mark.parametrize("first,second", [("diffusion", "ar"), ("spec", "diffusion"), ("ar", "spec-quadratic")])
def test_modes_share_the_cache(model_path, first, second):
    """A second turn in another mode reuses the first turn's cached prefix
    and gives what a fresh context gives."""
    with nld_cpp.Model(model_path, n_ctx=256) as model, nld_cpp.Model(model_path, n_ctx=256) as fresh:
        out = model.generate(PROMPT, mode=first, max_tokens=16, block_length=8, ignore_eos=True).tokens
        cached = model.n_cached
        follow = PROMPT + out + [11, 10, 1072]
        steps = model.generate_steps(follow, mode=second, max_tokens=12, block_length=8, ignore_eos=True)
        first_step = next(steps)
        # Only the uncached tail was prefilled: the cache grew from `cached`.
        assert model.n_cached >= cached
        rest = [t for s in steps for t in s.tokens]
        again = first_step.tokens + rest
        expected = fresh.generate(follow, mode=second, max_tokens=12, block_length=8, ignore_eos=True).tokens
    assert again == expected


def test_cancel_from_another_thread(model_path):
    with nld_cpp.Model(model_path, n_ctx=512) as model:
        gen = model.generate_steps(PROMPT, mode="ar", max_tokens=400, ignore_eos=True)
        seen = []
        for step in gen:
            seen.append(step)
            if len(seen) == 3:
                t = threading.Thread(target=gen.cancel)
                t.start()
                t.join()
        assert seen[-1].finish_reason == "cancelled"
        assert len(seen) == 4  # the step after the cancel ends the generation
        # The model is usable afterwards and the cache holds only committed tokens.
        assert model.n_cached == len(PROMPT) + 2
        assert model.generate(PROMPT, max_tokens=3).finish_reason in ("length", "stop")


def test_thinking_budget_places_think_end(model_path):
    with nld_cpp.Model(model_path, n_ctx=256) as model:
        out = model.generate(PROMPT, mode="diffusion", max_tokens=20, block_length=8, ignore_eos=True,
                             max_thinking_tokens=5, think_end_token=13).tokens
        assert out[5] == 13 and 13 not in out[:5]
        with pytest.raises(nld_cpp.NldError, match="think_end_token"):
            model.generate(PROMPT, mode="diffusion", max_tokens=8, max_thinking_tokens=5)


def test_file_without_diffusion_keys_offers_ar_only(model_path, tmp_path):
    plain = rewrite(model_path, tmp_path / "plain.gguf",
                    drop_kv=("tokenizer.ggml.mask_token_id", "diffusion.block_size", "diffusion.shift_logits",
                             "diffusion.threshold"))
    with nld_cpp.Model(plain) as model:
        assert not model.info.has_diffusion
        assert len(model.generate(PROMPT, mode="ar", max_tokens=4, ignore_eos=True).tokens) == 4
        for mode in ("diffusion", "spec", "spec-quadratic"):
            with pytest.raises(nld_cpp.NldError, match="only AR generation is available"):
                model.generate(PROMPT, mode=mode, max_tokens=4)


def test_spec_without_adapter_uses_base_weights(model_path, gguf_file):
    with nld_cpp.Model(model_path, lora_path="") as no_lora, nld_cpp.Model(model_path) as with_lora:
        assert with_lora.has_lora and not no_lora.has_lora
        a = no_lora.generate(PROMPT, mode="spec", max_tokens=12, block_length=8, ignore_eos=True)
        b = with_lora.generate(PROMPT, mode="spec", max_tokens=12, block_length=8, use_lora=False, ignore_eos=True)
    assert a.tokens == b.tokens and a.n_forwards == b.n_forwards


def test_generation_argument_errors(model_path):
    with nld_cpp.Model(model_path) as model:
        for kwargs, match in [(dict(mode="fast"), "mode"), (dict(max_tokens=0), "max_tokens"),
                              (dict(threshold=1.5), "threshold"), (dict(temperature=-1.0), "temperature"),
                              (dict(top_p=0.0), "top_p"), (dict(block_length=0), "block_length"),
                              (dict(stop_tokens=[-3]), "stop_tokens")]:
            with pytest.raises(ValueError, match=match):
                model.generate(PROMPT, **kwargs)
        for kwargs, match in [(dict(mode="diffusion", block_length=1), "block_length must be in"),
                              (dict(mode="spec-quadratic", threshold=0.5), "threshold must be 0"),
                              (dict(stop_tokens=[10**6]), r"stop_tokens\[0\]")]:
            with pytest.raises(nld_cpp.NldError, match=match):
                model.generate(PROMPT, **kwargs)
        with pytest.raises(nld_cpp.NldError, match="does not fit n_ctx"):
            model.generate(list(range(1000, 1000 + model.n_ctx + 1)), max_tokens=2)
