"""The drafter LoRA (linear_spec_lora/, PEFT format) -> a llama.cpp LoRA adapter GGUF.

PEFT stores `base_model.model.encoder.layers.{i}.<module>.lora_A.weight` [r, in]
and `...lora_B.weight` [out, r]; delta W = (alpha / r) * B A (spec section 6.4).
llama.cpp's adapter format names them `blk.{i}.<gguf>.weight.lora_a` (ne [in, r])
and `.lora_b` (ne [r, out]) and stores `adapter.lora.alpha`, scaling by alpha / r.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

from .errors import ConvertError
from .gguf_writer import GGMLType, GGUFWriter
from .hf_checkpoint import LinearSpec, ModelConfig, check_shape, layer_tensor_specs, read_json
from .safetensors_io import TensorEntry, read_header
from .tensor_encode import encode_tensor, ggml_dims

LORA_DIR = "linear_spec_lora"
ARCH = "mistral3"
_KEY = re.compile(r"^base_model\.model\.encoder\.layers\.(\d+)\.(.+)\.lora_([AB])\.weight$")


def lora_dir(hf_dir: Path) -> Path:
    return hf_dir / LORA_DIR


def _effective_alpha(adapter_config: Dict[str, object], rank: int) -> float:
    alpha = float(adapter_config.get("lora_alpha", rank))  # type: ignore[arg-type]
    if adapter_config.get("use_rslora"):
        # rsLoRA scales by alpha / sqrt(r); llama.cpp divides by r, so store alpha * sqrt(r).
        alpha *= math.sqrt(rank)
    return alpha


def _plan(cfg: ModelConfig, entries: Dict[str, TensorEntry], rank: int) -> List[Tuple[str, TensorEntry, int]]:
    """(GGUF name, source, q/k heads to permute) for every lora_a/lora_b, checked against config."""
    specs: Dict[str, LinearSpec] = {k[: -len(".weight")]: v for k, v in layer_tensor_specs(cfg).items()}
    pairs: Dict[Tuple[int, str], Dict[str, TensorEntry]] = {}
    for name, entry in entries.items():
        match = _KEY.match(name)
        if not match or match.group(2) not in specs or len(specs[match.group(2)].shape) != 2:
            raise ConvertError(f"unexpected tensor '{name}' in {entry.path.name}")
        layer = int(match.group(1))
        if layer >= cfg.n_layers:
            raise ConvertError(f"unexpected tensor '{name}' in {entry.path.name} (model has {cfg.n_layers} layers)")
        pairs.setdefault((layer, match.group(2)), {})[match.group(3)] = entry

    plan = []
    for (layer, module), ab in sorted(pairs.items()):
        spec = specs[module]
        out_features, in_features = spec.shape
        prefix = f"base_model.model.encoder.layers.{layer}.{module}"
        for part, shape in (("A", (rank, in_features)), ("B", (out_features, rank))):
            found = ab.get(part)
            if found is None:
                raise ConvertError(f"missing tensor '{prefix}.lora_{part}.weight'")
            entry = found
            check_shape(entry, shape)
            gguf_name = f"blk.{layer}.{spec.gguf_suffix}.lora_{part.lower()}"
            # Rows of B are output rows of q/k, so they take the same rope permutation.
            plan.append((gguf_name, entry, spec.permute_heads if part == "B" else 0))
    return plan


@dataclass(frozen=True)
class LoraPlan:
    alpha: float  # adapter.lora.alpha (llama.cpp scales by alpha / r)
    tensors: List[Tuple[str, TensorEntry, int]]  # (GGUF name, source, q/k heads to permute)


def prepare_lora(hf_dir: Path, cfg: ModelConfig) -> LoraPlan:
    """Read and check the drafter LoRA of `hf_dir` against `cfg` (nothing is written)."""
    adapter_dir = lora_dir(hf_dir)
    adapter_config = read_json(adapter_dir / "adapter_config.json")
    if str(adapter_config.get("peft_type", "LORA")).upper() != "LORA":
        raise ConvertError(f"{adapter_dir}: unsupported peft_type {adapter_config.get('peft_type')!r} (expected LORA)")
    if adapter_config.get("use_dora"):
        raise ConvertError(f"{adapter_dir}: DoRA adapters are not supported")
    if "r" not in adapter_config:
        raise ConvertError(f"{adapter_dir / 'adapter_config.json'}: missing 'r'")
    rank = int(adapter_config["r"])  # type: ignore[arg-type]
    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        raise ConvertError(f"missing weights file: {weights}")
    return LoraPlan(_effective_alpha(adapter_config, rank), _plan(cfg, read_header(weights), rank))


def write_lora(plan: LoraPlan, out_path: Path, use_f32: bool, name: str) -> Path:
    """Write the adapter GGUF (F32 tensors, or F16); returns its path."""
    tensor_type = GGMLType.F32 if use_f32 else GGMLType.F16
    with GGUFWriter(out_path) as writer:
        writer.add_string("general.architecture", ARCH)
        writer.add_string("general.type", "adapter")
        writer.add_string("general.name", name)
        writer.add_u32("general.file_type", 0 if use_f32 else 1)
        writer.add_u32("general.quantization_version", 2)
        writer.add_u32("general.alignment", writer.alignment)
        writer.add_string("adapter.type", "lora")
        writer.add_f32("adapter.lora.alpha", plan.alpha)
        for gguf_name, entry, _ in plan.tensors:
            writer.add_tensor_info(gguf_name, ggml_dims(entry.shape), tensor_type)
        writer.write_header()
        for gguf_name, entry, heads in plan.tensors:
            writer.write_tensor(gguf_name, encode_tensor(entry, tensor_type, heads))
        return writer.finish()
