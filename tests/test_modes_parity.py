"""The generation modes of the runtime against the PyTorch reference of
tests/mode_reference.py (docs/generation.md; spec/nld-model.md section 6):
same tokens, same forward count, same acceptance lengths, on peaked random
checkpoints where diffusion commits several tokens per pass, an EOS lands
inside blocks and linear speculation accepts drafts partly (the checkpoints,
prompts and cases are tests/mode_world.py's).

Tests named test_reference_* check the reference alone (transformers'
generate, self-speculation == AR, the matrix really exercises the rules);
the others need the runtime's Model.generate.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

import mode_reference
import nld_cpp
from mode_reference import RefModel, ar_generate, linear_spec_generate, single_thread
from mode_world import (FIRST_ID, MODES, N_CTX, PARITY_CASES, PROMPTS, STOP_BUDGET, VARIANTS, Case, describe,
                        first_new_token, generate)
from reference import EXACT_CACHE, greedy_generate

pytestmark = pytest.mark.model

# -- the reference alone ---------------------------------------------------------

@pytest.mark.parametrize("variant", list(VARIANTS))
def test_reference_ar_matches_transformers_generate(variant, world):
    ref = world.ref(variant)
    for name in PROMPTS:
        prompt = world.prompt(variant, name)
        ours = ar_generate(ref, prompt, 24, [ref.eos_id]).tokens
        with single_thread():
            theirs = greedy_generate(ref.model, prompt, 24, ref.mask_id)
        assert ours == theirs, name


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_reference_spec_equals_ar(variant, world):
    for case in PARITY_CASES:
        if case.variant == variant and case.mode.startswith("spec"):
            spec = world.result(case)
            ar = world.result(Case(variant, case.prompt, "ar", None, case.n, case.stops))
            assert (spec.tokens, spec.finish_reason) == (ar.tokens, ar.finish_reason), str(case)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_reference_budget_cuts_a_prefix(variant, world):
    """A smaller budget cuts a prefix of the longer run: tokens are never
    re-decided, so stopping once the budget is decided changes nothing before
    it (docs/generation.md, Block diffusion step 5)."""
    runs = [c for c in PARITY_CASES if c.variant == variant and c.stops == "eos"]
    for short in runs:
        for long in runs:
            if (long.prompt, long.mode, long.block) == (short.prompt, short.mode, short.block) and long.n > short.n:
                cut, full = world.result(short), world.result(long).tokens
                assert cut.tokens == full[: len(cut.tokens)], (str(short), str(long))
                assert cut.finish_reason == "stop" or len(cut.tokens) == short.n, str(short)


def test_reference_matrix_exercises_the_rules(world):
    results = {case: world.result(case) for case in PARITY_CASES}
    diffusion = [r for c, r in results.items() if c.mode.startswith("diffusion")]
    accepts = [(m, c.block) for c, r in results.items() if c.mode.startswith("spec") for m in r.accepted]
    counts = {
        "multi-commit passes (diffusion 0.9)": sum(r.multi_commits for c, r in results.items()
                                                   if c.mode == "diffusion-0.9"),
        "multi-commit draft passes (spec 0.5)": sum(r.multi_commits for c, r in results.items()
                                                    if c.mode.endswith("0.5") and c.mode.startswith("spec")),
        "EOS inside a block": sum(r.eos_in_block for r in diffusion),
        "EOS rule with masks left": sum(r.eos_early_stops for r in diffusion),
        "EOS seeds after a block (diffusion)": sum(r.finish_reason == "stop" and len(r.tokens) > 1 and
                                                   (len(r.tokens) - 1) % c.block == 0 and r.eos_in_block == 0
                                                   for c, r in results.items() if c.mode.startswith("diffusion")),
        "partial accepts": sum(0 < m < b - 1 for m, b in accepts),
        "full accepts": sum(m == b - 1 for m, b in accepts),
        "zero accepts": sum(m == 0 for m, _ in accepts),
        "finish stop (ar, spec)": sum(r.finish_reason == "stop" for c, r in results.items()
                                      if not c.mode.startswith("diffusion")),
        "finish stop": sum(r.finish_reason == "stop" for r in results.values()),
        "finish length": sum(r.finish_reason == "length" for r in results.values()),
    }
    print("exercised on the reference:", counts)
    for key in ("multi-commit passes (diffusion 0.9)", "multi-commit draft passes (spec 0.5)", "EOS inside a block",
                "EOS rule with masks left", "EOS seeds after a block (diffusion)", "partial accepts",
                "finish stop (ar, spec)", "finish length"):
        assert counts[key] > 0, (key, counts)
    assert counts["full accepts"] + counts["zero accepts"] > 0, counts


# -- the runtime against the reference -------------------------------------------

@pytest.mark.parametrize("case", PARITY_CASES, ids=str)
def test_mode_parity(case, world):
    model = world.model(case.variant)
    want = world.result(case)
    got = generate(model, world.prompt(case.variant, case.prompt), case.mode, case.block, case.n,
                   world.stop_tokens(case))
    assert (got.tokens, got.n_forwards, got.finish_reason) == (want.tokens, want.nfe, want.finish_reason), \
        describe(want)
    if case.mode.startswith("spec"):
        assert list(got.accepted_lengths) == want.accepted, describe(want)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_context_full_finishes_with_context(variant, world):
    """n_ctx = prompt + 10 with blocks of 8: the next forward stops fitting,
    finish_reason "context" with the tokens so far."""
    world.model(variant)  # skips without the runtime
    ref = world.ref(variant)
    for name in PROMPTS:
        prompt = world.prompt(variant, name)
        n_ctx = len(prompt) + 10
        with nld_cpp.Model(world.gguf(variant).path, n_ctx=n_ctx, n_threads=2, **EXACT_CACHE) as model:
            for mode in ("ar", "diffusion-0.9", "diffusion-fixed", "spec-lora", "spec-nolora-0.5"):
                block = None if mode == "ar" else 8
                want = mode_reference.generate(ref, prompt, max_new_tokens=STOP_BUDGET, stop_ids=[ref.eos_id],
                                               block_length=block, n_ctx=n_ctx, **MODES[mode])
                assert want.finish_reason == "context"
                got = generate(model, prompt, mode, block, STOP_BUDGET)
                assert (got.tokens, got.n_forwards, got.finish_reason) == (want.tokens, want.nfe, "context"), \
                    (name, mode, describe(want))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_max_tokens_one(variant, world):
    model = world.model(variant)
    ref = world.ref(variant)
    for name in PROMPTS:
        prompt = world.prompt(variant, name)
        first = ar_generate(ref, prompt, 1, [ref.eos_id])
        for mode, nfe in (("ar", 1), ("diffusion-0.9", 0), ("diffusion-fixed", 0), ("spec-lora", 1),
                          ("spec-quadratic", None)):
            got = generate(model, prompt, mode, None if mode == "ar" else 8, 1)
            assert (got.tokens, got.finish_reason) == (first.tokens, first.finish_reason), (name, mode)
            assert nfe is None or got.n_forwards == nfe, (name, mode)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_eos_as_seed(variant, world):
    """The stop token is the first token: every mode emits it alone (diffusion
    counts no forward: the prefill is not counted and no block is built)."""
    model = world.model(variant)
    for name in PROMPTS:
        prompt = world.prompt(variant, name)
        seed = world.result(Case(variant, name, "ar", None, 5, "eos")).tokens[0]
        for mode, nfe in (("ar", 1), ("diffusion-0.9", 0), ("spec-lora", 1), ("spec-quadratic", None)):
            got = generate(model, prompt, mode, None if mode == "ar" else 8, 16, [seed])
            assert (got.tokens, got.finish_reason) == ([seed], "stop"), (name, mode)
            assert nfe is None or got.n_forwards == nfe, (name, mode)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_eos_mid_block_cuts_the_output(variant, world):
    """Committed tokens are never re-decided, so a stop id cuts the no-stop
    output right after its first occurrence, in every mode."""
    model = world.model(variant)
    for name in PROMPTS:
        prompt = world.prompt(variant, name)
        for mode, block in (("ar", None), ("diffusion-0.9", 8), ("diffusion-fixed", 4), ("spec-lora", 8),
                            ("spec-quadratic", 8)):
            full = generate(model, prompt, mode, block, 40).tokens
            stop = first_new_token(full, 10, block if mode.startswith("diffusion") else None)
            if not stop:
                continue
            got = generate(model, prompt, mode, block, 40, stop)
            assert got.tokens == full[: full.index(stop[0]) + 1] and got.finish_reason == "stop", (name, mode)


# (mode, block lengths): the quadratic forward holds B + B*B rows, so B 32 runs once (below)
SPEC_EQUALS_AR = [("spec", (2, 4, 8, 32)), ("spec-quadratic", (2, 4, 8))]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_spec_modes_equal_ar(variant, world):
    """At temperature 0 both self-speculation modes emit AR's tokens, with the
    drafter LoRA on and off (B 2 makes every accept a full one)."""
    model = world.model(variant)
    for name in PROMPTS:
        prompt = world.prompt(variant, name)
        ar = generate(model, prompt, "ar", None, 40)
        runs = [(mode, block, lora) for mode, blocks in SPEC_EQUALS_AR for block in blocks for lora in (True, False)]
        if name == "short":
            runs.append(("spec-quadratic", 32, True))
        for mode, block, use_lora in runs:
            got = generate(model, prompt, mode, block, 40, use_lora=use_lora)
            assert (got.tokens, got.finish_reason) == (ar.tokens, ar.finish_reason), (name, mode, use_lora, block)
            assert all(0 <= m < block for m in got.accepted_lengths)


@pytest.mark.parametrize("mode", ["ar", "diffusion", "spec", "spec-quadratic"])
def test_steps_concatenate_to_generate(mode, world):
    """generate_steps is generate, one step at a time: the tokens concatenate,
    n_forwards is a running count, block modes show their canvas."""
    variant = "gqa2_yarn4"
    prompt = world.prompt(variant, "short")
    block = None if mode == "ar" else 8
    model = world.model(variant)
    res = generate(model, prompt, mode, block, 21)
    model.truncate(0)
    steps = list(model.generate_steps(prompt, mode=mode, max_tokens=21, block_length=block, temperature=0.0))
    assert [t for s in steps for t in s.tokens] == res.tokens
    assert [s.n_forwards for s in steps] == sorted(s.n_forwards for s in steps)
    assert steps[-1].n_forwards == res.n_forwards and steps[-1].finish_reason == res.finish_reason
    canvases = [s.canvas for s in steps if s.canvas is not None]
    if mode == "ar":
        assert not canvases
    else:
        assert canvases and all(len(c) == 8 for c in canvases)
    if mode == "diffusion":
        assert any(model.info.mask_token_id in c for c in canvases), "a partly denoised block is visible"
    if mode == "spec":
        assert [s.accepted for s in steps if s.accepted is not None] == list(res.accepted_lengths)


SAMPLING = dict(temperature=0.8, top_k=20, top_p=0.9)


@pytest.mark.parametrize("mode", ["ar", "diffusion", "spec"])
def test_sampling_reproducible(mode, world):
    block = None if mode == "ar" else 8
    differs = False
    for variant in VARIANTS:
        for name in PROMPTS:
            prompt = world.prompt(variant, name)
            runs = [generate(world.model(variant, threads), prompt, mode, block, 24, seed=seed, **SAMPLING)
                    for threads, seed in ((2, 123), (2, 123), (1, 123), (2, 7))]
            assert runs[0].tokens == runs[1].tokens == runs[2].tokens, (variant, name)
            assert runs[0].n_forwards == runs[1].n_forwards == runs[2].n_forwards, (variant, name)
            differs |= runs[3].tokens != runs[0].tokens
    assert differs, "another seed should change the output somewhere"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cached_prefix_does_not_change_output(variant, world):
    """A follow-up prompt that extends the last one reuses the cache; the
    output equals a cold start."""
    model = world.model(variant)
    prompt = world.prompt(variant, "short")
    for mode, block in (("ar", None), ("diffusion-0.9", 8), ("spec-lora", 4)):
        first = generate(model, prompt, mode, block, 12).tokens
        follow = prompt + first + [FIRST_ID]
        warm = generate(model, follow, mode, block, 12)
        model.truncate(0)
        cold = generate(model, follow, mode, block, 12)
        assert (warm.tokens, warm.n_forwards) == (cold.tokens, cold.n_forwards), mode


def test_lora_adapter_loading(world):
    """The adapter beside the model is loaded; without it use_lora falls
    back to the base drafter (the reference with the LoRA off)."""
    variant = "gqa2_yarn4"
    assert world.model(variant).has_lora
    plain = world.gguf(variant, lora=False)
    assert plain.lora_path is None
    ref = RefModel(world.ckpt(variant), use_lora_weights=False)
    prompt = world.prompt(variant, "short")
    want = linear_spec_generate(ref, prompt, 21, 8, 0.0, True, [ref.eos_id])
    with nld_cpp.Model(plain.path, n_ctx=N_CTX, n_threads=2, **EXACT_CACHE) as model:
        assert not model.has_lora
        got = generate(model, prompt, "spec-lora", 8, 21)
        assert (got.tokens, got.n_forwards, list(got.accepted_lengths)) == (want.tokens, want.nfe, want.accepted)
    with nld_cpp.Model(plain.path, n_ctx=N_CTX, n_threads=2, lora_path=world.gguf(variant).lora_path, **EXACT_CACHE) as model:
        assert model.has_lora
        want = world.result(Case(variant, "short", "spec-lora", 8, 21, "eos"))
        got = generate(model, prompt, "spec-lora", 8, 21)
        assert (got.tokens, got.n_forwards, list(got.accepted_lengths)) == (want.tokens, want.nfe, want.accepted)


# name -> generate keywords, given n_vocab
BAD_PARAMETERS: dict[str, Callable[[int], dict[str, Any]]] = {
    "unknown-mode": lambda nv: dict(mode="beam"),
    "block-0": lambda nv: dict(mode="diffusion", block_length=0),
    "block-negative": lambda nv: dict(mode="spec", block_length=-4),
    "threshold-negative": lambda nv: dict(mode="diffusion", threshold=-0.1),
    "threshold-above-1": lambda nv: dict(mode="spec", threshold=1.5),
    "temperature-negative": lambda nv: dict(mode="ar", temperature=-0.5),
    "top-p-0": lambda nv: dict(mode="ar", temperature=0.8, top_p=0.0),
    "top-p-above-1": lambda nv: dict(mode="diffusion", temperature=0.8, top_p=1.5),
    "max-tokens-0": lambda nv: dict(mode="ar", max_tokens=0),
    "max-tokens-negative": lambda nv: dict(mode="spec", max_tokens=-3),
    "empty-prompt": lambda nv: dict(mode="ar", prompt=[]),
    "negative-token": lambda nv: dict(mode="diffusion", prompt=[200, -1]),
    "token-out-of-range": lambda nv: dict(mode="ar", prompt=[200, nv]),
    "stop-out-of-range": lambda nv: dict(mode="ar", stop_tokens=(nv,)),
    "stop-negative": lambda nv: dict(mode="spec", stop_tokens=(-1,)),
}


@pytest.mark.parametrize("name", list(BAD_PARAMETERS))
def test_bad_parameters_rejected(name, world):
    model = world.model("gqa2_yarn4")
    kwargs = dict(dict(prompt=[200, 300], max_tokens=8), **BAD_PARAMETERS[name](model.info.n_vocab))
    prompt = kwargs.pop("prompt")
    with pytest.raises((nld_cpp.NldError, ValueError)):
        model.generate(prompt, **kwargs)
    with pytest.raises((nld_cpp.NldError, ValueError)):
        list(model.generate_steps(prompt, **kwargs))
    assert model.generate([200, 300], mode="ar", max_tokens=2).tokens  # the model still works
