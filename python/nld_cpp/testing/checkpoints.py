"""Random NLD checkpoints in the exact Hugging Face layout, for tests and benchmarks.

`make_checkpoint(out_dir, spec)` writes config.json, model.safetensors (or
shards + index), tokenizer.json, tokenizer_config.json, special_tokens_map.json,
generation_config.json, chat_template.jinja and, when spec.lora_rank > 0, the
drafter LoRA in linear_spec_lora/ (spec/nld-model.md sections 1-3, 6.4, 7).

Weights come from numpy.random.default_rng(seed) and are generated and written
one tensor at a time in chunks of rows, so even `real_3b_spec()` runs with
memory near one chunk. numpy + stdlib only (no torch).

The HF tensor layout is written out here independently of the converter's
name table on purpose: the two are checked against each other by the tests.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from ..convert.safetensors_io import TensorToWrite, iter_row_chunks, to_storage, write_safetensors
from .tokenizer_fixture import CHAT_TEMPLATE, build_tokenizer_json, control_token, special_tokens_map, tokenizer_config

PathLike = Union[str, "os.PathLike[str]"]

_SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
_CHUNK_ELEMS = 8 * 1024 * 1024  # float32 elements generated at a time (32 MiB)


@dataclass
class CheckpointSpec:
    vocab_size: int = 1320  # control 0-999, bytes 1000-1255, merges from 1256
    hidden_size: int = 64
    intermediate_size: int = 160
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 24  # deliberately != hidden/heads
    max_position_embeddings: int = 256
    original_max_position_embeddings: int = 64  # small, so positions past it are cheap to test
    rope_theta: float = 1e6
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    llama_4_scaling_beta: float = 0.1
    rms_norm_eps: float = 1e-5
    rope_layout: str = "parameters"  # or "legacy": top-level rope_theta + rope_scaling
    eos_token_id: int = 11
    block_size: int = 32
    dtype: str = "bfloat16"  # "float32" | "float16" | "bfloat16"
    n_shards: int = 1  # >1 writes model-0000k-of-0000n.safetensors + model.safetensors.index.json
    lora_rank: int = 8  # 0 = no linear_spec_lora/ folder
    lora_alpha: int = 32
    head_scale: float = 1.0  # multiplies diffusion_head (peaked distributions for later tests)
    seed: int = 0

    @property
    def factor(self) -> float:
        return self.max_position_embeddings / self.original_max_position_embeddings

    def validate(self) -> None:
        if self.dtype not in _SAFETENSORS_DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_SAFETENSORS_DTYPES)}, not {self.dtype!r}")
        if self.rope_layout not in ("parameters", "legacy"):
            raise ValueError(f"rope_layout must be 'parameters' or 'legacy', not {self.rope_layout!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.head_dim % 2:
            raise ValueError("head_dim must be even")
        if not 0 <= self.eos_token_id < 1000:
            raise ValueError("eos_token_id must be a control token id (0-999)")
        if not 1 <= self.n_shards <= self.num_hidden_layers + 3:
            raise ValueError("n_shards must be between 1 and the number of tensors")


def real_3b_spec(**overrides: object) -> CheckpointSpec:
    """The real 3B shapes (3B-Base config: max_position_embeddings 4096, YaRN factor 0.25),
    with an instruct-style drafter LoRA (r 128, alpha 512) and EOS <|im_end|>."""
    base = CheckpointSpec(
        vocab_size=131072, hidden_size=3072, intermediate_size=9216, num_hidden_layers=26,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128,
        max_position_embeddings=4096, original_max_position_embeddings=16384, rope_theta=1e6,
        lora_rank=128, lora_alpha=512,
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


# --- config files ---------------------------------------------------------------

def _rope_yarn(spec: CheckpointSpec) -> Dict[str, object]:
    return {
        "rope_type": "yarn",
        "factor": spec.factor,
        "original_max_position_embeddings": spec.original_max_position_embeddings,
        "beta_fast": spec.beta_fast,
        "beta_slow": spec.beta_slow,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
        "llama_4_scaling_beta": spec.llama_4_scaling_beta,
    }


def config_json(spec: CheckpointSpec) -> Dict[str, object]:
    config: Dict[str, object] = {
        "architectures": ["NemotronLabsDiffusionModel"],
        "model_type": "nemotron_labs_diffusion",
        "torch_dtype": spec.dtype,
        "vocab_size": spec.vocab_size,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "head_dim": spec.head_dim,
        "attention_bias": False,
        "mlp_bias": False,
        "hidden_act": "silu",
        "rms_norm_eps": spec.rms_norm_eps,
        "max_position_embeddings": spec.max_position_embeddings,
        "sliding_window": None,
        "bos_token_id": 1,
        "eos_token_id": spec.eos_token_id,
        "tie_word_embeddings": False,
        "mask_token_id": 100,
        "block_size": spec.block_size,
        "dlm_paradigm": "bidirectional",
    }
    if spec.rope_layout == "parameters":
        config["rope_parameters"] = dict(_rope_yarn(spec), rope_theta=spec.rope_theta)
    else:
        config["rope_theta"] = spec.rope_theta
        config["rope_scaling"] = _rope_yarn(spec)
    return config


def generation_config_json(spec: CheckpointSpec) -> Dict[str, object]:
    return {"bos_token_id": 1, "eos_token_id": spec.eos_token_id, "max_new_tokens": 256, "do_sample": False}


# --- weights --------------------------------------------------------------------

@dataclass(frozen=True)
class _RandomTensor:
    name: str
    shape: Tuple[int, ...]
    kind: str  # "linear" | "embedding" | "norm" | "head"


def hf_tensor_layout(spec: CheckpointSpec) -> List[_RandomTensor]:
    """Every model tensor in HF naming, torch shapes [out, in], in generation order."""
    h, i, v = spec.hidden_size, spec.intermediate_size, spec.vocab_size
    q, kv = spec.num_attention_heads * spec.head_dim, spec.num_key_value_heads * spec.head_dim
    tensors = [_RandomTensor("encoder.embed_tokens.weight", (v, h), "embedding")]
    for layer in range(spec.num_hidden_layers):
        p = f"encoder.layers.{layer}."
        tensors += [
            _RandomTensor(p + "input_layernorm.weight", (h,), "norm"),
            _RandomTensor(p + "self_attn.q_proj.weight", (q, h), "linear"),
            _RandomTensor(p + "self_attn.k_proj.weight", (kv, h), "linear"),
            _RandomTensor(p + "self_attn.v_proj.weight", (kv, h), "linear"),
            _RandomTensor(p + "self_attn.o_proj.weight", (h, q), "linear"),
            _RandomTensor(p + "post_attention_layernorm.weight", (h,), "norm"),
            _RandomTensor(p + "mlp.gate_proj.weight", (i, h), "linear"),
            _RandomTensor(p + "mlp.up_proj.weight", (i, h), "linear"),
            _RandomTensor(p + "mlp.down_proj.weight", (h, i), "linear"),
        ]
    tensors += [_RandomTensor("encoder.norm.weight", (h,), "norm"),
                _RandomTensor("diffusion_head.weight", (v, h), "head")]
    return tensors


def _random_chunks(rng: np.random.Generator, t: _RandomTensor, head_scale: float,
                   st_dtype: str, std: Optional[float] = None) -> Iterator[np.ndarray]:
    """Stored chunks of one random tensor, rows in order (so the values do not depend on the chunking)."""
    row = int(np.prod(t.shape[1:], dtype=np.int64))
    for begin, end in iter_row_chunks(t.shape[0], row * 4, _CHUNK_ELEMS * 4):
        values = rng.standard_normal((end - begin,) + t.shape[1:], dtype=np.float32)
        if t.kind == "norm":
            values = 1.0 + np.float32(0.1) * values
        elif t.kind != "embedding":
            scale = std if std is not None else 1.0 / math.sqrt(t.shape[1])
            values *= np.float32(scale * (head_scale if t.kind == "head" else 1.0))
        yield to_storage(values, st_dtype)


def _write_tensors(path: Path, rng: np.random.Generator, layout: List[_RandomTensor], spec: CheckpointSpec,
                   stds: Optional[Dict[str, float]] = None) -> int:
    """Generate `layout` with `rng` in order and write it to `path`; returns the data size."""
    st_dtype = _SAFETENSORS_DTYPES[spec.dtype]
    stds = stds or {}

    def source(t: _RandomTensor):  # type: ignore[no-untyped-def]
        return lambda: _random_chunks(rng, t, spec.head_scale, st_dtype, stds.get(t.name))

    return write_safetensors(path, [TensorToWrite(t.name, st_dtype, t.shape, source(t)) for t in layout])


def _split_for_shards(layout: List[_RandomTensor], n_shards: int) -> List[List[_RandomTensor]]:
    """Contiguous groups of about equal byte size (every group non-empty)."""
    sizes = [int(np.prod(t.shape, dtype=np.int64)) for t in layout]
    groups: List[List[_RandomTensor]] = []
    current: List[_RandomTensor] = []
    total, acc = sum(sizes), 0
    for index, (t, size) in enumerate(zip(layout, sizes)):
        current.append(t)
        acc += size
        remaining_tensors = len(layout) - index - 1
        remaining_groups = n_shards - len(groups) - 1
        if remaining_groups and (acc >= total * (len(groups) + 1) / n_shards or remaining_tensors == remaining_groups):
            groups.append(current)
            current = []
    groups.append(current)
    return groups


def _write_model_weights(out: Path, spec: CheckpointSpec) -> None:
    rng = np.random.default_rng(spec.seed)
    layout = hf_tensor_layout(spec)
    if spec.n_shards == 1:
        _write_tensors(out / "model.safetensors", rng, layout, spec)
        return
    weight_map: Dict[str, str] = {}
    total = 0
    groups = _split_for_shards(layout, spec.n_shards)
    for k, group in enumerate(groups, start=1):
        file_name = f"model-{k:05d}-of-{len(groups):05d}.safetensors"
        total += _write_tensors(out / file_name, rng, group, spec)
        weight_map.update({t.name: file_name for t in group})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def _write_lora(out: Path, spec: CheckpointSpec) -> None:
    """linear_spec_lora/: PEFT LoRA on o_proj of every layer. B is random (not PEFT's zero init)
    so the delta is real; its scale keeps (alpha/r) * B A about half the size of W_o."""
    lora_dir = out / "linear_spec_lora"
    lora_dir.mkdir(exist_ok=True)
    r, h, q = spec.lora_rank, spec.hidden_size, spec.num_attention_heads * spec.head_dim
    layout, stds = [], {}
    for layer in range(spec.num_hidden_layers):
        p = f"base_model.model.encoder.layers.{layer}.self_attn.o_proj."
        layout += [_RandomTensor(p + "lora_A.weight", (r, q), "linear"),
                   _RandomTensor(p + "lora_B.weight", (h, r), "linear")]
        stds[p + "lora_B.weight"] = 0.5 * r / (spec.lora_alpha * math.sqrt(r))
    _write_tensors(lora_dir / "adapter_model.safetensors", np.random.default_rng([spec.seed, 1]), layout, spec, stds)
    adapter_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": out.name,
        "r": r,
        "lora_alpha": spec.lora_alpha,
        "lora_dropout": 0.0,
        "target_modules": ["o_proj"],
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "inference_mode": True,
    }
    (lora_dir / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n")


# --- the whole checkpoint -----------------------------------------------------------

def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def make_checkpoint(out_dir: PathLike, spec: Optional[CheckpointSpec] = None, **overrides: object) -> Path:
    """Write a random NLD checkpoint for `spec` (default CheckpointSpec(), fields overridable) into out_dir."""
    spec = dataclasses.replace(spec or CheckpointSpec(), **overrides)  # type: ignore[arg-type]
    spec.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    bos, eos = control_token(1), control_token(spec.eos_token_id)
    _write_json(out / "config.json", config_json(spec))
    _write_json(out / "generation_config.json", generation_config_json(spec))
    _write_json(out / "tokenizer.json", build_tokenizer_json(spec.vocab_size))
    _write_json(out / "tokenizer_config.json", tokenizer_config(bos, eos, spec.max_position_embeddings))
    _write_json(out / "special_tokens_map.json", special_tokens_map(bos, eos))
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    _write_model_weights(out, spec)
    if spec.lora_rank > 0:
        _write_lora(out, spec)
    return out
