"""Minimal safetensors reader and streaming writer (numpy only, no torch).

File layout: u64 little-endian header length N, N bytes of JSON
({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}),
then the raw little-endian tensor bytes, offsets relative to the end of the
header. BF16 has no numpy dtype: it is read and written as its uint16 bits.

Reads go through explicit file reads of row ranges rather than one memory map
of the whole file, so the converter's resident memory stays near one chunk
(pages of a map count towards RSS once touched).
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import ConvertError

PathLike = Union[str, "os.PathLike[str]"]

# safetensors dtype name -> numpy dtype of the stored bits
STORAGE_DTYPES: Dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "F64": np.dtype("<f8"),
}

MAX_HEADER_BYTES = 100 * 1024 * 1024


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    """Exact widening of bfloat16 bit patterns (uint16) to float32."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, round to nearest even, NaN kept quiet (as ggml does)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    # uint32 wrap-around can only happen for NaN bit patterns, which are replaced below.
    rounded = ((bits + (np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1)))) >> 16).astype(np.uint16)
    is_nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    if is_nan.any():
        rounded[is_nan] = ((bits[is_nan] >> 16) | np.uint32(0x0040)).astype(np.uint16)
    return rounded


def to_storage(values: np.ndarray, st_dtype: str) -> np.ndarray:
    """float32 values -> the stored representation of safetensors dtype `st_dtype`."""
    if st_dtype == "BF16":
        return f32_to_bf16_bits(values)
    return np.asarray(values).astype(STORAGE_DTYPES[st_dtype])


def to_f32(stored: np.ndarray, st_dtype: str) -> np.ndarray:
    """Stored representation -> float32 (exact for F32/F16/BF16)."""
    if st_dtype == "BF16":
        return bf16_bits_to_f32(stored)
    return stored.astype(np.float32)


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors file: where its bytes are and what they mean."""

    path: Path
    name: str
    dtype: str  # safetensors name: "BF16", "F32", ...
    shape: Tuple[int, ...]
    begin: int  # absolute file offset of the first byte
    nbytes: int

    @property
    def n_rows(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def row_elems(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64))

    def read_rows(self, row_begin: int, row_end: int) -> np.ndarray:
        """Rows [row_begin, row_end) as stored (uint16 bits for BF16), shape (rows, *shape[1:])."""
        storage = STORAGE_DTYPES[self.dtype]
        out = np.empty((row_end - row_begin) * self.row_elems, dtype=storage)
        with open(self.path, "rb") as f:
            f.seek(self.begin + row_begin * self.row_elems * storage.itemsize)
            got = f.readinto(out.data.cast("B"))
        if got != out.nbytes:
            raise ConvertError(f"{self.path}: tensor '{self.name}' is truncated")
        return out.reshape((row_end - row_begin,) + self.shape[1:] if self.shape else ())

    def read_f32(self) -> np.ndarray:
        """The whole tensor as float32 (for small tensors and tests)."""
        return to_f32(self.read_rows(0, self.n_rows), self.dtype)


def read_header(path: PathLike) -> Dict[str, TensorEntry]:
    """Parse and validate a safetensors header; returns name -> TensorEntry."""
    path = Path(path)
    try:
        file_size = path.stat().st_size
        with open(path, "rb") as f:
            raw_len = f.read(8)
            if len(raw_len) != 8:
                raise ConvertError(f"{path}: not a safetensors file (shorter than 8 bytes)")
            (header_len,) = struct.unpack("<Q", raw_len)
            if header_len > MAX_HEADER_BYTES or 8 + header_len > file_size:
                raise ConvertError(f"{path}: safetensors header length {header_len} is invalid")
            header = json.loads(f.read(header_len).decode("utf-8"))
    except OSError as exc:
        raise ConvertError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConvertError(f"{path}: safetensors header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise ConvertError(f"{path}: safetensors header is not a JSON object")

    data_start = 8 + header_len
    entries: Dict[str, TensorEntry] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = str(info["dtype"])
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConvertError(f"{path}: malformed header entry for tensor '{name}'") from exc
        if dtype not in STORAGE_DTYPES:
            raise ConvertError(f"{path}: tensor '{name}' has unsupported dtype {dtype} "
                               f"(supported: {', '.join(STORAGE_DTYPES)})")
        expected = int(np.prod(shape, dtype=np.int64)) * STORAGE_DTYPES[dtype].itemsize
        if any(d < 0 for d in shape) or end - begin != expected or begin < 0 or data_start + end > file_size:
            raise ConvertError(f"{path}: tensor '{name}' has inconsistent offsets or shape")
        entries[name] = TensorEntry(path, name, dtype, shape, data_start + begin, expected)
    return entries


# --- writer -----------------------------------------------------------------

ChunkSource = Callable[[], Iterable[np.ndarray]]


@dataclass
class TensorToWrite:
    """A tensor to stream into a safetensors file: `chunks()` yields its stored bytes in order."""

    name: str
    dtype: str
    shape: Tuple[int, ...]
    chunks: ChunkSource

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * STORAGE_DTYPES[self.dtype].itemsize


def write_safetensors(path: PathLike, tensors: Sequence[TensorToWrite],
                      metadata: Optional[Dict[str, str]] = None) -> int:
    """Write `tensors` to `path`, one chunk at a time; returns the data size in bytes."""
    header: Dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for t in tensors:
        header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)  # keep the data 8-byte aligned

    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for t in tensors:
            written = 0
            for chunk in t.chunks():
                data = np.ascontiguousarray(chunk, dtype=STORAGE_DTYPES[t.dtype])
                f.write(data.data.cast("B"))
                written += data.nbytes
            if written != t.nbytes:
                raise ValueError(f"tensor '{t.name}': wrote {written} bytes, expected {t.nbytes}")
    return offset


def iter_row_chunks(n_rows: int, row_bytes: int, target_bytes: int, multiple: int = 1) -> Iterator[Tuple[int, int]]:
    """Split rows [0, n_rows) into ranges of about `target_bytes`, each a multiple of `multiple` rows."""
    rows = max(multiple, (target_bytes // max(row_bytes, 1)) // multiple * multiple)
    for begin in range(0, n_rows, rows):
        yield begin, min(n_rows, begin + rows)

