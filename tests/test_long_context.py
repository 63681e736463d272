"""Our F32 forward against transformers at positions past the original
(pre-YaRN) context L, where YaRN's interpolated frequencies and the
attention-temperature query scale 1 + beta * ln(1 + floor(pos / L)) both
act (spec/nld-model.md section 4).

The fixtures keep L at 64, so a prompt of 4 L = 256 tokens crosses every
step of floor(pos / L) (at 64, 128 and 192) in a fraction of a second. One
transformers forward over the whole prompt is the oracle for every phase:
causal rows depend only on earlier tokens, so row p of it is what any
prefix, chunk or single step ending at p must give.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

import nld_cpp
from conftest import VARIANTS
from nld_cpp.testing.checkpoints import CheckpointSpec
from reference import EXACT_CACHE, block_logits, causal_logits, hf_config, load_reference
from test_forward_parity import REL_TOL, prompt_for

pytestmark = pytest.mark.model


def _has_room_for_4_orig_ctx(fields: dict) -> bool:
    spec = dataclasses.replace(CheckpointSpec(), **fields)
    return 4 * spec.original_max_position_embeddings <= spec.max_position_embeddings


# Variants whose original context leaves room for 4 L positions (all but factor_below_1).
LONG_VARIANTS = sorted(name for name, fields in VARIANTS.items() if _has_room_for_4_orig_ctx(fields))


@dataclasses.dataclass
class LongCase:
    gguf: Path
    ref: torch.nn.Module
    orig_ctx: int  # L = original_max_position_embeddings
    beta: float  # llama_4_scaling_beta
    tokens: list[int]  # 4 L tokens, positions 0 .. 4 L - 1
    expected: np.ndarray  # (4 L, n_vocab) transformers causal logits over tokens


@pytest.fixture(scope="module", params=LONG_VARIANTS)
def case(request: pytest.FixtureRequest, checkpoint, gguf_file) -> LongCase:
    ckpt = checkpoint(request.param)
    rope = hf_config(ckpt).rope_parameters
    orig_ctx, beta = int(rope["original_max_position_embeddings"]), float(rope["llama_4_scaling_beta"])
    ref = load_reference(ckpt)
    gguf = gguf_file(request.param, "f32")
    with nld_cpp.Model(gguf, n_ctx=4 * orig_ctx, n_threads=2, **EXACT_CACHE) as model:
        tokens = prompt_for(model.info, 4 * orig_ctx, seed=26)
    return LongCase(gguf, ref, orig_ctx, beta, tokens, causal_logits(ref, tokens).numpy())


def temperature_scale(pos: np.ndarray, beta: float, orig_ctx: int) -> np.ndarray:
    """The query scale of spec section 4, written out here from the config."""
    return 1.0 + beta * np.log1p(np.floor(pos / orig_ctx))


def row_errors(ours: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Per position: max |diff| over the vocabulary relative to that row's
    max |logit| (no looser than test_forward_parity's whole-array ratio)."""
    return np.abs(ours - expected).max(axis=1) / np.abs(expected).max(axis=1)


def assert_rows_match(ours: np.ndarray, expected: np.ndarray, first_pos: int) -> None:
    errs = row_errors(ours, expected)
    bad = np.flatnonzero(errs > REL_TOL)
    worst = int(np.argmax(errs))
    assert bad.size == 0, (f"{bad.size} positions over {REL_TOL:g}, first at {first_pos + int(bad[0])}; "
                           f"worst {errs[worst]:.3e} at position {first_pos + worst}")


@contextlib.contextmanager
def temperature_beta(ref: torch.nn.Module, beta: float) -> Iterator[None]:
    """transformers reads llama_4_scaling_beta from the config on every forward."""
    params = ref.config.rope_parameters
    saved = params["llama_4_scaling_beta"]
    params["llama_4_scaling_beta"] = beta
    try:
        yield
    finally:
        params["llama_4_scaling_beta"] = saved


def test_fixture_exercises_the_long_context_path(case: LongCase):
    """The test below could pass trivially if the positions never left the
    original context, or if neither YaRN nor the temperature changed a logit."""
    pos = np.arange(len(case.tokens))
    scale = temperature_scale(pos, case.beta, case.orig_ctx)
    assert np.all(scale[: case.orig_ctx] == 1.0)
    assert np.all(scale[case.orig_ctx:] >= 1.0 + case.beta * math.log(2.0) - 1e-12)
    assert len(np.unique(scale)) == 4  # floor(pos / L) takes 0, 1, 2 and 3
    # Our file carries the same L and beta.
    with nld_cpp.Model(case.gguf, n_ctx=4 * case.orig_ctx, n_threads=2, **EXACT_CACHE) as model:
        assert model.info.rope_orig_ctx == case.orig_ctx
        assert model.info.attn_temperature_scale == pytest.approx(case.beta)
    # YaRN interpolates some of the frequencies at this head size.
    cfg = case.ref.config
    plain = 1.0 / cfg.rope_parameters["rope_theta"] ** (torch.arange(0, cfg.head_dim, 2).double() / cfg.head_dim)
    interpolated = ~torch.isclose(case.ref.model.rotary_emb.inv_freq.double(), plain, rtol=1e-5)
    assert interpolated.any() and not interpolated.all()
    # With beta = 0 transformers agrees before L and differs by far more than the tolerance after it.
    with temperature_beta(case.ref, 0.0):
        unscaled = causal_logits(case.ref, case.tokens).numpy()
    errs = row_errors(unscaled, case.expected)
    assert np.all(errs[: case.orig_ctx] <= REL_TOL)
    assert errs[case.orig_ctx:].min() > 20 * REL_TOL, errs[case.orig_ctx:].min()


def test_full_prompt_past_original_context(case: LongCase):
    with nld_cpp.Model(case.gguf, n_ctx=4 * case.orig_ctx, n_threads=2, **EXACT_CACHE) as model:
        ours = model.forward(case.tokens, kind="causal", logits="all")
    assert_rows_match(ours, case.expected, first_pos=0)


def test_chunked_prefill_and_steps_past_original_context(case: LongCase):
    """Three prefill chunks (one starts right at L, one straddles 2 L), then
    single causal steps across 3 L: every query past the first chunk reads
    keys from the cache."""
    L = case.orig_ctx
    cuts = [0, L, 2 * L + L // 3, 3 * L - 4, 3 * L + 4]
    with nld_cpp.Model(case.gguf, n_ctx=4 * L, n_threads=2, **EXACT_CACHE) as model:
        rows = [model.forward(case.tokens[a:b], kind="causal", logits="all") for a, b in zip(cuts[:3], cuts[1:4])]
        rows += [model.forward([t], kind="causal", logits="all") for t in case.tokens[cuts[3]:cuts[4]]]
        assert model.n_cached == cuts[4]
    assert_rows_match(np.concatenate(rows), case.expected[: cuts[4]], first_pos=0)


def test_bidirectional_block_past_original_context(case: LongCase):
    """A block over a cached prefix of 3 L - 8 tokens: its rows straddle 3 L."""
    L = case.orig_ctx
    n_prefix, n_block = 3 * L - 8, 16
    prefix = case.tokens[:n_prefix]
    block = case.tokens[n_prefix:n_prefix + n_block]
    with nld_cpp.Model(case.gguf, n_ctx=4 * L, n_threads=2, **EXACT_CACHE) as model:
        model.forward(prefix, kind="causal", logits="none")
        ours = model.forward(block, kind="bidirectional", logits="all")
    assert_rows_match(ours, block_logits(case.ref, prefix, block).numpy(), first_pos=n_prefix)
