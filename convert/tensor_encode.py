"""Turning one source tensor into GGUF bytes, a chunk of rows at a time.

Owns the output types (which ggml type each tensor gets for an --outtype),
the q/k rope permutation, and the element encodings. The block quant types
(Q8_0, Q4_0 bit-exact with ggml; Q4_K, Q6_K) are encoded by the core library
through the binding (nld_cpp.quants), imported lazily so that only quantized
conversions load it. The q4_k_m mix and its fallbacks: docs/quants.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, Optional, Sequence

import numpy as np

from .errors import ConvertError
from .gguf_writer import BLOCK_SIZES, GGMLType
from .safetensors_io import TensorEntry, f32_to_bf16_bits, iter_row_chunks, to_f32


@dataclass(frozen=True)
class OutType:
    name: str
    matrix_type: GGMLType  # type of 2-D tensors
    file_type: int  # general.file_type (llama_ftype)


OUTTYPES: Dict[str, OutType] = {
    "f32": OutType("f32", GGMLType.F32, 0),
    "f16": OutType("f16", GGMLType.F16, 1),
    "bf16": OutType("bf16", GGMLType.BF16, 32),
    "q8_0": OutType("q8_0", GGMLType.Q8_0, 7),
    "q4_0": OutType("q4_0", GGMLType.Q4_0, 2),
    "q4_k_m": OutType("q4_k_m", GGMLType.Q4_K, 15),  # llama.cpp's Q4_K_M mix, see tensor_type
}

# A K-quant whose rows do not fill 256-element super-blocks falls back as
# llama.cpp does (Q4_K -> Q5_0, Q6_K -> Q8_0), to the nearest type we have
# that loses no accuracy against the K-quant: Q8_0 for both; then F16.
_KQUANT_FALLBACK = {GGMLType.Q4_K: GGMLType.Q8_0, GGMLType.Q6_K: GGMLType.Q8_0}

# About this many bytes of float32 per chunk: the quantizer makes a few
# temporaries of this size, so peak memory is a small multiple of it.
CHUNK_F32_BYTES = 32 * 1024 * 1024


def get_outtype(name: str) -> OutType:
    try:
        return OUTTYPES[name.lower()]
    except KeyError:
        raise ConvertError(f"unknown outtype '{name}' (supported: {', '.join(OUTTYPES)})") from None


def _use_more_bits(layer: int, n_layers: int) -> bool:
    """llama.cpp's choice of the layers that get more bits: the first and last eighth, and every third between."""
    return layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2


def _q4_k_m_type(gguf_name: str, n_layers: int) -> GGMLType:
    """Q6_K for output.weight and for attn_v / ffn_down of the use_more_bits layers; Q4_K elsewhere."""
    if gguf_name == "output.weight":
        return GGMLType.Q6_K
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in ("attn_v", "ffn_down"):
        if _use_more_bits(int(parts[1]), n_layers):
            return GGMLType.Q6_K
    return GGMLType.Q4_K


def tensor_type(outtype: OutType, torch_shape: Sequence[int], gguf_name: str = "", n_layers: int = 0) -> GGMLType:
    """The ggml type of one tensor. Norms (1-D) stay F32; q4_k_m picks per tensor (by its GGUF name and
    layer); a matrix whose rows do not fill whole blocks falls back (K-quants to Q8_0, then F16)."""
    if len(torch_shape) < 2:
        return GGMLType.F32
    wanted = _q4_k_m_type(gguf_name, n_layers) if outtype.name == "q4_k_m" else outtype.matrix_type
    row = torch_shape[-1]
    if row % BLOCK_SIZES[wanted][0] and wanted in _KQUANT_FALLBACK:
        wanted = _KQUANT_FALLBACK[wanted]
    if row % BLOCK_SIZES[wanted][0]:
        return GGMLType.F16
    return wanted


def ggml_dims(torch_shape: Sequence[int]) -> tuple:
    """torch [out, in] -> GGUF ne [in, out] (innermost first)."""
    return tuple(reversed(torch_shape))


def permute_qk_rows(rows: np.ndarray, head_dim: int) -> np.ndarray:
    """Rotate-half (NeoX) row order -> interleaved pairs, per head, as llama.cpp's Llama converter.

    `rows` holds whole heads: shape (k * head_dim, in). Within a head, row j of
    the first half and row j of the second half become rows 2j and 2j+1.
    """
    n, width = rows.shape
    return rows.reshape(n // head_dim, 2, head_dim // 2, width).swapaxes(1, 2).reshape(n, width)


def encode(values_f32: np.ndarray, ggml_type: GGMLType) -> np.ndarray:
    """float32 rows -> the bytes (as a numpy array) of `ggml_type`."""
    if ggml_type == GGMLType.F32:
        return values_f32.astype(np.float32, copy=False)
    if ggml_type == GGMLType.F16:
        return values_f32.astype(np.float16)
    if ggml_type == GGMLType.BF16:
        return f32_to_bf16_bits(values_f32)
    from ..quants import quantize  # the core library's encoders (nld_cpp.quants)

    return quantize(values_f32, int(ggml_type))


def encode_tensor(entry: TensorEntry, ggml_type: GGMLType, permute_heads: int = 0,
                  chunk_f32_bytes: int = CHUNK_F32_BYTES) -> Iterator[np.ndarray]:
    """Yield the GGUF bytes of `entry` chunk by chunk (rows of the torch layout)."""
    head_dim = 0
    if permute_heads:
        if len(entry.shape) != 2 or entry.shape[0] % permute_heads or (entry.shape[0] // permute_heads) % 2:
            raise ConvertError(f"tensor '{entry.name}' of shape {list(entry.shape)} cannot be split into "
                               f"{permute_heads} heads of even size")
        head_dim = entry.shape[0] // permute_heads
    row_bytes = entry.row_elems * 4
    for begin, end in iter_row_chunks(entry.n_rows, row_bytes, chunk_f32_bytes, multiple=max(head_dim, 1)):
        stored = entry.read_rows(begin, end)
        if head_dim:
            stored = permute_qk_rows(stored, head_dim)
        if ggml_type == GGMLType.BF16 and entry.dtype == "BF16":
            yield stored  # already bfloat16 bits: copy exactly
        else:
            yield encode(to_f32(stored, entry.dtype), ggml_type)


def counted(chunks: Iterable[np.ndarray], on_bytes: Optional[Callable[[int], None]]) -> Iterator[np.ndarray]:
    """Pass chunks through, reporting each one's size (for a progress bar)."""
    for chunk in chunks:
        yield chunk
        if on_bytes is not None:
            on_bytes(chunk.nbytes)
