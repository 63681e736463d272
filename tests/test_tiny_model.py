"""The tiny trained model that ships in the package (issues 4 and 22) loads,
and in every mode answers held-out prompts and later turns of held-out chats
correctly (greedy); the self-speculation modes reproduce AR's tokens exactly
(docs/generation.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import nld_cpp
from nld_cpp.models import render_prompt

pytestmark = pytest.mark.model

MODELS_DIR = Path(__file__).resolve().parent.parent / "python" / "nld_cpp" / "models"
MODEL = MODELS_DIR / "nld-tiny-q8_0.gguf"
MODES = ["ar", "diffusion", "spec", "spec-quadratic"]
# Held-out single turns (python/nld_cpp/models/held_out.json, never trained
# on) that the shipped model answers exactly in every mode, one per task it
# has learned in all four modes (copy, repeat, reverse, count, spell, key
# lookup); bench/results/eval_tiny.json has the whole picture.
CHOSEN = [10, 35, 63, 124, 180, 241]
# Three-turn chats and the turns the shipped model answers exactly in every
# mode with its own earlier answers in the history: a later turn right after
# a right one (363: fill, fill, copy) and after a wrong one (352: fill, add,
# fill; 355 with a system prompt: fill, count down, fill). No chat of the set
# has all three turns right in every mode.
CHATS = {352: (0, 2), 355: (0, 2), 363: (0, 1)}

if not MODEL.is_file():
    pytest.skip(f"the shipped model is missing: {MODEL}", allow_module_level=True)


@pytest.fixture(scope="module")
def model():
    with nld_cpp.Model(MODEL, n_ctx=512, n_threads=2) as m:
        yield m


@pytest.fixture(scope="module")
def tokenizer(model):
    from tokenizers import Tokenizer
    return Tokenizer.from_str(model.metadata_string("tokenizer.huggingface.json"))


def test_shipped_files():
    lora = MODELS_DIR / "nld-tiny-q8_0.lora.gguf"
    assert lora.is_file()
    total = sum(p.stat().st_size for p in MODELS_DIR.iterdir() if p.is_file())
    assert total <= 20 * 1024 * 1024


def test_loads_with_drafter(model):
    assert model.has_lora
    assert model.info.block_size in (8, 16, 32)
    assert model.metadata_string("tokenizer.chat_template")


def test_default_model_path_is_the_shipped_file():
    try:
        from nld_cpp.models import default_model_path
    except ImportError:  # an installed nld_cpp older than the package data
        pytest.skip("nld_cpp.models is not in the installed package")
    assert default_model_path().name == MODEL.name


def _answer_turn_by_turn(model, tokenizer, item, mode):
    """Each turn's answer and tokens, the mode's own earlier answers in the
    history, as a user would see them."""
    history, answers, tokens = [], [], []
    for turn in item["turns"]:
        text = render_prompt(turn["user"], history, item["system"])
        prompt = tokenizer.encode(text, add_special_tokens=False).ids
        model.truncate(0)
        res = model.generate(prompt, mode=mode, max_tokens=64)
        answer = tokenizer.decode(res.tokens[:-1] if res.finish_reason == "stop" else res.tokens,
                                  skip_special_tokens=True).strip()
        answers.append((answer, res.finish_reason))
        history.append((turn["user"], answer))
        tokens += res.tokens
    return answers, tokens


@pytest.mark.parametrize("index", CHOSEN + sorted(CHATS))
def test_answers_held_out_prompts_in_every_mode(model, tokenizer, index):
    """The chosen turns exactly right in every mode, ending on EOS; the
    self-speculation modes give AR's tokens over the whole conversation."""
    item = json.loads((MODELS_DIR / "held_out.json").read_text())[index]
    right = CHATS.get(index, (0,))
    outputs = {}
    for mode in MODES:
        answers, outputs[mode] = _answer_turn_by_turn(model, tokenizer, item, mode)
        for t in right:
            assert answers[t] == (item["turns"][t]["answer"], "stop"), (mode, t, item["turns"][t]["user"], answers[t])
    assert outputs["spec"] == outputs["ar"] == outputs["spec-quadratic"]


def test_chosen_prompts_cover_tasks_and_chats():
    items = json.loads((MODELS_DIR / "held_out.json").read_text())
    assert all(len(items[i]["turns"]) == 1 for i in CHOSEN)
    assert len({items[i]["task"] for i in CHOSEN}) == len(CHOSEN) >= 3
    assert all(len(items[i]["turns"]) == 3 and max(turns) >= 1 for i, turns in CHATS.items())
    assert any(items[i]["system"] for i in CHATS)
