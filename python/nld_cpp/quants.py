"""Block quantization and the CPU matmul of the core, on numpy arrays.

Thin wrappers over nld_quantize / nld_dequantize / nld_matmul (nld.h): the
converter encodes Q8_0, Q4_0, Q4_K and Q6_K through these, and the tests
compare them with the `gguf` package and compare the CPU code paths.
Types are GGML type ids (the ``GGML_*`` constants below).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ._binding import check, ffi, lib

GGML_F32 = lib.NLD_TYPE_F32
GGML_F16 = lib.NLD_TYPE_F16
GGML_Q4_0 = lib.NLD_TYPE_Q4_0
GGML_Q8_0 = lib.NLD_TYPE_Q8_0
GGML_Q4_K = lib.NLD_TYPE_Q4_K
GGML_Q6_K = lib.NLD_TYPE_Q6_K
GGML_Q8_K = lib.NLD_TYPE_Q8_K
GGML_BF16 = lib.NLD_TYPE_BF16

# CPU code paths (nld_cpu_path)
CPU_PATHS = {"auto": lib.NLD_CPU_PATH_AUTO, "scalar": lib.NLD_CPU_PATH_SCALAR, "avx2": lib.NLD_CPU_PATH_AVX2,
             "avx512_vnni": lib.NLD_CPU_PATH_AVX512_VNNI}


def row_bytes(ggml_type: int, n_per_row: int) -> int:
    """Bytes of one row of `n_per_row` elements."""
    out = ffi.new("size_t*")
    check(lib.nld_quant_row_bytes(int(ggml_type), int(n_per_row), out))
    return int(out[0])


def _rows_f32(values: np.ndarray) -> np.ndarray:
    arr = np.ascontiguousarray(values, dtype=np.float32)
    if arr.ndim == 0:
        raise ValueError("expected at least one dimension")
    return arr.reshape(-1, arr.shape[-1])


def quantize(values: np.ndarray, ggml_type: int) -> np.ndarray:
    """float rows (..., n) -> uint8 array (..., row_bytes) of `ggml_type` blocks."""
    rows = _rows_f32(values)
    n_rows, n = rows.shape
    out = np.empty((n_rows, row_bytes(ggml_type, n)), dtype=np.uint8)
    written = ffi.new("size_t*")
    check(lib.nld_quantize(int(ggml_type), ffi.from_buffer("float[]", rows), n_rows, n,
                           ffi.from_buffer(out), out.nbytes, written))
    return out.reshape(tuple(np.shape(values)[:-1]) + (out.shape[1],))


def dequantize(blocks: np.ndarray, ggml_type: int, n_per_row: int) -> np.ndarray:
    """uint8 rows of `ggml_type` blocks -> float32 rows (n_rows, n_per_row)."""
    data = np.ascontiguousarray(blocks).view(np.uint8).reshape(-1)
    per_row = row_bytes(ggml_type, n_per_row)
    if data.nbytes % per_row:
        raise ValueError(f"{data.nbytes} bytes is not a whole number of {per_row}-byte rows")
    n_rows = data.nbytes // per_row
    out = np.empty((n_rows, n_per_row), dtype=np.float32)
    check(lib.nld_dequantize(int(ggml_type), ffi.from_buffer(data), data.nbytes, n_rows, n_per_row,
                             ffi.from_buffer("float[]", out), out.size))
    return out


def cpu_path_supported(path: str) -> bool:
    return bool(lib.nld_cpu_path_supported(CPU_PATHS[path]))


def default_cpu_path() -> str:
    """The path AUTO resolves to (NLD_CPU_PATH when set and supported)."""
    code = lib.nld_cpu_path_default()
    return next(name for name, value in CPU_PATHS.items() if value == code)


def matmul(weights: np.ndarray, ggml_type: int, n_in: int, x: np.ndarray, path: str = "auto",
           n_threads: int = 1, out: Optional[np.ndarray] = None) -> np.ndarray:
    """y (rows, n_out) = x (rows, n_in) @ W^T, W given as its encoded rows (n_out, row bytes) as stored in GGUF."""
    w = np.ascontiguousarray(weights)
    per_row = row_bytes(ggml_type, n_in)
    if w.nbytes % per_row:
        raise ValueError(f"{w.nbytes} weight bytes is not a whole number of {per_row}-byte rows")
    n_out = w.nbytes // per_row
    xs = _rows_f32(x)
    if xs.shape[1] != n_in:
        raise ValueError(f"x rows have {xs.shape[1]} elements, expected {n_in}")
    y = out if out is not None else np.empty((xs.shape[0], n_out), dtype=np.float32)
    if y.dtype != np.float32 or not y.flags.c_contiguous:
        raise ValueError("out must be a C-contiguous float32 array")
    check(lib.nld_matmul(int(ggml_type), ffi.from_buffer(w.view(np.uint8).reshape(-1)), w.nbytes, n_out, n_in,
                         ffi.from_buffer("float[]", xs), xs.shape[0], ffi.from_buffer("float[]", y), y.size,
                         CPU_PATHS[path], n_threads))
    return y
