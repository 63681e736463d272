"""Span infilling (docs/generation.md "Infill") against the PyTorch
reference of tests/mode_reference.py on the peaked fixtures: the same tokens
and forward counts for gaps at the start, middle and end, several gaps and a
single mask, in one block and across blocks, by threshold and by the fixed
schedule; known tokens never change; an all-mask canvas is diffusion's
output; bad canvases are refused by name."""

from __future__ import annotations

import numpy as np
import pytest

import mode_reference
import nld_cpp
from mode_world import PROMPTS, VARIANTS

pytestmark = pytest.mark.model

CANVAS_LENGTH = 12
# name -> masked indices of a 12-token canvas
PATTERNS = {
    "start": [0, 1, 2],
    "middle": [4, 5, 6, 7],
    "end": [9, 10, 11],
    "several": [1, 2, 6, 10, 11],
    "single": [5],
    "all": list(range(CANVAS_LENGTH)),
    "block-starts": [0, 4, 8],  # a mask at every index 0 of blocks of 4
}
RUNS = [(4, 0.9), (8, 0.0), (16, 0.5)]  # (block length, threshold): across blocks, fixed schedule, one block


def canvas_for(world, variant: str, prompt_name: str, pattern: str) -> tuple[list[int], list[int]]:
    """The reference's AR continuation of the prompt as the known text, and
    the canvas with the pattern's indices masked."""
    ref = world.ref(variant)
    prompt = world.prompt(variant, prompt_name)
    text = mode_reference.ar_generate(ref, prompt, CANVAS_LENGTH, []).tokens
    canvas = [ref.mask_id if i in PATTERNS[pattern] else t for i, t in enumerate(text)]
    return prompt, canvas


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_infill_matches_the_reference(variant, world):
    model = world.model(variant)
    ref = world.ref(variant)
    for prompt_name in PROMPTS:
        for pattern in PATTERNS:
            prompt, canvas = canvas_for(world, variant, prompt_name, pattern)
            for block, threshold in RUNS:
                want = mode_reference.infill_generate(ref, prompt, canvas, block, threshold)
                model.truncate(0)
                got = model.infill(prompt, canvas, block_length=block, threshold=threshold)
                where = (prompt_name, pattern, block, threshold)
                assert got.tokens == want.tokens, (where, mode_reference_describe(want))
                assert got.n_forwards == want.nfe, where
                assert len(got.tokens) == len(canvas) and got.finish_reason == "length"
                assert all(g == c for g, c in zip(got.tokens, canvas) if c != ref.mask_id), where
                assert ref.mask_id not in got.tokens


def mode_reference_describe(want) -> str:
    return f"reference tokens {want.tokens} nfe {want.nfe}, closest confidence gap {want.min_conf_gap:.3g}"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_all_mask_canvas_is_diffusion(variant, world):
    """An all-mask canvas of N tokens gives diffusion's first N tokens (EOS
    ignored: infill fills the whole canvas), with the same forwards when N is
    a whole number of blocks."""
    model = world.model(variant)
    mask = model.info.mask_token_id
    for prompt_name in PROMPTS:
        prompt = world.prompt(variant, prompt_name)
        for block, n in [(4, 8), (8, 8), (8, 24)]:
            model.truncate(0)
            diffusion = model.generate(prompt, mode="diffusion", block_length=block, max_tokens=n, ignore_eos=True,
                                       threshold=0.9, temperature=0.0)
            model.truncate(0)
            got = model.infill(prompt, [mask] * n, block_length=block, threshold=0.9)
            assert got.tokens == diffusion.tokens and got.n_forwards == diffusion.n_forwards, (prompt_name, block, n)


def test_canvas_steps_stream_the_blocks(world):
    variant = "gqa2_yarn4"
    model = world.model(variant)
    prompt, canvas = canvas_for(world, variant, "short", "several")
    steps = list(model.infill_steps(prompt, canvas, block_length=4, threshold=0.0))
    assert [t for s in steps for t in s.tokens] == model.infill(prompt, canvas, block_length=4, threshold=0.0).tokens
    assert all(s.canvas is not None and len(s.canvas) <= 4 for s in steps[1:])


BAD = {
    "empty": ([], "canvas"),
    "bad id": ([5, 10**6], "canvas"),
    "negative": ([5, -7], "canvas"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_canvases_are_refused(name, world):
    model = world.model("gqa2_yarn4")
    canvas, needle = BAD[name]
    with pytest.raises((ValueError, nld_cpp.NldError), match=needle):
        model.infill([101, 102, 103], canvas)


def test_canvas_too_long_for_the_context(world):
    model = world.model("gqa2_yarn4")
    with pytest.raises(nld_cpp.NldError, match="do not fit n_ctx"):
        model.infill([101] * 10, [None] * model.n_ctx)
    assert model.infill([101, 102], [None, 103]).tokens[1] == 103  # the context still works



def test_infill_text_builds_the_canvas_as_the_tokenizer_does():
    """infill_text: each placeholder becomes gap_tokens masks between the
    pieces as `tokenizers` encodes them (the space before a gap left to
    it); the known text comes back unchanged around the fills."""
    from tokenizers import Tokenizer

    from nld_cpp.models import default_model_path, render_prompt

    with nld_cpp.Model(str(default_model_path()), n_ctx=256, n_threads=2) as model:
        hf = Tokenizer.from_str(model.metadata_string("tokenizer.huggingface.json"))
        prefix = render_prompt("Copy: a b c d e f")
        got = model.infill_text(prefix, "a b [___] d e [___]", gap_tokens=1)
        mask = model.info.mask_token_id
        canvas = (hf.encode("a b", add_special_tokens=False).ids + [mask]
                  + hf.encode(" d e", add_special_tokens=False).ids + [mask])
        want = model.infill(hf.encode(prefix, add_special_tokens=False).ids, canvas)
        assert got["tokens"] == want.tokens and got["n_forwards"] == want.n_forwards
        assert [t for t, c in zip(got["tokens"], canvas) if c != mask] == [c for c in canvas if c != mask]
        assert len(got["fills"]) == 2 and got["text"].startswith("a b") and " d e" in got["text"]
        with pytest.raises(ValueError, match="no gap placeholder"):
            model.infill_text(prefix, "a b c")


# -- revision ------------------------------------------------------------------

def planted(world, variant: str, prompt_name: str, n_errors: int) -> tuple[list[int], list[int]]:
    """The reference's AR continuation with n_errors tokens replaced by
    other ids (deterministic picks)."""
    ref = world.ref(variant)
    prompt = world.prompt(variant, prompt_name)
    text = mode_reference.ar_generate(ref, prompt, CANVAS_LENGTH, []).tokens
    for j in range(n_errors):
        i = (3 + 5 * j) % len(text)
        text[i] = 101 + (text[i] * 7 + j) % 50
    return prompt, text


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_revision_matches_the_reference(variant, world):
    """The same positions re-decided to the same tokens, round by round, and
    the same leave-one-out confidences (1e-4), for k lowest and for named
    positions, across blocks and in one."""
    model = world.model(variant)
    ref = world.ref(variant)
    for prompt_name in ("short", "long"):
        for n_errors, k, block, positions, below in [(0, 1, 16, None, 1.0), (2, 2, 4, None, 1.0), (1, 3, 8, None, 0.05),
                                                     (2, 1, 8, [3, 8], 1.0), (2, 4, 16, None, 0.01)]:
            prompt, span = planted(world, variant, prompt_name, n_errors)
            want_tokens, want_changes, want_confs = mode_reference.revise(ref, prompt, span, k, 3, block, 0.9,
                                                                         positions, below)
            got = model.revise(prompt, span, k=k, rounds=3, block_length=block, threshold=0.9, positions=positions,
                               below=below)
            where = (prompt_name, n_errors, k, block, positions, below)
            assert got.tokens == want_tokens, where
            assert [[(c.position, c.old, c.new) for c in r] for r in got.changes] == want_changes, where
            np.testing.assert_allclose(got.confidences, want_confs, atol=1e-4, err_msg=str(where))
            for r in got.changes:  # every change carries its confidences
                assert all(0.0 <= c.old_confidence <= 1.0 and 0.0 <= c.new_confidence <= 1.0 for c in r)
            untouched = set(range(len(span))) - {c.position for r in got.changes for c in r}
            assert all(got.tokens[i] == span[i] for i in untouched), where


def test_revision_refuses_bad_arguments(world):
    model = world.model("gqa2_yarn4")
    span = [101, 102, 103]
    for kw, needle in [(dict(k=0), "k must be"), (dict(k=4), "k must be"), (dict(rounds=0), "rounds"),
                       (dict(below=0.0), "below must be"), (dict(below=2.0), "below must be"),
                       (dict(positions=[3]), "positions must be"), (dict(positions=[]), "positions must be")]:
        with pytest.raises(ValueError, match=needle):
            model.revise([101], span, **kw)
    with pytest.raises(ValueError, match="mask id"):
        model.revise([101], [101, model.info.mask_token_id])
