"""A small streaming GGUF v3 writer (spec/gguf-schema.md, "Container").

Written here rather than taken from the `gguf` package so that package stays
an independent oracle in the tests. Usage: add every KV pair and every tensor
info first, then `write_header()`, then `write_tensor(name, chunks)` for each
tensor in info order, then `finish()`. The file is written as `<path>.part`
and renamed on `finish()`, so a failed conversion never leaves a truncated
GGUF under the final name.
"""

from __future__ import annotations

import enum
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
DEFAULT_ALIGNMENT = 32


class ValueType(enum.IntEnum):
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


_SCALAR_FORMATS: Dict[ValueType, str] = {
    ValueType.UINT8: "<B", ValueType.INT8: "<b", ValueType.UINT16: "<H", ValueType.INT16: "<h",
    ValueType.UINT32: "<I", ValueType.INT32: "<i", ValueType.FLOAT32: "<f", ValueType.BOOL: "<?",
    ValueType.UINT64: "<Q", ValueType.INT64: "<q", ValueType.FLOAT64: "<d",
}


class GGMLType(enum.IntEnum):
    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q8_0 = 8
    Q4_K = 12
    Q6_K = 14
    BF16 = 30


# ggml type -> (elements per block, bytes per block)
BLOCK_SIZES: Dict[GGMLType, Tuple[int, int]] = {
    GGMLType.F32: (1, 4),
    GGMLType.F16: (1, 2),
    GGMLType.BF16: (1, 2),
    GGMLType.Q8_0: (32, 34),
    GGMLType.Q4_0: (32, 18),
    GGMLType.Q4_K: (256, 144),
    GGMLType.Q6_K: (256, 210),
}


def tensor_nbytes(ne: Sequence[int], ggml_type: GGMLType) -> int:
    """Bytes of a tensor with dims `ne` (innermost first); ne[0] must fill whole blocks."""
    block, type_size = BLOCK_SIZES[ggml_type]
    if ne[0] % block:
        raise ValueError(f"row of {ne[0]} elements is not a multiple of the {ggml_type.name} block ({block})")
    return int(np.prod(ne, dtype=np.int64)) // block * type_size


def _pad(n: int, alignment: int) -> int:
    return -n % alignment


def _encode_string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _encode_scalar(vtype: ValueType, value: Union[int, float, bool, str]) -> bytes:
    if vtype == ValueType.STRING:
        return _encode_string(str(value))
    return struct.pack(_SCALAR_FORMATS[vtype], value)


@dataclass
class TensorInfo:
    name: str
    ne: Tuple[int, ...]  # innermost first
    ggml_type: GGMLType
    offset: int  # from the start of the data section
    nbytes: int


class GGUFWriter:
    """Collects metadata and tensor infos, then streams tensor data to disk."""

    def __init__(self, path: Union[str, "os.PathLike[str]"], alignment: int = DEFAULT_ALIGNMENT) -> None:
        if alignment <= 0 or alignment & (alignment - 1):
            raise ValueError(f"alignment {alignment} is not a power of two")
        self.path = Path(path)
        self.alignment = alignment
        self._kv: Dict[str, bytes] = {}
        self.tensors: List[TensorInfo] = []
        self._data_size = 0
        self._file: Optional[BinaryIO] = None
        self._next_tensor = 0

    # --- metadata ---------------------------------------------------------

    def add_scalar(self, key: str, vtype: ValueType, value: Union[int, float, bool, str]) -> None:
        self._add(key, struct.pack("<I", vtype) + _encode_scalar(vtype, value))

    def add_array(self, key: str, elem_type: ValueType, values: Sequence[Union[int, float, str]]) -> None:
        if elem_type == ValueType.STRING:
            payload = b"".join(_encode_string(v) for v in values)  # type: ignore[arg-type]
        elif elem_type == ValueType.BOOL:
            payload = np.asarray(values, dtype=np.uint8).tobytes()
        else:
            payload = np.asarray(values, dtype=np.dtype(_SCALAR_FORMATS[elem_type])).tobytes()
        self._add(key, struct.pack("<IIQ", ValueType.ARRAY, elem_type, len(values)) + payload)

    def add_u32(self, key: str, value: int) -> None:
        self.add_scalar(key, ValueType.UINT32, int(value))

    def add_f32(self, key: str, value: float) -> None:
        self.add_scalar(key, ValueType.FLOAT32, float(value))

    def add_bool(self, key: str, value: bool) -> None:
        self.add_scalar(key, ValueType.BOOL, bool(value))

    def add_string(self, key: str, value: str) -> None:
        self.add_scalar(key, ValueType.STRING, value)

    def _add(self, key: str, encoded_value: bytes) -> None:
        if self._file is not None:
            raise RuntimeError("metadata added after the header was written")
        if key in self._kv:
            raise ValueError(f"duplicate GGUF key '{key}'")
        self._kv[key] = encoded_value

    # --- tensors ------------------------------------------------------------

    def add_tensor_info(self, name: str, ne: Sequence[int], ggml_type: GGMLType) -> TensorInfo:
        if self._file is not None:
            raise RuntimeError("tensor info added after the header was written")
        if any(t.name == name for t in self.tensors):
            raise ValueError(f"duplicate tensor name '{name}'")
        if not 1 <= len(ne) <= 4:
            raise ValueError(f"tensor '{name}' has {len(ne)} dims (1..4 allowed)")
        info = TensorInfo(name, tuple(int(d) for d in ne), ggml_type, self._data_size, tensor_nbytes(ne, ggml_type))
        self._data_size += info.nbytes + _pad(info.nbytes, self.alignment)
        self.tensors.append(info)
        return info

    @property
    def total_data_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    # --- writing ------------------------------------------------------------

    def write_header(self) -> None:
        """Open `<path>.part` and write magic, counts, KV pairs, tensor infos and padding."""
        parts = [GGUF_MAGIC, struct.pack("<IQQ", GGUF_VERSION, len(self.tensors), len(self._kv))]
        for key, value in self._kv.items():
            parts += [_encode_string(key), value]
        for t in self.tensors:
            parts += [_encode_string(t.name), struct.pack("<I", len(t.ne)),
                      struct.pack(f"<{len(t.ne)}Q", *t.ne), struct.pack("<IQ", t.ggml_type, t.offset)]
        header = b"".join(parts)
        self._file = open(self._part_path, "wb")
        self._file.write(header + b"\0" * _pad(len(header), self.alignment))

    def write_tensor(self, name: str, chunks: Iterable[Union[bytes, np.ndarray]]) -> None:
        """Stream the bytes of the next tensor (infos are written in order) and pad it."""
        if self._file is None:
            raise RuntimeError("write_header() must come first")
        info = self.tensors[self._next_tensor]
        if info.name != name:
            raise RuntimeError(f"expected data of tensor '{info.name}', got '{name}'")
        written = 0
        for chunk in chunks:
            view = (np.ascontiguousarray(chunk).data if isinstance(chunk, np.ndarray) else memoryview(chunk)).cast("B")
            self._file.write(view)
            written += view.nbytes
        if written != info.nbytes:
            raise RuntimeError(f"tensor '{name}': wrote {written} bytes, expected {info.nbytes}")
        self._file.write(b"\0" * _pad(info.nbytes, self.alignment))
        self._next_tensor += 1

    def finish(self) -> Path:
        """Check every tensor was written, close and move the file to its final name."""
        if self._file is None:
            raise RuntimeError("write_header() was never called")
        if self._next_tensor != len(self.tensors):
            raise RuntimeError(f"only {self._next_tensor} of {len(self.tensors)} tensors were written")
        self._file.close()
        self._file = None
        os.replace(self._part_path, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the partial file (safe to call more than once)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._part_path.exists():
            self._part_path.unlink()

    def __enter__(self) -> "GGUFWriter":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None or self._file is not None:
            self.abort()

    @property
    def _part_path(self) -> Path:
        return self.path.with_name(self.path.name + ".part")
