"""Infill and revision on the embedded model, over a subset of
bench/eval_infill.py's held-out tasks (true answers from held_out.json, a
gap cut from their middle): filling with the suffix in view beats AR told
the suffix in its prompt on every family, and revision leaves alone what
the model does not doubt while the bar (below) makes it correct more
planted errors than re-deciding any weakest token does."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import nld_cpp
from nld_cpp.models import default_model_path

pytestmark = pytest.mark.model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import eval_infill  # noqa: E402


@pytest.fixture(scope="module")
def result():
    with nld_cpp.Model(str(default_model_path()), n_ctx=512, n_threads=2) as model:
        yield eval_infill.evaluate(model, every=2, bars=(1.0, 0.001))


def test_infill_beats_ar_with_the_suffix_in_its_prompt(result):
    rows = result["infill"]
    assert {key.split("/")[0] for key in rows} == set(eval_infill.FAMILIES)
    for key, r in rows.items():
        assert r["n"] >= 5, key
        if key.endswith("/1"):
            assert r["infill_acc"] > r["ar_suffix_hint_acc"], (key, r)
        assert 0 < r["infill_tokens_per_forward"] <= int(key.split("/")[1]), (key, r)


def test_the_bar_corrects_more_and_breaks_less(result):
    any_pos, barred = result["revision"]["1.0"], result["revision"]["0.001"]
    assert barred["planted"] == any_pos["planted"] >= 30
    assert barred["corrected"] > any_pos["corrected"]
    assert barred["unchanged"] > any_pos["unchanged"]


def test_a_span_without_doubt_is_left_alone():
    """When no token scores under the bar, revision is a fixed point: the
    span comes back as it was, no fill was run (only the scoring passes)."""
    from nld_cpp.models import held_out, render_prompt

    with nld_cpp.Model(str(default_model_path()), n_ctx=512, n_threads=2) as model:
        checked = 0
        for it in held_out()[:60]:
            turn = it["turns"][0]
            prompt = model.tokenize(render_prompt(turn["user"], (), it["system"]))
            span = model.tokenize(turn["answer"]) + [model.info.eos_token_id]
            res = model.revise(prompt, span, k=2, rounds=3, below=1e-3)
            if min(res.confidences) >= 1e-3 and not res.changed:
                scoring = len(span) - (len(span) + model.info.block_size - 1) // model.info.block_size
                scoring += (len(span) + model.info.block_size - 1) // model.info.block_size
                assert res.tokens == span and res.n_forwards == scoring and res.changes == [[]]
                checked += 1
        assert checked >= 10
