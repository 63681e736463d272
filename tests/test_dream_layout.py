"""The `dream`-architecture NLD files of a llama.cpp fork: written here from
a generated checkpoint with the `gguf` package, in that fork's layout (keys
under `dream.*`, no block-size or attention-temperature key, q/k rows left in
the Hugging Face order, the tokenizer as llama.cpp's gpt2 path writes it),
they give the logits and greedy tokens of our own mistral3 file of the same
checkpoint, in every mode, and transformers' logits; Q8_0 (quantized by the
`gguf` package) agrees with our Q8_0; a dream file without NLD's signature is
refused, saying why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import gguf
import numpy as np
import pytest

import nld_cpp
from reference import EXACT_CACHE, causal_logits, load_reference
from test_convert import gguf_name  # the HF -> llama.cpp tensor names, written out independently

pytestmark = pytest.mark.model

MODES = ["ar", "diffusion", "spec", "spec-quadratic"]


def hf_tensors(ckpt: Path) -> Dict[str, np.ndarray]:
    from safetensors.torch import load_file

    out: Dict[str, np.ndarray] = {}
    for f in sorted(ckpt.glob("*.safetensors")):
        out.update({k: v.float().numpy() for k, v in load_file(str(f)).items()})
    return out


def write_dream(ckpt: Path, dst: Path, qtype: str = "f32", signature: bool = True) -> Path:
    """The fork's layout, from the checkpoint itself: renamed tensors, nothing permuted."""
    cfg = json.loads((ckpt / "config.json").read_text())
    rope = cfg.get("rope_parameters") or dict(cfg.get("rope_scaling") or {}, rope_theta=cfg.get("rope_theta"))
    tok = json.loads((ckpt / "tokenizer.json").read_text())
    w = gguf.GGUFWriter(dst, "dream")
    a = "dream"
    w.add_uint32(f"{a}.block_count", cfg["num_hidden_layers"])
    w.add_uint32(f"{a}.context_length", cfg["max_position_embeddings"])
    w.add_uint32(f"{a}.embedding_length", cfg["hidden_size"])
    w.add_uint32(f"{a}.feed_forward_length", cfg["intermediate_size"])
    w.add_uint32(f"{a}.attention.head_count", cfg["num_attention_heads"])
    w.add_uint32(f"{a}.attention.head_count_kv", cfg["num_key_value_heads"])
    w.add_uint32(f"{a}.attention.key_length", cfg["head_dim"])
    w.add_uint32(f"{a}.attention.value_length", cfg["head_dim"])
    w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", cfg["rms_norm_eps"])
    w.add_float32(f"{a}.rope.freq_base", rope["rope_theta"])
    w.add_string(f"{a}.rope.scaling.type", "yarn")
    w.add_float32(f"{a}.rope.scaling.factor", rope["factor"])
    w.add_uint32(f"{a}.rope.scaling.original_context_length", rope["original_max_position_embeddings"])
    w.add_float32(f"{a}.rope.scaling.yarn_beta_fast", rope.get("beta_fast", 32.0))
    w.add_float32(f"{a}.rope.scaling.yarn_beta_slow", rope.get("beta_slow", 1.0))
    w.add_bool(f"{a}.attention.causal", False)
    if signature:
        w.add_bool("diffusion.shift_logits", False)
        w.add_uint32("tokenizer.ggml.mask_token_id", cfg["mask_token_id"])
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    special = {t["id"] for t in tok.get("added_tokens", []) if t.get("special")}
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_string("tokenizer.ggml.pre", "tekken")
    w.add_array("tokenizer.ggml.tokens", [t for t, _ in vocab])
    w.add_array("tokenizer.ggml.token_type", [3 if i in special else 1 for _, i in vocab])
    w.add_array("tokenizer.ggml.merges", merges)
    w.add_uint32("tokenizer.ggml.bos_token_id", cfg["bos_token_id"])
    eos = cfg["eos_token_id"]
    w.add_uint32("tokenizer.ggml.eos_token_id", eos[0] if isinstance(eos, list) else eos)
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    template = ckpt / "chat_template.jinja"
    if template.is_file():
        w.add_string("tokenizer.chat_template", template.read_text())
    for hf, data in hf_tensors(ckpt).items():
        name = gguf_name(hf)
        if qtype == "q8_0" and data.ndim == 2:
            w.add_tensor(name, gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, np.ascontiguousarray(data, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


@pytest.fixture(scope="module")
def files(checkpoint, gguf_file, tmp_path_factory) -> Dict[str, Path]:
    ckpt = checkpoint("base")
    tmp = tmp_path_factory.mktemp("dream")
    return {"ckpt": ckpt, "ours_f32": gguf_file("base", "f32"), "ours_q8_0": gguf_file("base", "q8_0"),
            "dream_f32": write_dream(ckpt, tmp / "dream-f32.gguf"),
            "dream_q8_0": write_dream(ckpt, tmp / "dream-q8_0.gguf", "q8_0")}


def prompt(model: nld_cpp.Model, n: int = 24) -> list:
    rng = np.random.default_rng(7)
    ids = rng.integers(1000, model.n_vocab, size=n)
    return ids.tolist()


def test_logits_equal_ours_and_transformers(files):
    with nld_cpp.Model(files["dream_f32"], lora_path="", **EXACT_CACHE) as dream, nld_cpp.Model(files["ours_f32"], lora_path="", **EXACT_CACHE) as ours:
        assert dream.metadata_string("general.architecture") == "dream"
        assert dream.info.block_size == 32 and dream.info.mask_token_id == 100 and dream.info.has_diffusion
        assert dream.info.attn_temperature_scale == pytest.approx(0.1)
        ids = prompt(dream)
        got, want = dream.forward(ids), ours.forward(ids)
        scale = np.abs(want).max()
        assert np.abs(got - want).max() <= 1e-5 * scale
        block = prompt(dream, 8)
        np.testing.assert_allclose(dream.forward(block, kind="bidirectional"), ours.forward(block, kind="bidirectional"),
                                   rtol=0, atol=1e-5 * scale)
    ref = causal_logits(load_reference(files["ckpt"]), ids).numpy()
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("mode", MODES)
def test_greedy_tokens_equal_ours_in_every_mode(files, mode):
    kw = dict(mode=mode, max_tokens=20, block_length=8, ignore_eos=True, temperature=0.0)
    with nld_cpp.Model(files["dream_f32"], lora_path="", **EXACT_CACHE) as dream, nld_cpp.Model(files["ours_f32"], lora_path="", **EXACT_CACHE) as ours:
        ids = prompt(dream, 12)
        assert dream.generate(ids, **kw).tokens == ours.generate(ids, **kw).tokens


def test_q8_0_dream_equals_our_q8_0(files):
    with nld_cpp.Model(files["dream_q8_0"], lora_path="", **EXACT_CACHE) as dream, nld_cpp.Model(files["ours_q8_0"], lora_path="", **EXACT_CACHE) as ours:
        ids = prompt(dream)
        np.testing.assert_array_equal(dream.forward(ids), ours.forward(ids))  # the same rows, the same bytes
        kw = dict(mode="spec", max_tokens=16, block_length=8, ignore_eos=True)
        assert dream.generate(ids, **kw).tokens == ours.generate(ids, **kw).tokens


def test_drafter_adapter_given_separately(files):
    lora = Path(str(files["ours_f32"])[:-5] + ".lora.gguf")
    with nld_cpp.Model(files["dream_f32"], lora_path=lora, **EXACT_CACHE) as dream, nld_cpp.Model(files["ours_f32"], **EXACT_CACHE) as ours:
        assert dream.has_lora and ours.has_lora
        ids = prompt(dream, 12)
        kw = dict(mode="spec", max_tokens=16, block_length=8, ignore_eos=True)
        a, b = dream.generate(ids, **kw), ours.generate(ids, **kw)
        assert a.tokens == b.tokens and a.accepted_lengths == b.accepted_lengths


def test_tokenizer_and_template_from_the_gpt2_fields(files):
    with nld_cpp.Model(files["dream_f32"], lora_path="", **EXACT_CACHE) as dream, nld_cpp.Model(files["ours_f32"], lora_path="", **EXACT_CACHE) as ours:
        with pytest.raises(KeyError):
            dream.metadata_string("tokenizer.huggingface.json")
        text = "<|im_start|>user\nhello wörld 123<|im_end|>"
        assert dream.tokenize(text) == ours.tokenize(text)
        msgs = [{"role": "user", "content": "hi"}]
        assert dream.apply_chat_template(msgs) == ours.apply_chat_template(msgs)


def test_dream_without_the_nld_signature_is_refused(files, tmp_path):
    bad = write_dream(files["ckpt"], tmp_path / "plain-dream.gguf", signature=False)
    with pytest.raises(nld_cpp.NldError, match="not a Nemotron-Labs-Diffusion model") as err:
        nld_cpp.Model(bad)
    assert "diffusion.shift_logits" in str(err.value) and "mask_token_id" in str(err.value)


def test_info_names_the_layout(files):
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "nld_cpp.cli", "info", str(files["dream_f32"])],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "dream" in res.stdout and "q/k rows in the Hugging Face order" in res.stdout
