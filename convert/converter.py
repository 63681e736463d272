"""convert_checkpoint: an HF NLD checkpoint -> a mistral3 GGUF (+ the drafter LoRA adapter GGUF).

Everything is checked and every tensor's type and size is known before the
header is written; then tensors are converted and written one at a time, in
chunks of rows, so memory stays near one chunk whatever the model size.
GGUF keys are listed in spec/gguf-schema.md; the nld.* / diffusion.* keys are
documented in docs/gguf-keys.md.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Union

from .errors import ConvertError
from .gguf_writer import GGUFWriter, ValueType
from .hf_checkpoint import ModelConfig, PlannedTensor, load_config, load_weight_entries, plan_tensors
from .lora import lora_dir, prepare_lora, write_lora
from .tensor_encode import OutType, counted, encode_tensor, get_outtype, ggml_dims, tensor_type
from .tokenizer_meta import TokenizerMeta, load_tokenizer_meta

ARCH = "mistral3"
DEFAULT_DIFFUSION_THRESHOLD = 0.9  # the model card's default for block diffusion

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class ConvertResult:
    path: Path
    lora_path: Optional[Path]
    outtype: str
    tensor_count: int
    data_bytes: int  # tensor bytes of the model GGUF, padding excluded
    rope_factor: float  # the effective YaRN factor written
    warnings: List[str] = field(default_factory=list)


def default_output_path(hf_dir: Path, outtype: str) -> Path:
    return hf_dir / f"{hf_dir.resolve().name}-{outtype}.gguf"


def default_lora_path(model_path: Path) -> Path:
    """`model.gguf` -> `model.lora.gguf` (the name the runtime looks for beside the model)."""
    stem = model_path.name[: -len(".gguf")] if model_path.name.endswith(".gguf") else model_path.name
    return model_path.with_name(stem + ".lora.gguf")


def _write_metadata(writer: GGUFWriter, cfg: ModelConfig, tok: TokenizerMeta, name: str, outtype: OutType) -> None:
    rope = cfg.rope
    writer.add_string("general.architecture", ARCH)
    writer.add_string("general.type", "model")
    writer.add_string("general.name", name)
    writer.add_u32("general.file_type", outtype.file_type)
    writer.add_u32("general.quantization_version", 2)
    writer.add_u32("general.alignment", writer.alignment)

    writer.add_u32(f"{ARCH}.vocab_size", cfg.vocab_size)
    writer.add_u32(f"{ARCH}.context_length", cfg.max_position_embeddings)
    writer.add_u32(f"{ARCH}.embedding_length", cfg.hidden_size)
    writer.add_u32(f"{ARCH}.block_count", cfg.n_layers)
    writer.add_u32(f"{ARCH}.feed_forward_length", cfg.intermediate_size)
    writer.add_u32(f"{ARCH}.attention.head_count", cfg.n_heads)
    writer.add_u32(f"{ARCH}.attention.head_count_kv", cfg.n_kv_heads)
    writer.add_u32(f"{ARCH}.attention.key_length", cfg.head_dim)
    writer.add_u32(f"{ARCH}.attention.value_length", cfg.head_dim)
    writer.add_f32(f"{ARCH}.attention.layer_norm_rms_epsilon", cfg.rms_norm_eps)
    writer.add_f32(f"{ARCH}.attention.temperature_scale", rope.llama_4_scaling_beta)
    writer.add_u32(f"{ARCH}.rope.dimension_count", cfg.head_dim)
    writer.add_f32(f"{ARCH}.rope.freq_base", rope.theta)
    writer.add_string(f"{ARCH}.rope.scaling.type", "yarn")
    writer.add_f32(f"{ARCH}.rope.scaling.factor", rope.factor)
    writer.add_u32(f"{ARCH}.rope.scaling.original_context_length", rope.original_context)
    writer.add_f32(f"{ARCH}.rope.scaling.yarn_beta_fast", rope.beta_fast)
    writer.add_f32(f"{ARCH}.rope.scaling.yarn_beta_slow", rope.beta_slow)
    # llama.cpp's Ministral-3 converter stores mscale_all_dim under this key.
    writer.add_f32(f"{ARCH}.rope.scaling.yarn_log_multiplier",
                   rope.mscale_all_dim if rope.mscale_all_dim is not None else 0.0)
    writer.add_f32("nld.rope.scaling.attn_factor", rope.attention_factor)

    writer.add_u32("tokenizer.ggml.mask_token_id", cfg.mask_token_id)
    writer.add_bool("diffusion.shift_logits", False)
    writer.add_u32("diffusion.block_size", cfg.block_size)
    writer.add_f32("diffusion.threshold", DEFAULT_DIFFUSION_THRESHOLD)

    writer.add_string("tokenizer.ggml.model", "gpt2")
    writer.add_string("tokenizer.ggml.pre", "tekken")
    writer.add_array("tokenizer.ggml.tokens", ValueType.STRING, tok.tokens)
    writer.add_array("tokenizer.ggml.token_type", ValueType.INT32, tok.token_types)
    writer.add_array("tokenizer.ggml.merges", ValueType.STRING, tok.merges)
    writer.add_u32("tokenizer.ggml.bos_token_id", tok.bos_token_id)
    writer.add_u32("tokenizer.ggml.eos_token_id", tok.eos_token_id)
    eos_ids = list(cfg.eos_token_ids) or [tok.eos_token_id]
    writer.add_array("nld.eos_token_ids", ValueType.UINT32, eos_ids)
    writer.add_bool("tokenizer.ggml.add_bos_token", tok.add_bos_token)
    if tok.chat_template is not None:
        writer.add_string("tokenizer.chat_template", tok.chat_template)
    writer.add_string("tokenizer.huggingface.json", tok.huggingface_json)


def _progress_bar(total: int, desc: str, enabled: bool):  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def _write_model(out_path: Path, cfg: ModelConfig, tok: TokenizerMeta, plan: List[PlannedTensor],
                 outtype: OutType, name: str, progress: bool) -> int:
    with GGUFWriter(out_path) as writer:
        _write_metadata(writer, cfg, tok, name, outtype)
        types = [tensor_type(outtype, t.entry.shape, t.gguf_name, cfg.n_layers) for t in plan]
        for planned, ggml_type in zip(plan, types):
            writer.add_tensor_info(planned.gguf_name, ggml_dims(planned.entry.shape), ggml_type)
        writer.write_header()
        with _progress_bar(writer.total_data_bytes, out_path.name, progress) as bar:
            for planned, ggml_type in zip(plan, types):
                chunks = encode_tensor(planned.entry, ggml_type, planned.permute_heads)
                writer.write_tensor(planned.gguf_name, counted(chunks, bar.update))
        writer.finish()
        return writer.total_data_bytes


def convert_checkpoint(hf_dir: PathLike, out_path: Optional[PathLike] = None, outtype: str = "f16",
                       progress: bool = True, *, lora: bool = True,
                       lora_out: Optional[PathLike] = None) -> ConvertResult:
    """Convert the HF NLD checkpoint in `hf_dir` to GGUF.

    out_path: default `hf_dir/<dirname>-<outtype>.gguf`. The drafter LoRA
    (hf_dir/linear_spec_lora/, when present and `lora` is true) goes to
    `lora_out`, default `<out_path without .gguf>.lora.gguf`. Warnings are
    printed to stderr and returned in the result. Raises ConvertError.
    """
    hf_path = Path(hf_dir)
    if not hf_path.is_dir():
        raise ConvertError(f"not a directory: {hf_path}")
    otype = get_outtype(outtype)
    warnings: List[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        print(f"warning: {message}", file=sys.stderr)

    cfg = load_config(hf_path, warn)
    tok = load_tokenizer_meta(hf_path, cfg, warn)
    plan = plan_tensors(cfg, load_weight_entries(hf_path))
    has_lora = lora and lora_dir(hf_path).is_dir()
    if lora_out is not None and lora and not has_lora:
        raise ConvertError(f"no drafter LoRA to convert: {lora_dir(hf_path)} does not exist")
    lora_plan = prepare_lora(hf_path, cfg) if has_lora else None

    model_path = Path(out_path) if out_path is not None else default_output_path(hf_path, otype.name)
    if not model_path.parent.is_dir():
        raise ConvertError(f"output directory does not exist: {model_path.parent}")
    name = hf_path.resolve().name
    data_bytes = _write_model(model_path, cfg, tok, plan, otype, name, progress)

    lora_path = None
    if lora_plan is not None:
        target = Path(lora_out) if lora_out is not None else default_lora_path(model_path)
        lora_path = write_lora(lora_plan, target, use_f32=otype.name == "f32", name=f"{name}-drafter-lora")
    return ConvertResult(model_path, lora_path, otype.name, len(plan), data_bytes, cfg.rope.factor, warnings)
