"""Files that are valid GGUF containers but not valid models: the loader's
model-level checks (spec/gguf-schema.md, "What the loader must reject").
Each variant is written by the `gguf` package's own GGUFWriter from a good
converted file, so only the model-level fault differs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import gguf
import numpy as np
import pytest

import nld_cpp

pytestmark = pytest.mark.unit

VT = gguf.GGUFValueType


def rewrite(src: Path, dst: Path, *, arch: str = "mistral3", set_kv: dict[str, tuple[Any, Any]] | None = None,
            drop_kv: tuple[str, ...] = (), drop_tensors: tuple[str, ...] = (), tensors: dict[str, np.ndarray] | None = None) -> Path:
    """Copy src to dst through gguf.GGUFWriter, changing what is asked."""
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(dst, arch)
    set_kv = dict(set_kv or {})
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture" or name in drop_kv:
            continue
        if name in set_kv:
            value, vtype = set_kv.pop(name)
            writer.add_key_value(name, value, vtype)
            continue
        main = field.types[0]
        sub = field.types[-1] if main == VT.ARRAY else None
        writer.add_key_value(name, field.contents(), main, sub_type=sub)
    for name, (value, vtype) in set_kv.items():
        writer.add_key_value(name, value, vtype)
    for t in reader.tensors:
        if t.name in drop_tensors:
            continue
        data = np.array(t.data)
        writer.add_tensor(t.name, data)
    for name, data in (tensors or {}).items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def tensor(src: Path, name: str) -> np.ndarray:
    return np.array(next(t.data for t in gguf.GGUFReader(src).tensors if t.name == name))


# name -> (how to break the file, expected message, expected status)
CASES: dict[str, tuple[Callable[[Path, Path], Path], str, str]] = {
    "unsupported_architecture": (lambda s, d: rewrite(s, d, arch="llama"),
                                 "unsupported architecture 'llama'", "unsupported"),
    "bos_outside_vocab": (lambda s, d: rewrite(s, d, set_kv={"tokenizer.ggml.bos_token_id": (5000, VT.UINT32)}),
                          "'tokenizer.ggml.bos_token_id' = 5000 is outside the vocabulary", "format error"),
    "eos_outside_vocab": (lambda s, d: rewrite(s, d, set_kv={"tokenizer.ggml.eos_token_id": (1320, VT.UINT32)}),
                          "'tokenizer.ggml.eos_token_id' = 1320 is outside the vocabulary", "format error"),
    "mask_outside_vocab": (lambda s, d: rewrite(s, d, set_kv={"tokenizer.ggml.mask_token_id": (99999, VT.UINT32)}),
                           "mask_token_id' = 99999 is outside", "format error"),
    "negative_bos": (lambda s, d: rewrite(s, d, set_kv={"tokenizer.ggml.bos_token_id": (-1, VT.INT32)}),
                     "tokenizer.ggml.bos_token_id", "format error"),
    "block_count_too_large": (lambda s, d: rewrite(s, d, set_kv={"mistral3.block_count": (3, VT.UINT32)}),
                              "missing required tensor 'blk.2.attn_norm.weight'", "format error"),
    "block_count_too_small": (lambda s, d: rewrite(s, d, set_kv={"mistral3.block_count": (1, VT.UINT32)}),
                              "'blk.1.attn_norm.weight' is not part of a 1-layer model", "format error"),
    "head_count_disagrees": (lambda s, d: rewrite(s, d, set_kv={"mistral3.attention.head_count": (2, VT.UINT32)}),
                             "tensor 'blk.0.attn_q.weight' has shape [64, 96]", "format error"),
    "head_count_kv_disagrees": (
        lambda s, d: rewrite(s, d, set_kv={"mistral3.attention.head_count_kv": (4, VT.UINT32)}),
        "tensor 'blk.0.attn_k.weight' has shape [64, 48]", "format error"),
    "head_count_not_multiple_of_kv": (
        lambda s, d: rewrite(s, d, set_kv={"mistral3.attention.head_count_kv": (3, VT.UINT32)}),
        "not a multiple of head_count_kv 3", "format error"),
    "zero_layers": (lambda s, d: rewrite(s, d, set_kv={"mistral3.block_count": (0, VT.UINT32)}),
                    "'mistral3.block_count' = 0 is outside", "format error"),
    "huge_embedding_length": (lambda s, d: rewrite(s, d, set_kv={"mistral3.embedding_length": (2**40, VT.UINT64)}),
                              "'mistral3.embedding_length' = 1099511627776 is outside", "format error"),
    "count_stored_as_string": (lambda s, d: rewrite(s, d, set_kv={"mistral3.block_count": ("2", VT.STRING)}),
                               "mistral3.block_count", "format error"),
    "eps_stored_as_string": (
        lambda s, d: rewrite(s, d, set_kv={"mistral3.attention.layer_norm_rms_epsilon": ("tiny", VT.STRING)}),
        "layer_norm_rms_epsilon", "format error"),
    "missing_required_key": (lambda s, d: rewrite(s, d, drop_kv=("mistral3.feed_forward_length",)),
                             "mistral3.feed_forward_length", "format error"),
    "missing_token_embd": (lambda s, d: rewrite(s, d, drop_tensors=("token_embd.weight",)),
                           "missing required tensor 'token_embd.weight'", "format error"),
    "missing_layer_tensor": (lambda s, d: rewrite(s, d, drop_tensors=("blk.1.ffn_down.weight",)),
                             "missing required tensor 'blk.1.ffn_down.weight'", "format error"),
    "transposed_ffn": (lambda s, d: rewrite(s, d, drop_tensors=("blk.0.ffn_up.weight",), tensors={
        "blk.0.ffn_up.weight": tensor(s, "blk.0.ffn_up.weight").T.copy()}),
        "tensor 'blk.0.ffn_up.weight' has shape [160, 64]", "format error"),
    "norm_wrong_length": (lambda s, d: rewrite(s, d, drop_tensors=("output_norm.weight",), tensors={
        "output_norm.weight": np.ones(63, dtype=np.float32)}),
        "'output_norm.weight' has 1 dims and ne0 63, expected a vector of 64", "format error"),
    "norm_not_f32": (lambda s, d: rewrite(s, d, drop_tensors=("output_norm.weight",), tensors={
        "output_norm.weight": np.ones(64, dtype=np.float16)}),
        "norm tensor 'output_norm.weight' has type F16, expected F32", "format error"),
    "unexpected_tensor": (lambda s, d: rewrite(s, d, tensors={"rope_freqs.weight": np.ones(12, np.float32)}),
                          "unexpected tensor 'rope_freqs.weight'", "format error"),
    "vocab_size_disagrees": (lambda s, d: rewrite(s, d, set_kv={"mistral3.vocab_size": (1000, VT.UINT32)}),
                             "vocab_size disagrees with token_embd.weight", "format error"),
    "token_list_too_short": (lambda s, d: rewrite(s, d, set_kv={"tokenizer.ggml.tokens": (["a", "b"], VT.ARRAY)}),
                             "tokenizer.ggml.tokens has 2 entries", "format error"),
    "unknown_rope_scaling": (lambda s, d: rewrite(s, d, set_kv={"mistral3.rope.scaling.type": ("longrope", VT.STRING)}),
                             "rope.scaling.type 'longrope' is not supported", "unsupported"),
    "partial_rope": (lambda s, d: rewrite(s, d, set_kv={"mistral3.rope.dimension_count": (12, VT.UINT32)}),
                     "partial RoPE", "unsupported"),
    "shift_logits": (lambda s, d: rewrite(s, d, set_kv={"diffusion.shift_logits": (True, VT.BOOL)}),
                     "shift_logits", "unsupported"),
    "zero_block_size": (lambda s, d: rewrite(s, d, set_kv={"diffusion.block_size": (0, VT.UINT32)}),
                        "'diffusion.block_size' = 0 is outside", "format error"),
    "nonfinite_rope_base": (lambda s, d: rewrite(s, d, set_kv={"mistral3.rope.freq_base": (float("nan"), VT.FLOAT32)}),
                            "rope.freq_base", "format error"),
}


@pytest.fixture(scope="module")
def good_file(gguf_file) -> Path:
    path = gguf_file("base", "f32")
    with nld_cpp.Model(path):  # the source itself loads
        pass
    return path


def test_round_trip_through_gguf_writer_still_loads(good_file, tmp_path):
    copy = rewrite(good_file, tmp_path / "copy.gguf")
    with nld_cpp.Model(copy) as model:
        assert model.info.n_layer == 2


@pytest.mark.parametrize("case", sorted(CASES))
def test_model_level_fault_is_named(case, good_file, tmp_path):
    make, expected, status = CASES[case]
    bad = make(good_file, tmp_path / f"{case}.gguf")
    with pytest.raises(nld_cpp.NldError) as info:
        nld_cpp.Model(bad)
    assert expected in str(info.value), str(info.value)
    assert info.value.status_name == status
