"""Mode "auto" and the adaptive draft length of spec (docs/generation.md
"Auto"): exact as AR at temperature 0 on the parity fixtures (against the
reference's AR) and on the embedded model, whatever the cost model says; and
the choices the rule makes under cost models injected by the test (rows
free: long drafts; rows priced by the row: AR, or the shortest draft). No
timing is asserted anywhere."""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest

import mode_reference
import nld_cpp
from mode_world import PROMPTS, VARIANTS
from nld_cpp.models import default_model_path, held_out, render_prompt

pytestmark = pytest.mark.model

ROWS = [1, 2, 4, 8, 16, 32]
FREE_ROWS = {"causal_s": [1e-3] * 6, "draft_s": [1e-3] * 6}  # a forward costs the same at any row count
PRICED_ROWS = {"causal_s": [1e-3 * r for r in ROWS], "draft_s": [1e-3 * r for r in ROWS]}  # each row costs a forward
COST_MODELS = {"free": FREE_ROWS, "priced": PRICED_ROWS, "measured": None}


def run(model: Any, prompt: list[int], costs: dict | None, **kw: Any) -> Any:
    """A generation on a fresh context of model with `costs` installed
    (fixed), or calibrated when None; temperature 0."""
    with model.new_context(n_ctx=model.n_ctx, n_threads=2) as ctx:
        if costs is None:
            ctx.calibrate(0.2)
        else:
            ctx.set_costs(costs)
        return ctx.generate(prompt, temperature=0.0, **kw)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_auto_and_adaptive_spec_equal_the_reference_ar(variant, world):
    """On the peaked fixtures (drafts accepted in part), auto and spec with
    block_length="auto" give the reference's AR tokens under every cost
    model, drafter on and off, with the longest draft 4, 8 or the model's."""
    ref = world.ref(variant)
    model = world.model(variant)
    for name in PROMPTS:
        prompt = world.prompt(variant, name)
        want = mode_reference.ar_generate(ref, prompt, 40, [ref.eos_id])
        for costs_name, costs in COST_MODELS.items():
            for kw in (dict(mode="auto"), dict(mode="auto", block_length=4, use_lora=False),
                       dict(mode="spec", block_length="auto"), dict(mode="auto", block_length=8)):
                got = run(model, prompt, costs, max_tokens=40, **kw)
                assert (got.tokens, got.finish_reason) == (want.tokens, want.finish_reason), (name, costs_name, kw)
                longest = kw.get("block_length") if isinstance(kw.get("block_length"), int) else model.info.block_size
                assert all(2 <= k <= longest for k in got.draft_lengths), got.draft_lengths
                assert all(0 <= m < k for k, m in zip(got.draft_lengths, got.accepted_lengths))


@pytest.fixture(scope="module")
def tiny() -> Iterator[Any]:
    with nld_cpp.Model(str(default_model_path()), n_ctx=512, n_threads=2) as model:
        yield model


def family_prompts(model: Any) -> dict[str, list[int]]:
    """The first held-out prompt of each task family (first turns)."""
    out: dict[str, list[int]] = {}
    for item in held_out():
        if item["task"] not in out:
            out[item["task"]] = model.tokenize(render_prompt(item["turns"][0]["user"], (), item["system"]))
    return out


def test_auto_equals_ar_on_the_embedded_model(tiny):
    """Every task family, each cost model: auto and adaptive spec emit AR's
    tokens (the model's drafts are accepted often: rounds really run)."""
    rounds = 0
    for family, prompt in family_prompts(tiny).items():
        tiny.truncate(0)
        ar = tiny.generate(prompt, mode="ar", max_tokens=48)
        for costs_name, costs in COST_MODELS.items():
            for kw in (dict(mode="auto"), dict(mode="spec", block_length="auto")):
                got = run(tiny, prompt, costs, max_tokens=48, **kw)
                assert (got.tokens, got.finish_reason) == (ar.tokens, ar.finish_reason), (family, costs_name, kw)
                rounds += got.rounds["spec"]
    assert rounds > 0


def test_free_rows_pick_long_drafts(tiny):
    """Rows free and drafts accepted: auto runs rounds, at the longest draft
    the budget allows, and no AR step on the families where drafts pay."""
    prompts = family_prompts(tiny)
    for family in ("count", "repeat", "copy"):
        got = run(tiny, prompts[family], FREE_ROWS, mode="auto", max_tokens=48)
        assert got.rounds["spec"] >= 1 and got.rounds["ar"] == 0, (family, got.rounds)
        # the longest draft the block length and the tokens still to come allow
        left = 48 - 1
        for k, m in zip(got.draft_lengths, got.accepted_lengths):
            assert k == min(tiny.info.block_size, left), (family, got.draft_lengths)
            left -= m + 1
        assert sum(got.acceptance[tiny.info.block_size]) >= 1


def test_priced_rows_pick_ar_and_the_shortest_draft(tiny):
    """Every extra row as dear as a forward: a round can never beat an AR
    step (k tokens at best for 2k rows), so auto never runs one, not even a
    probe; adaptive spec, which must run rounds, drafts 2 at a time."""
    for family, prompt in family_prompts(tiny).items():
        got = run(tiny, prompt, PRICED_ROWS, mode="auto", max_tokens=48)
        assert got.rounds == {"ar": len(got.tokens) - 1, "spec": 0}, family
        spec = run(tiny, prompt, PRICED_ROWS, mode="spec", block_length="auto", max_tokens=48)
        assert set(spec.draft_lengths) <= {2} and spec.rounds["ar"] == 0, family


def test_auto_probes_again_after_a_run_of_ar_steps(tiny):
    """Rows cheap but not free, and a history of rejected drafts on the
    context (rounds over random tokens): auto starts with AR steps and,
    after its probe interval of 32 AR steps, tries a round again, which on
    a counting answer pays; the output stays AR's."""
    import numpy as np

    prompt = family_prompts(tiny)["count"]
    tiny.truncate(0)
    ar = tiny.generate(prompt, mode="ar", max_tokens=200, ignore_eos=True)
    cheap = [1e-3 * (1 + 0.02 * (r - 1)) for r in ROWS]
    with tiny.new_context(n_ctx=512, n_threads=2) as ctx:
        ctx.set_costs({"causal_s": cheap, "draft_s": cheap})
        junk = np.random.default_rng(0).integers(20, tiny.n_vocab - 1, 40).tolist()
        history = ctx.generate(junk, mode="spec", block_length=16, max_tokens=12, ignore_eos=True)
        assert max(history.accepted_lengths) <= 1
        steps = list(ctx.generate_steps(prompt, mode="auto", max_tokens=200, ignore_eos=True))
    assert [t for s in steps for t in s.tokens] == ar.tokens
    kinds = ["ar" if s.block_length is None else "round" for s in steps[1:]]  # steps[0]: the prefill's token
    assert kinds[:32] == ["ar"] * 32 and kinds[32] == "round", kinds


def test_calibration_is_measured_once_and_kept_on_disk(tmp_path, monkeypatch):
    """The first auto generation measures the cost model and writes it to the
    cache directory; a second load of the same file reads it back instead
    of measuring; NLD_CALIBRATION=off measures nothing."""
    monkeypatch.setenv("NLD_CACHE_DIR", str(tmp_path / "cache"))
    path = str(default_model_path())
    with nld_cpp.Model(path, n_ctx=256, n_threads=2) as model:
        assert not model.costs["measured"]
        prompt = family_prompts(model)["copy"]
        model.generate(prompt, mode="auto", max_tokens=8)
        assert model.costs["measured"]
    files = list((tmp_path / "cache").glob("costs-*.json"))
    assert len(files) == 1
    stored = json.loads(files[0].read_text())
    assert stored["rows"] == ROWS and all(t > 0 for t in stored["causal_s"] + stored["draft_s"][1:])
    with nld_cpp.Model(path, n_ctx=256, n_threads=2) as model:
        model._ensure_costs()
        assert model.costs["causal_s"] == stored["causal_s"]
    monkeypatch.setenv("NLD_CALIBRATION", "off")
    monkeypatch.setenv("NLD_CACHE_DIR", str(tmp_path / "other"))
    with nld_cpp.Model(path, n_ctx=256, n_threads=2) as model:
        model.generate(prompt, mode="auto", max_tokens=8)
        assert not model.costs["measured"]
    assert not (tmp_path / "other").exists()


def test_scheduled_auto_equals_ar(tiny):
    """Auto generations batched by a scheduler (costs priced at the margin of
    the batch) still emit AR's tokens."""
    prompts = list(family_prompts(tiny).values())[:4]
    want = []
    for p in prompts:
        tiny.truncate(0)
        want.append(tiny.generate(p, mode="ar", max_tokens=32).tokens)
    with nld_cpp.Scheduler(tiny, n_threads=2) as sched:
        contexts = [tiny.new_context(n_ctx=256, n_threads=2) for _ in prompts]
        for ctx in contexts:
            ctx.set_costs(FREE_ROWS)
            sched.attach(ctx)
        gens = [ctx.generate_steps(p, mode="auto", max_tokens=32) for ctx, p in zip(contexts, prompts)]
        got: list[list[int]] = [[] for _ in prompts]
        live = set(range(len(gens)))
        for _ in range(1000):
            if not live:
                break
            for i in sorted(live):
                step = next(gens[i])
                got[i].extend(step.tokens)
                if step.finish_reason is not None:
                    live.discard(i)
        assert not live
        for ctx in contexts:
            ctx.close()
    assert got == want


BAD = {
    "threshold": (dict(mode="auto", threshold=0.5), "threshold must be 0"),
    "adaptive threshold": (dict(mode="spec", block_length="auto", threshold=0.5), "threshold must be 0"),
    "auto block for diffusion": (dict(mode="diffusion", block_length="auto"), 'block_length="auto"'),
    "block too short": (dict(mode="auto", block_length=1), "block_length must be in"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_auto_arguments_are_named(name, tiny):
    kw, message = BAD[name]
    with pytest.raises((ValueError, nld_cpp.NldError), match=message):
        tiny.generate([1, 2, 3], max_tokens=4, **kw)


@pytest.mark.parametrize("bad", [{"causal_s": [0.0] * 6}, {"causal_s": [1.0] * 5}, {"causal_s": [float("nan")] * 6},
                                 {"causal_s": [1.0] * 6, "step_overhead_s": -1.0},
                                 {"causal_s": [1.0] * 6, "rows": [1, 2, 3, 4, 5, 6]}])
def test_bad_cost_models_are_refused_and_change_nothing(bad, tiny):
    before = tiny.costs
    with pytest.raises((ValueError, nld_cpp.NldError)):
        tiny.set_costs(bad)
    assert tiny.costs == before
