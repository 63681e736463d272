"""The HF -> GGUF converter and the random-checkpoint generator it is tested on.

Oracles: the `gguf` package (GGUFReader, quants.quantize), `tokenizers`,
`safetensors` + torch for reading the sources, jinja2 for the chat template.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict

import gguf
import jinja2
import nld_cpp
import numpy as np
import pytest
import tokenizers
import torch
from nld_cpp.convert import ConvertError, convert_checkpoint
from nld_cpp.testing import CheckpointSpec, make_checkpoint, real_3b_spec
from safetensors.torch import load_file, save_file

pytestmark = pytest.mark.unit

OUTTYPES = ["f32", "f16", "bf16", "q8_0", "q4_0"]
GT = gguf.GGMLQuantizationType
VT = gguf.GGUFValueType
MATRIX_TYPE = {"f32": GT.F32, "f16": GT.F16, "bf16": GT.BF16, "q8_0": GT.Q8_0, "q4_0": GT.Q4_0}
FILE_TYPE = {"f32": 0, "f16": 1, "bf16": 32, "q8_0": 7, "q4_0": 2}


# --- helpers ----------------------------------------------------------------------

def fields(path: Path) -> Dict[str, object]:
    reader = gguf.GGUFReader(str(path))
    return {name: field for name, field in reader.fields.items() if not name.startswith("GGUF.")}


def value(field):  # type: ignore[no-untyped-def]
    return field.contents()


def source_tensors(ckpt: Path) -> Dict[str, np.ndarray]:
    files = sorted(ckpt.glob("model*.safetensors"))
    out: Dict[str, np.ndarray] = {}
    for f in files:
        out.update({k: v.float().numpy() for k, v in load_file(str(f)).items()})
    return out


def permute_rope_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Row 2j of a head <- row j, row 2j+1 <- row j + d/2 (written by index, independent of the converter)."""
    d = w.shape[0] // n_head
    out = np.empty_like(w)
    for h in range(n_head):
        for j in range(d // 2):
            out[h * d + 2 * j] = w[h * d + j]
            out[h * d + 2 * j + 1] = w[h * d + j + d // 2]
    return out


def gguf_name(hf: str) -> str:
    table = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    if hf == "encoder.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "encoder.norm.weight":
        return "output_norm.weight"
    if hf == "diffusion_head.weight":
        return "output.weight"
    layer, rest = hf[len("encoder.layers."):].split(".", 1)
    return f"blk.{layer}.{table[rest[: -len('.weight')]]}.weight"


def expected_encoding(src: np.ndarray, qtype: GT) -> np.ndarray:
    if qtype == GT.F32:
        return src.astype(np.float32)
    if qtype == GT.F16:
        return src.astype(np.float16)
    return gguf.quants.quantize(src.astype(np.float32), qtype)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("base") / "model")


@pytest.fixture(scope="module")
def converted(ckpt: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("gguf")
    return {t: convert_checkpoint(ckpt, out / f"m-{t}.gguf", t, progress=False) for t in OUTTYPES}


# --- the generator --------------------------------------------------------------------

def test_generator_config_and_files(ckpt: Path) -> None:
    names = {p.name for p in ckpt.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
            "generation_config.json", "chat_template.jinja", "linear_spec_lora"} <= names
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["architectures"] == ["NemotronLabsDiffusionModel"]
    assert cfg["model_type"] == "nemotron_labs_diffusion"
    assert cfg["head_dim"] * cfg["num_attention_heads"] != cfg["hidden_size"]
    assert (cfg["mask_token_id"], cfg["block_size"], cfg["tie_word_embeddings"]) == (100, 32, False)
    rope = cfg["rope_parameters"]
    assert rope["rope_type"] == "yarn"
    assert rope["factor"] == cfg["max_position_embeddings"] / rope["original_max_position_embeddings"] == 4.0
    for key in ("rope_theta", "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "llama_4_scaling_beta"):
        assert key in rope
    adapter = json.loads((ckpt / "linear_spec_lora" / "adapter_config.json").read_text())
    assert (adapter["peft_type"], adapter["target_modules"], adapter["r"]) == ("LORA", ["o_proj"], 8)
    lora = load_file(str(ckpt / "linear_spec_lora" / "adapter_model.safetensors"))
    b = lora["base_model.model.encoder.layers.1.self_attn.o_proj.lora_B.weight"]
    assert b.shape == (64, 8) and float(b.float().abs().max()) > 0


def test_generator_tokenizer_round_trip(ckpt: Path) -> None:
    tok = tokenizers.Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    assert tok.get_vocab_size() == 1320
    assert tok.token_to_id("\u010a") == 1010 and tok.token_to_id("<|im_end|>") == 11
    assert tok.id_to_token(100) == "<SPECIAL_100>" and tok.id_to_token(1256) is not None
    for text in ["Hello world, the fox!\n  def add(a, b):\n\treturn a+b  ", "héllo 日本語 🙂 42"]:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids, skip_special_tokens=False) == text
    assert any(i >= 1256 for i in tok.encode("the quick brown fox").ids)  # merges are used
    ids = tok.encode("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False).ids
    assert ids[0] == 10 and ids[-1] == 11 and 1010 in ids


def test_generator_chat_template(ckpt: Path) -> None:
    template = jinja2.Environment().from_string((ckpt / "chat_template.jinja").read_text())
    chat = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    head = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    assert template.render(messages=chat, add_generation_prompt=True) == head + "<think></think>"
    assert template.render(messages=chat, add_generation_prompt=True, enable_thinking=True) == head + "<think>\n"
    turns = chat + [{"role": "assistant", "content": "<think>r</think>A"}, {"role": "user", "content": "V"}]
    rendered = template.render(messages=turns, add_generation_prompt=True)
    assert rendered == (head + "<think></think>A<|im_end|>\n<|im_start|>user\nV<|im_end|>\n"
                        "<|im_start|>assistant\n<think></think>")
    kept = template.render(messages=turns, truncate_history_thinking=False)
    assert "<think>\nr\n</think>A<|im_end|>" in kept


@pytest.mark.parametrize("overrides", [
    dict(max_position_embeddings=256, original_max_position_embeddings=64),
    dict(max_position_embeddings=64, original_max_position_embeddings=256, num_key_value_heads=1),
    dict(num_key_value_heads=4, dtype="float32", rope_layout="legacy"),
    dict(num_attention_heads=8, num_key_value_heads=2, head_dim=16, dtype="float16", lora_rank=0),
])
def test_generator_variants(tmp_path: Path, overrides: Dict[str, object]) -> None:
    spec = CheckpointSpec(**overrides)  # type: ignore[arg-type]
    ckpt = make_checkpoint(tmp_path / "m", spec)
    cfg = json.loads((ckpt / "config.json").read_text())
    rope = cfg["rope_parameters"] if spec.rope_layout == "parameters" else cfg["rope_scaling"]
    assert rope["factor"] == spec.factor
    if spec.rope_layout == "legacy":
        assert cfg["rope_theta"] == spec.rope_theta and "rope_parameters" not in cfg
    tensors = load_file(str(ckpt / "model.safetensors"))
    assert tensors["encoder.layers.0.self_attn.q_proj.weight"].shape == (spec.num_attention_heads * spec.head_dim, 64)
    assert tensors["encoder.layers.1.self_attn.k_proj.weight"].shape == (spec.num_key_value_heads * spec.head_dim, 64)
    assert tensors["encoder.layers.1.self_attn.o_proj.weight"].shape == (64, spec.num_attention_heads * spec.head_dim)
    assert str(tensors["diffusion_head.weight"].dtype) == f"torch.{spec.dtype}"
    assert (ckpt / "linear_spec_lora").exists() == (spec.lora_rank > 0)


def test_generator_sharded_is_same_model(ckpt: Path, tmp_path: Path) -> None:
    sharded = make_checkpoint(tmp_path / "model", n_shards=3)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == [f"model-0000{k}-of-00003.safetensors" for k in (1, 2, 3)]
    a, b = source_tensors(ckpt), source_tensors(sharded)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_real_3b_spec_shapes() -> None:
    spec = real_3b_spec()
    shape = (spec.num_hidden_layers, spec.hidden_size, spec.intermediate_size, spec.vocab_size)
    assert shape == (26, 3072, 9216, 131072)
    assert (spec.num_attention_heads, spec.num_key_value_heads, spec.head_dim, spec.factor) == (32, 8, 128, 0.25)


# --- the converter: metadata ------------------------------------------------------------

@pytest.mark.parametrize("outtype", OUTTYPES)
def test_metadata_keys_and_types(converted, outtype: str) -> None:  # type: ignore[no-untyped-def]
    f = fields(converted[outtype].path)
    expected = {
        "general.architecture": (VT.STRING, "mistral3"), "general.file_type": (VT.UINT32, FILE_TYPE[outtype]),
        "general.quantization_version": (VT.UINT32, 2), "general.alignment": (VT.UINT32, 32),
        "mistral3.vocab_size": (VT.UINT32, 1320), "mistral3.context_length": (VT.UINT32, 256),
        "mistral3.embedding_length": (VT.UINT32, 64), "mistral3.block_count": (VT.UINT32, 2),
        "mistral3.feed_forward_length": (VT.UINT32, 160), "mistral3.attention.head_count": (VT.UINT32, 4),
        "mistral3.attention.head_count_kv": (VT.UINT32, 2), "mistral3.attention.key_length": (VT.UINT32, 24),
        "mistral3.attention.value_length": (VT.UINT32, 24), "mistral3.rope.dimension_count": (VT.UINT32, 24),
        "mistral3.attention.layer_norm_rms_epsilon": (VT.FLOAT32, np.float32(1e-5)),
        "mistral3.attention.temperature_scale": (VT.FLOAT32, np.float32(0.1)),
        "mistral3.rope.freq_base": (VT.FLOAT32, 1e6), "mistral3.rope.scaling.type": (VT.STRING, "yarn"),
        "mistral3.rope.scaling.factor": (VT.FLOAT32, 4.0),
        "mistral3.rope.scaling.original_context_length": (VT.UINT32, 64),
        "mistral3.rope.scaling.yarn_beta_fast": (VT.FLOAT32, 32.0),
        "mistral3.rope.scaling.yarn_beta_slow": (VT.FLOAT32, 1.0),
        "mistral3.rope.scaling.yarn_log_multiplier": (VT.FLOAT32, 1.0),
        "nld.rope.scaling.attn_factor": (VT.FLOAT32, 1.0),
        "tokenizer.ggml.mask_token_id": (VT.UINT32, 100), "diffusion.shift_logits": (VT.BOOL, False),
        "diffusion.block_size": (VT.UINT32, 32), "diffusion.threshold": (VT.FLOAT32, np.float32(0.9)),
        "tokenizer.ggml.model": (VT.STRING, "gpt2"), "tokenizer.ggml.pre": (VT.STRING, "tekken"),
        "tokenizer.ggml.bos_token_id": (VT.UINT32, 1), "tokenizer.ggml.eos_token_id": (VT.UINT32, 11),
        "tokenizer.ggml.add_bos_token": (VT.BOOL, False),
    }
    for key, (vtype, want) in expected.items():
        assert f[key].types == [vtype], key
        assert value(f[key]) == want, key
    assert f["tokenizer.ggml.tokens"].types == [VT.ARRAY, VT.STRING]
    assert f["tokenizer.ggml.token_type"].types == [VT.ARRAY, VT.INT32]
    assert f["tokenizer.ggml.merges"].types == [VT.ARRAY, VT.STRING]
    assert value(f["nld.eos_token_ids"]) == [11]


def test_tokenizer_metadata(ckpt: Path, converted) -> None:  # type: ignore[no-untyped-def]
    f = fields(converted["f16"].path)
    tok_text = (ckpt / "tokenizer.json").read_text(encoding="utf-8")
    assert value(f["tokenizer.huggingface.json"]) == tok_text
    assert value(f["tokenizer.chat_template"]) == (ckpt / "chat_template.jinja").read_text(encoding="utf-8")
    tok = tokenizers.Tokenizer.from_str(tok_text)
    tokens = value(f["tokenizer.ggml.tokens"])
    assert tokens == [tok.id_to_token(i) for i in range(1320)]
    types = value(f["tokenizer.ggml.token_type"])
    assert set(types[:1000]) == {3} and set(types[1000:]) == {1}
    merges = value(f["tokenizer.ggml.merges"])
    assert merges == [f"{a} {b}" for a, b in json.loads(tok_text)["model"]["merges"]]
    assert all(tokens[1256 + k] == m.replace(" ", "") for k, m in enumerate(merges))


def test_string_merges_give_same_metadata(ckpt: Path, converted, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    other = tmp_path / "model"
    shutil.copytree(ckpt, other)
    tok = json.loads((other / "tokenizer.json").read_text(encoding="utf-8"))
    tok["model"]["merges"] = [" ".join(m) for m in tok["model"]["merges"]]
    (other / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    f = fields(convert_checkpoint(other, tmp_path / "s.gguf", "f16", progress=False).path)
    g = fields(converted["f16"].path)
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"):
        assert value(f[key]) == value(g[key])


# --- the converter: tensors -------------------------------------------------------------

@pytest.mark.parametrize("outtype", OUTTYPES)
def test_tensor_bytes_round_trip(ckpt: Path, converted, outtype: str) -> None:  # type: ignore[no-untyped-def]
    reader = gguf.GGUFReader(str(converted[outtype].path))
    src = source_tensors(ckpt)
    raw = load_file(str(ckpt / "model.safetensors"))
    raw_bf16 = {k: v.view(torch.int16).numpy().view(np.uint16) for k, v in raw.items()}
    by_name = {t.name: t for t in reader.tensors}
    assert len(by_name) == len(src) == 21
    for hf, w in src.items():
        t = by_name[gguf_name(hf)]
        assert list(t.shape) == list(reversed(w.shape)), hf
        heads = 4 if "q_proj" in hf else 2 if "k_proj" in hf else 0
        want = permute_rope_rows(w, heads) if heads else w
        if w.ndim == 1:
            assert t.tensor_type == GT.F32 and np.array_equal(t.data, w), hf
            continue
        assert t.tensor_type == MATRIX_TYPE[outtype], hf
        if outtype == "bf16":
            bits = permute_rope_rows(raw_bf16[hf], heads) if heads else raw_bf16[hf]
            assert np.array_equal(t.data.view(np.uint16).reshape(w.shape), bits), hf
        else:
            got = np.asarray(t.data).reshape(expected_encoding(want, t.tensor_type).shape)
            assert np.array_equal(got.view(np.uint8), expected_encoding(want, t.tensor_type).view(np.uint8)), hf


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("outtype", ["bf16", "f16", "q4_0"])
def test_other_source_dtypes(tmp_path: Path, dtype: str, outtype: str) -> None:
    ckpt = make_checkpoint(tmp_path / "m", dtype=dtype, lora_rank=0)
    src = source_tensors(ckpt)["encoder.layers.1.mlp.down_proj.weight"]
    path = convert_checkpoint(ckpt, tmp_path / "m.gguf", outtype, progress=False).path
    t = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}["blk.1.ffn_down.weight"]
    want = gguf.quants.quantize(src, MATRIX_TYPE[outtype])  # BF16: round to nearest even, as ggml
    assert np.array_equal(np.asarray(t.data).view(np.uint8).reshape(-1), want.view(np.uint8).reshape(-1))


def test_quantized_fallback_to_f16_for_odd_rows(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "m", intermediate_size=80, lora_rank=0)  # ffn_down rows of 80 elements
    reader = gguf.GGUFReader(str(convert_checkpoint(ckpt, tmp_path / "q.gguf", "q8_0", progress=False).path))
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.0.ffn_down.weight"] == GT.F16 and types["blk.0.ffn_up.weight"] == GT.Q8_0


def test_sharded_and_legacy_give_identical_files(converted, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    reference = converted["q8_0"].path.read_bytes()
    for i, overrides in enumerate([dict(n_shards=3), dict(rope_layout="legacy")]):
        ckpt = make_checkpoint(tmp_path / str(i) / "model", **overrides)  # type: ignore[arg-type]
        out = convert_checkpoint(ckpt, tmp_path / f"{i}.gguf", "q8_0", progress=False)
        assert out.path.read_bytes() == reference, overrides


@pytest.mark.parametrize("max_pos,orig,kv", [(64, 256, 1), (256, 64, 4), (512, 512, 2)])
def test_rope_factor_and_gqa_variants(tmp_path: Path, max_pos: int, orig: int, kv: int) -> None:
    ckpt = make_checkpoint(tmp_path / "m", max_position_embeddings=max_pos, original_max_position_embeddings=orig,
                           num_key_value_heads=kv, lora_rank=0)
    result = convert_checkpoint(ckpt, tmp_path / "m.gguf", "f32", progress=False)
    f = fields(result.path)
    assert value(f["mistral3.rope.scaling.factor"]) == np.float32(max_pos / orig) and not result.warnings
    assert value(f["mistral3.attention.head_count_kv"]) == kv
    k = {t.name: t for t in gguf.GGUFReader(str(result.path)).tensors}["blk.0.attn_k.weight"]
    src = source_tensors(ckpt)["encoder.layers.0.self_attn.k_proj.weight"]
    assert np.array_equal(k.data, permute_rope_rows(src, kv))


def _edit_config(ckpt: Path, edit) -> None:  # type: ignore[no-untyped-def]
    cfg = json.loads((ckpt / "config.json").read_text())
    edit(cfg)
    (ckpt / "config.json").write_text(json.dumps(cfg))


def test_factor_disagreement_warns_and_uses_stored(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = make_checkpoint(tmp_path / "m", lora_rank=0)
    _edit_config(ckpt, lambda c: c["rope_parameters"].update(factor=8.0, mscale=2.0))
    result = convert_checkpoint(ckpt, tmp_path / "m.gguf", "f32", progress=False)
    assert len(result.warnings) == 1 and "using the stored factor 8" in result.warnings[0]
    assert "warning:" in capsys.readouterr().err
    f = fields(result.path)
    assert value(f["mistral3.rope.scaling.factor"]) == 8.0
    want = (0.1 * 2.0 * math.log(8.0) + 1) / (0.1 * 1.0 * math.log(8.0) + 1)
    assert value(f["nld.rope.scaling.attn_factor"]) == np.float32(want)


def test_factor_absent_uses_ratio_and_eos_list(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "m", lora_rank=0)

    def edit(c):  # type: ignore[no-untyped-def]
        del c["rope_parameters"]["factor"], c["rope_parameters"]["mscale"]
        c["eos_token_id"] = [2, 11]
    _edit_config(ckpt, edit)
    result = convert_checkpoint(ckpt, tmp_path / "m.gguf", "f32", progress=False)
    f = fields(result.path)
    assert value(f["mistral3.rope.scaling.factor"]) == 4.0 and not result.warnings
    assert value(f["nld.rope.scaling.attn_factor"]) == np.float32(0.1 * math.log(4.0) + 1)
    assert value(f["tokenizer.ggml.eos_token_id"]) == 2 and value(f["nld.eos_token_ids"]) == [2, 11]


# --- the drafter LoRA ------------------------------------------------------------------

@pytest.mark.parametrize("outtype", ["f32", "q4_0"])
def test_lora_adapter(ckpt: Path, converted, outtype: str) -> None:  # type: ignore[no-untyped-def]
    result = converted[outtype]
    assert result.lora_path == result.path.with_name(f"m-{outtype}.lora.gguf")
    f = fields(result.lora_path)
    assert value(f["general.architecture"]) == "mistral3" and value(f["general.type"]) == "adapter"
    assert value(f["adapter.type"]) == "lora"
    assert f["adapter.lora.alpha"].types == [VT.FLOAT32] and value(f["adapter.lora.alpha"]) == 32.0
    src = {k: v.float().numpy() for k, v in load_file(str(ckpt / "linear_spec_lora/adapter_model.safetensors")).items()}
    tensors = {t.name: t for t in gguf.GGUFReader(str(result.lora_path)).tensors}
    assert len(tensors) == 4
    for layer in range(2):
        prefix = f"base_model.model.encoder.layers.{layer}.self_attn.o_proj."
        for part, ne in (("a", [96, 8]), ("b", [8, 64])):
            t = tensors[f"blk.{layer}.attn_output.weight.lora_{part}"]
            assert list(t.shape) == ne
            assert t.tensor_type == (GT.F32 if outtype == "f32" else GT.F16)
            want = src[prefix + f"lora_{part.upper()}.weight"]
            assert np.array_equal(t.data, want.astype(t.data.dtype))


def test_no_lora_and_default_paths(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "NLD-tiny")
    result = convert_checkpoint(ckpt, outtype="bf16", progress=False, lora=False)
    assert result.path == ckpt / "NLD-tiny-bf16.gguf" and result.lora_path is None
    assert not list(ckpt.glob("*.lora.gguf"))
    result = convert_checkpoint(ckpt, outtype="q4_0", progress=False)
    assert result.lora_path == ckpt / "NLD-tiny-q4_0.lora.gguf" and result.lora_path.is_file()


# --- errors ----------------------------------------------------------------------------

def _rewrite_weights(ckpt: Path, edit) -> None:  # type: ignore[no-untyped-def]
    tensors = load_file(str(ckpt / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(ckpt / "model.safetensors"))


@pytest.mark.parametrize("breakage,message", [
    (lambda p: (p / "config.json").unlink(), "missing config.json: {p}/config.json"),
    (lambda p: (p / "tokenizer.json").unlink(), "missing tokenizer.json: {p}/tokenizer.json"),
    (lambda p: (p / "model.safetensors").unlink(), "missing weights file: {p}/model.safetensors"),
    (lambda p: _edit_config(p, lambda c: c.update(architectures=["LlamaForCausalLM"])),
     "unsupported architecture 'LlamaForCausalLM' (supported: NemotronLabsDiffusionModel)"),
    (lambda p: _rewrite_weights(p, lambda t: t.update({"encoder.extra.weight": torch.zeros(4)})),
     "unexpected tensor 'encoder.extra.weight'"),
    (lambda p: _rewrite_weights(p, lambda t: t.pop("encoder.layers.1.mlp.up_proj.weight")),
     "missing tensor 'encoder.layers.1.mlp.up_proj.weight'"),
    (lambda p: _edit_config(p, lambda c: c.update(intermediate_size=128)),
     "tensor 'encoder.layers.0.mlp.gate_proj.weight' has shape [160, 64] but config implies [128, 64]"),
    (lambda p: _rewrite_weights(p, lambda t: t.update({"encoder.rotary_emb.inv_freq": torch.zeros(12)})), None),
])
def test_errors_name_the_problem(tmp_path: Path, breakage, message) -> None:  # type: ignore[no-untyped-def]
    ckpt = make_checkpoint(tmp_path / "m", lora_rank=0)
    breakage(ckpt)
    out = tmp_path / "out.gguf"
    if message is None:  # ignored tensors convert fine
        convert_checkpoint(ckpt, out, "f16", progress=False)
        return
    with pytest.raises(ConvertError) as info:
        convert_checkpoint(ckpt, out, "f16", progress=False)
    assert message.format(p=ckpt) in str(info.value)
    assert not out.exists() and not list(tmp_path.glob("*.part"))


def test_missing_shard_is_named(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "m", n_shards=2, lora_rank=0)
    (ckpt / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ConvertError, match="missing weights file: .*model-00002-of-00002.safetensors"):
        convert_checkpoint(ckpt, tmp_path / "x.gguf", "f16", progress=False)


def test_unknown_outtype(ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(ConvertError, match="unknown outtype 'q3_k'"):
        convert_checkpoint(ckpt, tmp_path / "x.gguf", "q3_k", progress=False)


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    package_root = str(Path(nld_cpp.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "nld_cpp.convert", *args], capture_output=True, text=True, env=env)


def test_cli(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "m")
    bad = make_checkpoint(tmp_path / "bad", lora_rank=0)
    _edit_config(bad, lambda c: c.update(architectures=["Qwen2ForCausalLM"]))
    proc = _run_cli(str(bad), "--no-progress")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: unsupported architecture 'Qwen2ForCausalLM' (supported: NemotronLabsDiffusionModel)"]
    proc = _run_cli(str(ckpt), "-o", str(tmp_path / "out.gguf"), "--outtype", "q8_0")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out.gguf").is_file() and (tmp_path / "out.lora.gguf").is_file()
