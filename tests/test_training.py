"""The training script of the shipped tiny model (train/train_tiny.py, issue 4)
runs a few steps on a tiny config, and what it saves is a real NLD checkpoint:
its forward is transformers' Ministral-3, the converter reads it, and the
runtime loads and generates from it in every mode."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "train"))

import corpus  # noqa: E402
import corpus_v2  # noqa: E402
import train_tiny  # noqa: E402
from tiny_model import Config, TinyNLD  # noqa: E402

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-train") / "hf"
    train_tiny.main(["--tiny-test", "--out", str(out)])
    return out


def test_saved_layout(trained: Path):
    names = {p.name for p in trained.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "chat_template.jinja", "linear_spec_lora"} <= names
    cfg = json.loads((trained / "config.json").read_text())
    assert cfg["architectures"] == ["NemotronLabsDiffusionModel"] and cfg["mask_token_id"] == 100
    assert cfg["rope_parameters"]["rope_type"] == "yarn" and cfg["eos_token_id"] == 11
    from safetensors import safe_open
    with safe_open(str(trained / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "diffusion_head.weight" in keys and "encoder.embed_tokens.weight" in keys
    assert all(k.startswith(("encoder.", "diffusion_head.")) for k in keys)
    with safe_open(str(trained / "linear_spec_lora" / "adapter_model.safetensors"), "pt") as f:
        lora = set(f.keys())
    assert "base_model.model.encoder.layers.0.self_attn.o_proj.lora_A.weight" in lora
    info = json.loads((trained / "training_info.json").read_text())
    assert info["stage"] == "done" and info["log"]


def test_tokenizer_layout(trained: Path):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(trained / "tokenizer.json"))
    vocab = tok.get_vocab()
    assert vocab["<|im_start|>"] == 10 and vocab["<|im_end|>"] == 11 and vocab["<think>"] == 12
    assert vocab["</think>"] == 13 and vocab["<SPECIAL_100>"] == 100 and vocab["Ċ"] == 1010
    assert len(vocab) > 1256  # merges were learned
    text = corpus.render_prompt("What is 12 + 7?")
    ids = tok.encode(text, add_special_tokens=False).ids
    assert ids[0] == 10 and ids[-2:] == [12, 13] and 100 not in ids
    assert tok.decode(ids, skip_special_tokens=False) == text


def test_forward_matches_transformers(trained: Path):
    sys.path.insert(0, str(ROOT / "tests"))
    import reference
    from safetensors.torch import load_file

    config = Config(**json.loads((trained / "training_info.json").read_text())["config"])
    model = TinyNLD(config)
    model.load_state_dict(load_file(str(trained / "model.safetensors")))
    ref = reference.load_reference(trained)
    tokens = list(range(1000, 1024))
    n = len(tokens)
    with torch.no_grad():
        causal = model(torch.tensor([tokens]), torch.arange(n)[None], torch.ones(n, n).tril().bool()[None, None])[0]
        block = model(torch.tensor([tokens]), torch.arange(n)[None], (reference.block_mask(16, 8) == 0))[0, 16:]
    torch.testing.assert_close(causal, reference.causal_logits(ref, tokens), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(block, reference.block_logits(ref, tokens[:16], tokens[16:]), atol=1e-4, rtol=1e-4)


def test_diffusion_batch_mask():
    """Noised rows see the clean tokens before their block and their own noised block; the seed stays clean."""
    prompt, answer = [10, 1100, 1101, 11, 10, 12, 13], [1200 + i for i in range(20)] + [11]
    batch = train_tiny.make_batch([(prompt, answer)], 16, random.Random(0))
    lc, a = batch.clean_len, len(prompt)
    assert lc == a + 32 and batch.tokens.shape[1] == lc + 32
    allowed = batch.allowed[0, 0]
    row = lc + 17  # block 1, index 1: position a + 17
    assert batch.positions[0, row] == a + 17
    assert allowed[row, :a + 16].all() and not allowed[row, a + 16:lc].any()
    assert allowed[row, lc + 16:lc + 32].all() and not allowed[row, lc:lc + 16].any()
    assert batch.tokens[0, lc] == answer[0] and batch.tokens[0, lc + 16] == answer[16]  # seeds never masked
    assert allowed[:lc, :lc].equal(torch.ones(lc, lc).tril().bool())


def test_held_out_disjoint_from_training():
    prompts = corpus.held_out_prompts()
    assert len(prompts) == corpus.N_HELD_OUT
    stream = corpus.train_stream(exclude=prompts)
    assert not any(next(stream).prompt in prompts for _ in range(20000))


def test_second_corpus_held_out_is_disjoint_and_committed():
    """The second corpus's evaluation set (single turns and 3-turn chats) is
    the shipped python/nld_cpp/models/held_out.json, and no training example shares a
    user turn with it."""
    held = corpus_v2.held_out()
    assert json.loads((ROOT / "python" / "nld_cpp" / "models" / "held_out.json").read_text()) == corpus_v2.held_out_json(held)
    singles = [e for e in held if len(e.turns) == 1]
    assert len(singles) >= 300 and sum(len(e.turns) == 3 for e in held) == corpus_v2.HELD_OUT_CHATS
    prompts = corpus_v2.held_out_prompts()
    stream = corpus_v2.train_stream(exclude=prompts)
    for _ in range(20000):
        assert not any(user in prompts for user, _ in next(stream).turns)


def test_second_corpus_renders_what_the_chat_template_renders():
    from nld_cpp.chat import CHATML_THINK_TEMPLATE, ChatTemplate

    template = ChatTemplate(CHATML_THINK_TEMPLATE)
    stream = corpus_v2.train_stream()
    chats = [e for e in (next(stream) for _ in range(400)) if len(e.turns) > 1]
    assert any(e.system for e in chats) and any(not e.system for e in chats)
    for ex in chats[:40]:
        assert corpus_v2.render_context(ex) == template.render(ex.messages(), add_generation_prompt=True)


def test_training_runs_on_the_second_corpus(tmp_path: Path):
    out = tmp_path / "hf2"
    train_tiny.main(["--tiny-test", "--set", "corpus=2", "--out", str(out)])
    assert json.loads((out / "training_info.json").read_text())["config"]["corpus"] == 2


@pytest.mark.model
def test_checkpoint_converts_loads_and_generates(trained: Path, tmp_path: Path):
    import nld_cpp
    from nld_cpp.convert import convert_checkpoint

    result = convert_checkpoint(trained, tmp_path / "tiny.gguf", outtype="q8_0", progress=False)
    assert result.lora_path is not None and Path(result.lora_path).is_file()
    with nld_cpp.Model(result.path, n_ctx=256, n_threads=1) as model:
        assert model.has_lora
        from tokenizers import Tokenizer
        tok = Tokenizer.from_str(model.metadata_string("tokenizer.huggingface.json"))
        prompt = tok.encode(corpus.render_prompt("Copy: a b c"), add_special_tokens=False).ids
        outputs = {}
        for mode in ("ar", "diffusion", "spec", "spec-quadratic"):
            model.truncate(0)
            res = model.generate(prompt, mode=mode, max_tokens=12)
            assert 1 <= len(res.tokens) <= 12 and 100 not in res.tokens
            outputs[mode] = res.tokens
        assert outputs["spec"] == outputs["ar"] == outputs["spec-quadratic"]


@pytest.mark.model
def test_greedy_answers_are_the_runtimes_greedy_answers(trained: Path, tmp_path: Path):
    """The drafter's "greedy" targets (train_tiny.greedy_answers, torch) are
    the tokens the runtime's AR mode generates from the converted checkpoint."""
    import nld_cpp
    from nld_cpp.convert import convert_checkpoint
    from safetensors.torch import load_file

    cfg = json.loads((trained / "training_info.json").read_text())["config"]
    model = TinyNLD(Config(**cfg))
    model.load_state_dict(load_file(str(trained / "model.safetensors")))
    model.eval()
    enc = train_tiny.Encoder(json.loads((trained / "tokenizer.json").read_text()))
    pairs = [enc.example(corpus_v2.SINGLE[t](random.Random(i))) for i, t in enumerate(("copy", "count", "spell"))]
    ours = train_tiny.greedy_answers(model, pairs, max_new=10)
    path = convert_checkpoint(trained, tmp_path / "f32.gguf", outtype="f32", progress=False).path
    with nld_cpp.Model(path, n_ctx=256, n_threads=1) as runtime:
        for (prompt, answer), (p2, _) in zip(ours, pairs):
            assert prompt == p2
            runtime.truncate(0)
            assert runtime.generate(prompt, mode="ar", max_tokens=10).tokens == answer
