"""Our CPU forward against transformers' Ministral-3 with the same weights:
causal prefill, AR steps through the cache, and a bidirectional block over
the cached prefix (spec/nld-model.md sections 4-5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nld_cpp
from conftest import VARIANTS
from reference import EXACT_CACHE, block_logits, causal_logits, greedy_generate, load_reference

pytestmark = pytest.mark.model

# Relative tolerance of the issue: max |diff| <= 1e-4 * max |logit|, f32 on both sides.
REL_TOL = 1e-4


def prompt_for(info: nld_cpp.ModelInfo, n: int, seed: int) -> list[int]:
    """Token ids spread over control, byte and merge ids (mask id excluded)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, info.n_vocab, size=n)
    ids[ids == info.mask_token_id] = info.bos_token_id
    return ids.tolist()


def rel_err(ours: np.ndarray, ref: torch.Tensor) -> float:
    ref_np = ref.numpy()
    return float(np.abs(ours - ref_np).max() / np.abs(ref_np).max())


def run_prefill_steps_block(model: nld_cpp.Model, ref, prompt_len: int, n_steps: int, n_block: int) -> dict:
    """Prefill, AR steps and a bidirectional block; returns the worst relative
    error of each phase against the reference."""
    info = model.info
    tokens = prompt_for(info, prompt_len, seed=prompt_len)
    errs = {}
    ours = model.forward(tokens, kind="causal", logits="all")
    errs["prefill"] = rel_err(ours, causal_logits(ref, tokens))
    step_errs = []
    for _ in range(n_steps):
        nxt = int(np.argmax(ours[-1]))
        tokens.append(nxt)
        ours = model.forward([nxt], kind="causal", logits="all")
        step_errs.append(rel_err(ours[0], causal_logits(ref, tokens)[-1]))
    errs["ar_steps"] = max(step_errs)
    assert model.n_cached == len(tokens)
    block = prompt_for(info, n_block, seed=7)
    block[3] = block[5] = info.mask_token_id  # masks inside the block, as in diffusion
    ours = model.forward(block, kind="bidirectional", logits="all")
    errs["block"] = rel_err(ours, block_logits(ref, tokens, block))
    assert model.n_cached == len(tokens), "a bidirectional block must not write the cache"
    # The cache is intact: one more causal step still matches.
    ours = model.forward([block[0]], kind="causal", logits="last")
    errs["after_block"] = rel_err(ours[0], causal_logits(ref, tokens + [block[0]])[-1])
    return errs


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_f32_parity(variant, checkpoint, gguf_file):
    ref = load_reference(checkpoint(variant))
    with nld_cpp.Model(gguf_file(variant, "f32"), n_ctx=256, n_threads=2, **EXACT_CACHE) as model:
        # Where original_max_position_embeddings is 64, the prompt crosses it.
        prompt_len = 72 if model.info.rope_orig_ctx <= 64 else 40
        errs = run_prefill_steps_block(model, ref, prompt_len=prompt_len, n_steps=8, n_block=16)
    print(f"{variant} f32 relative errors: {errs}")
    assert max(errs.values()) <= REL_TOL, errs


def test_positions_past_original_context_are_exercised(gguf_file):
    with nld_cpp.Model(gguf_file("base", "f32"), **EXACT_CACHE) as model:
        assert model.info.rope_orig_ctx == 64 and model.info.attn_temperature_scale > 0
        assert model.info.rope_scaling_factor == pytest.approx(4.0)


@pytest.mark.parametrize("outtype,dtype", [("f16", torch.float16), ("bf16", torch.bfloat16)])
@pytest.mark.parametrize("variant", ["base", "gqa4_sharded"])
def test_half_precision_files(variant, outtype, dtype, checkpoint, gguf_file):
    """An F16/BF16 file holds the weights rounded to that type. Against
    transformers holding the same rounded weights the compute is f32 on both
    sides, so the f32 tolerance applies unchanged. Against the unrounded
    model the error is the weight rounding itself: relative 2^-11 (f16) or
    2^-8 (bf16) per weight, which we bound by 1e-2 and 5e-2 of max |logit|."""
    ckpt = checkpoint(variant)
    with nld_cpp.Model(gguf_file(variant, outtype), **EXACT_CACHE) as model:
        tokens = prompt_for(model.info, 24, seed=3)
        ours = model.forward(tokens, kind="causal", logits="all")
    same_weights = rel_err(ours, causal_logits(load_reference(ckpt, round_to=dtype), tokens))
    vs_f32 = rel_err(ours, causal_logits(load_reference(ckpt), tokens))
    print(f"{variant} {outtype}: same weights {same_weights:.2e}, vs f32 model {vs_f32:.2e}")
    assert same_weights <= REL_TOL
    assert vs_f32 <= (1e-2 if outtype == "f16" else 5e-2)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_greedy_generation_matches_transformers(variant, checkpoint, gguf_file):
    ref = load_reference(checkpoint(variant))
    with nld_cpp.Model(gguf_file(variant, "f32"), **EXACT_CACHE) as model:
        prompt = prompt_for(model.info, 12, seed=11)
        ours = model.generate_greedy(prompt, max_new_tokens=32, stop_at_eos=True)
        theirs = greedy_generate(ref, prompt, 32, model.info.mask_token_id)
    assert ours == theirs


def test_greedy_reuses_cached_prefix(gguf_file):
    with nld_cpp.Model(gguf_file("base", "f32"), **EXACT_CACHE) as model:
        prompt = prompt_for(model.info, 10, seed=5)
        first = model.generate_greedy(prompt, max_new_tokens=6, stop_at_eos=False)
        # The continuation is in the cache except its last token.
        assert model.n_cached == len(prompt) + len(first) - 1
        follow = prompt + first + [1]
        again = model.generate_greedy(follow, max_new_tokens=6, stop_at_eos=False)
        model.truncate(0)
        fresh = model.generate_greedy(follow, max_new_tokens=6, stop_at_eos=False)
        assert again == fresh


_PATHS_SCRIPT = """
import sys, numpy as np
from nld_cpp import Model, quants
assert quants.default_cpu_path() == sys.argv[3]
rows = []
for cache in ("f32", "f16", "q8_0"):
    with Model(sys.argv[1], n_ctx=96, n_threads=2, cache_type_k=cache, cache_type_v=cache) as m:
        rows.append(m.forward(list(range(40, 110)), kind="causal", logits="all"))
        rows.append(m.forward(list(range(120, 131)), kind="bidirectional", logits="all"))
np.save(sys.argv[2], np.concatenate(rows))
"""


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_cpu_path_gives_identical_logits(variant, gguf_file, tmp_path):
    """The f32 loops (matmul dots, attention scores and value sums) have one order of
    operations on every path, however each path blocks them in registers: a causal prefill
    of 70 tokens (rows that see from 1 to 70 keys: part tiles, whole tiles and runs of them),
    then an 11-token bidirectional block over them (reading the 70 from an f32, an f16 and
    a q8_0 cache in turn), gives the same bits on the scalar path and on each SIMD path this
    CPU runs. The variants cover groups of 1, 2, 4 and
    all query heads per KV head, and head sizes with and without a tail past 8 (12, 16, 24)."""
    import os
    import subprocess
    import sys

    from nld_cpp import quants

    paths = ["scalar"] + [p for p in ("avx2", "avx512_vnni") if quants.cpu_path_supported(p)]
    if len(paths) == 1:
        pytest.skip("no SIMD path on this CPU")
    out = {}
    for path in paths:
        out[path] = tmp_path / f"{path}.npy"
        subprocess.run([sys.executable, "-c", _PATHS_SCRIPT, str(gguf_file(variant)), str(out[path]), path],
                       env=dict(os.environ, NLD_CPU_PATH=path), check=True)
    scalar = np.load(out["scalar"])
    assert scalar.shape[0] == 3 * 81 and np.isfinite(scalar).all()
    for path in paths[1:]:
        assert np.array_equal(np.load(out[path]), scalar), path


def test_long_prompt_is_prefilled_in_chunks_as_transformers_reads_it(tmp_path):
    """A generation stepped alone prefills its prompt 512 rows at a time: a
    1100-token prompt (three chunks) then 8 greedy tokens equal transformers'
    greedy generation over the whole prompt."""
    from nld_cpp.convert import convert_checkpoint
    from nld_cpp.testing.checkpoints import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "hf", max_position_embeddings=2048, original_max_position_embeddings=2048,
                           seed=12)
    path = convert_checkpoint(ckpt, tmp_path / "long.gguf", outtype="f32", progress=False).path
    with nld_cpp.Model(path, n_ctx=1200, n_threads=2, **EXACT_CACHE) as model:
        prompt = prompt_for(model.info, 1100, seed=8)
        res = model.generate(prompt, mode="ar", max_tokens=8, ignore_eos=True)
        mask = model.info.mask_token_id
    assert res.tokens == greedy_generate(load_reference(ckpt), prompt, 8, mask)
