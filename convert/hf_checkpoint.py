"""Reading a Hugging Face NLD checkpoint: config.json, the weight files, the tensor plan.

Owns the HF -> GGUF tensor name table (spec/nld-model.md section 3) and every
check of a checkpoint against its config: unexpected, missing or misshapen
tensors are errors here, before a byte of output is written.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from .errors import ConvertError
from .safetensors_io import TensorEntry, read_header

SUPPORTED_ARCHITECTURE = "NemotronLabsDiffusionModel"
SUPPORTED_MODEL_TYPE = "nemotron_labs_diffusion"
DEFAULT_MASK_TOKEN_ID = 100
DEFAULT_BLOCK_SIZE = 32

# Tensors the HF code may carry that have no place in the GGUF.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq", ".k_scale", ".v_scale")

Warn = Callable[[str], None]


@dataclass(frozen=True)
class YarnRope:
    """YaRN parameters as transformers reads them (spec section 4)."""

    theta: float
    factor: float  # the effective factor
    original_context: int
    beta_fast: float
    beta_slow: float
    mscale: Optional[float]
    mscale_all_dim: Optional[float]
    llama_4_scaling_beta: float
    attention_factor: float  # cos/sin multiplier


@dataclass(frozen=True)
class ModelConfig:
    """The hyper-parameters of an NLD checkpoint that the GGUF needs."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float
    bos_token_id: Optional[int]
    eos_token_ids: Tuple[int, ...]  # config order; empty when config.json has none
    mask_token_id: int
    block_size: int
    rope: YarnRope


def get_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN magnitude correction, as in transformers' _compute_yarn_parameters."""
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def read_json(path: Path) -> Dict[str, Any]:
    """A JSON object from `path`, or a ConvertError naming the file."""
    if not path.is_file():
        raise ConvertError(f"missing {path.name}: {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConvertError(f"cannot parse {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConvertError(f"{path}: expected a JSON object")
    return data


def _require(config: Dict[str, Any], key: str) -> Any:
    if config.get(key) is None:
        raise ConvertError(f"config.json: missing '{key}'")
    return config[key]


def check_architecture(config: Dict[str, Any]) -> None:
    archs = config.get("architectures") or []
    if SUPPORTED_ARCHITECTURE in archs:
        return
    if not archs and config.get("model_type") == SUPPORTED_MODEL_TYPE:
        return
    found = archs[0] if archs else config.get("model_type", "<none>")
    raise ConvertError(f"unsupported architecture '{found}' (supported: {SUPPORTED_ARCHITECTURE})")


def _read_yarn(config: Dict[str, Any], head_dim: int, warn: Warn) -> YarnRope:
    """rope_parameters, or the legacy top-level rope_theta + rope_scaling."""
    params = config.get("rope_parameters")
    if not isinstance(params, dict):
        params = dict(config.get("rope_scaling") or {})
        if "rope_theta" not in params and config.get("rope_theta") is not None:
            params["rope_theta"] = config["rope_theta"]
    rope_type = params.get("rope_type", params.get("type"))
    if rope_type != "yarn":
        raise ConvertError(f"config.json: unsupported rope type {rope_type!r} (NLD uses 'yarn')")
    if params.get("rope_theta") is None:
        raise ConvertError("config.json: missing 'rope_theta'")
    original = params.get("original_max_position_embeddings", config.get("original_max_position_embeddings"))
    if original is None:
        raise ConvertError("config.json: missing 'original_max_position_embeddings' in the rope parameters")
    max_pos = int(_require(config, "max_position_embeddings"))
    implied = max_pos / int(original)
    stored = params.get("factor")
    factor = float(stored) if stored is not None else implied
    if stored is not None and not math.isclose(float(stored), implied, rel_tol=1e-6):
        warn(f"rope factor {float(stored):g} in config.json disagrees with max_position_embeddings / "
             f"original_max_position_embeddings = {max_pos}/{int(original)} = {implied:g}; "
             f"using the stored factor {float(stored):g}")

    mscale = params.get("mscale")
    mscale_all_dim = params.get("mscale_all_dim")
    attention_factor = params.get("attention_factor")
    if attention_factor is None:
        # transformers tests truthiness here, so mscale = 0 means "not given".
        if mscale and mscale_all_dim:
            attention_factor = get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)
        else:
            attention_factor = get_mscale(factor)
    if head_dim % 2:
        raise ConvertError(f"config.json: head_dim {head_dim} must be even for rotary embeddings")
    return YarnRope(
        theta=float(params["rope_theta"]),
        factor=factor,
        original_context=int(original),
        beta_fast=float(params.get("beta_fast", 32.0)),
        beta_slow=float(params.get("beta_slow", 1.0)),
        mscale=None if mscale is None else float(mscale),
        mscale_all_dim=None if mscale_all_dim is None else float(mscale_all_dim),
        llama_4_scaling_beta=float(params.get("llama_4_scaling_beta", 0.0)),
        attention_factor=float(attention_factor),
    )


def load_config(hf_dir: Path, warn: Warn) -> ModelConfig:
    config = read_json(hf_dir / "config.json")
    check_architecture(config)
    n_heads = int(_require(config, "num_attention_heads"))
    n_kv_heads = int(config.get("num_key_value_heads") or n_heads)
    hidden = int(_require(config, "hidden_size"))
    head_dim = int(config.get("head_dim") or hidden // n_heads)
    if n_heads % n_kv_heads:
        raise ConvertError(f"config.json: num_attention_heads {n_heads} is not a multiple of "
                           f"num_key_value_heads {n_kv_heads}")
    eos = config.get("eos_token_id")
    eos_ids = tuple(int(e) for e in eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
    bos = config.get("bos_token_id")
    return ModelConfig(
        vocab_size=int(_require(config, "vocab_size")),
        hidden_size=hidden,
        intermediate_size=int(_require(config, "intermediate_size")),
        n_layers=int(_require(config, "num_hidden_layers")),
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        head_dim=head_dim,
        max_position_embeddings=int(_require(config, "max_position_embeddings")),
        rms_norm_eps=float(config.get("rms_norm_eps", 1e-5)),
        bos_token_id=None if bos is None else int(bos),
        eos_token_ids=eos_ids,
        mask_token_id=int(config.get("mask_token_id", DEFAULT_MASK_TOKEN_ID)),
        block_size=int(config.get("block_size", DEFAULT_BLOCK_SIZE)),
        rope=_read_yarn(config, head_dim, warn),
    )


# --- weight files -------------------------------------------------------------

def load_weight_entries(hf_dir: Path) -> Dict[str, TensorEntry]:
    """All tensors of model.safetensors, or of the shards named by model.safetensors.index.json."""
    index_path = hf_dir / "model.safetensors.index.json"
    single_path = hf_dir / "model.safetensors"
    if index_path.is_file():
        weight_map = read_json(index_path).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ConvertError(f"{index_path}: missing or empty 'weight_map'")
        entries: Dict[str, TensorEntry] = {}
        for file_name in sorted(set(weight_map.values())):
            shard = hf_dir / file_name
            if not shard.is_file():
                raise ConvertError(f"missing weights file: {shard} (listed in {index_path.name})")
            for name, entry in read_header(shard).items():
                if name in entries:
                    raise ConvertError(f"tensor '{name}' appears in both {entries[name].path.name} and {shard.name}")
                entries[name] = entry
        for name, file_name in weight_map.items():
            if name not in entries or entries[name].path.name != file_name:
                raise ConvertError(f"{index_path.name} places tensor '{name}' in {file_name}, but it is not there")
        return entries
    if single_path.is_file():
        return read_header(single_path)
    raise ConvertError(f"missing weights file: {single_path} (nor {index_path.name}; only safetensors is supported)")


# --- the tensor plan ------------------------------------------------------------

@dataclass(frozen=True)
class LinearSpec:
    """One weight of a decoder layer: its GGUF name and the torch shape config implies."""

    gguf_suffix: str
    shape: Tuple[int, ...]
    permute_heads: int = 0  # > 0: q/k rows permuted per head, with this many heads


def layer_tensor_specs(cfg: ModelConfig) -> Dict[str, LinearSpec]:
    """HF suffix within `encoder.layers.{i}.` -> GGUF suffix within `blk.{i}.` and shape."""
    h, i, d = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    q_width, kv_width = cfg.n_heads * d, cfg.n_kv_heads * d
    return {
        "input_layernorm.weight": LinearSpec("attn_norm.weight", (h,)),
        "self_attn.q_proj.weight": LinearSpec("attn_q.weight", (q_width, h), cfg.n_heads),
        "self_attn.k_proj.weight": LinearSpec("attn_k.weight", (kv_width, h), cfg.n_kv_heads),
        "self_attn.v_proj.weight": LinearSpec("attn_v.weight", (kv_width, h)),
        "self_attn.o_proj.weight": LinearSpec("attn_output.weight", (h, q_width)),
        "post_attention_layernorm.weight": LinearSpec("ffn_norm.weight", (h,)),
        "mlp.gate_proj.weight": LinearSpec("ffn_gate.weight", (i, h)),
        "mlp.up_proj.weight": LinearSpec("ffn_up.weight", (i, h)),
        "mlp.down_proj.weight": LinearSpec("ffn_down.weight", (h, i)),
    }


@dataclass(frozen=True)
class PlannedTensor:
    """A source tensor and where it goes."""

    hf_name: str
    gguf_name: str
    entry: TensorEntry
    permute_heads: int


def expected_tensors(cfg: ModelConfig) -> List[Tuple[str, str, LinearSpec]]:
    """(HF name, GGUF name, spec) for every tensor, in GGUF file order."""
    v, h = cfg.vocab_size, cfg.hidden_size
    out = [("encoder.embed_tokens.weight", "token_embd.weight", LinearSpec("", (v, h)))]
    for layer in range(cfg.n_layers):
        for suffix, spec in layer_tensor_specs(cfg).items():
            out.append((f"encoder.layers.{layer}.{suffix}", f"blk.{layer}.{spec.gguf_suffix}", spec))
    out.append(("encoder.norm.weight", "output_norm.weight", LinearSpec("", (h,))))
    out.append(("diffusion_head.weight", "output.weight", LinearSpec("", (v, h))))
    return out


def check_shape(entry: TensorEntry, expected: Tuple[int, ...]) -> None:
    if entry.shape != expected:
        raise ConvertError(f"tensor '{entry.name}' has shape {list(entry.shape)} but config implies {list(expected)}")


def is_ignored(name: str) -> bool:
    return name.endswith(IGNORED_SUFFIXES)


def plan_tensors(cfg: ModelConfig, entries: Dict[str, TensorEntry]) -> List[PlannedTensor]:
    """Match the checkpoint's tensors to the expected ones; every mismatch is a ConvertError."""
    expected = expected_tensors(cfg)
    expected_names = {hf for hf, _, _ in expected}
    for name in sorted(entries):
        if name not in expected_names and not is_ignored(name):
            raise ConvertError(f"unexpected tensor '{name}' in {entries[name].path.name} "
                               f"(not part of a {cfg.n_layers}-layer NLD model)")
    plan = []
    for hf_name, gguf_name, spec in expected:
        entry = entries.get(hf_name)
        if entry is None:
            raise ConvertError(f"missing tensor '{hf_name}' (expected for {gguf_name})")
        check_shape(entry, spec.shape)
        plan.append(PlannedTensor(hf_name, gguf_name, entry, spec.permute_heads))
    return plan
