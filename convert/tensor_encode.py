"""Turning one source tensor into GGUF bytes, a chunk of rows at a time.

Owns the output types (which ggml type each tensor gets for an --outtype),
the q/k rope permutation, and the element encodings. Q8_0/Q4_0 come from the
`gguf` package's reference quantizer (bit-exact with ggml), imported lazily
so that only quantized conversions need it.
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
}

# About this many bytes of float32 per chunk: the quantizer makes a few
# temporaries of this size, so peak memory is a small multiple of it.
CHUNK_F32_BYTES = 32 * 1024 * 1024


def get_outtype(name: str) -> OutType:
    try:
        return OUTTYPES[name.lower()]
    except KeyError:
        raise ConvertError(f"unknown outtype '{name}' (supported: {', '.join(OUTTYPES)})") from None


def tensor_type(outtype: OutType, torch_shape: Sequence[int]) -> GGMLType:
    """Norms (1-D) stay F32; a matrix whose rows do not fill whole quant blocks falls back to F16."""
    if len(torch_shape) < 2:
        return GGMLType.F32
    block, _ = BLOCK_SIZES[outtype.matrix_type]
    if torch_shape[-1] % block:
        return GGMLType.F16
    return outtype.matrix_type


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
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    return quantize(np.ascontiguousarray(values_f32, dtype=np.float32), GGMLQuantizationType(int(ggml_type)))


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
