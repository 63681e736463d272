"""Block quantization (quants/), the quantized CPU matmul and quantized models end to end.

Oracles: the `gguf` package (quants.quantize for Q8_0/Q4_0 bytes, quants.dequantize
for every weight type), float64 numpy dot products of the dequantized operands, and
llama.cpp's published thresholds (RELIABILITY.md). Test vector of llama.cpp's
test-quantize-fns: x[i] = 0.1 + 2*cos(i + offset), 4096 elements (32*128), offset 0
for the weights and 1 for the activations; "total error" = sqrt(sum of squared
errors) / n < 0.002; dot product error = |dot(q(x), q8(y)) - dot(x, y)| / n < 0.02.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import gguf
import numpy as np
import pytest
from nld_cpp import quants as Q
from nld_cpp._binding import NldError
from sanitized import ROOT, run_sanitized

GT = gguf.GGMLQuantizationType
WEIGHT_TYPES = {"q8_0": Q.GGML_Q8_0, "q4_0": Q.GGML_Q4_0, "q4_k": Q.GGML_Q4_K, "q6_k": Q.GGML_Q6_K}
BLOCK = {"q8_0": 32, "q4_0": 32, "q4_k": 256, "q6_k": 256}
SIMD_PATHS = [p for p in ("avx2", "avx512_vnni") if Q.cpu_path_supported(p)]
SIMD_RTOL = 1e-4  # SIMD vs scalar: |simd - scalar| <= 1e-4 * (|scalar| + max|scalar|)

LLAMA_TEST_SIZE = 32 * 128
MAX_TOTAL_ERROR = 0.002
MAX_DOT_ERROR = 0.02


def llama_test_vector(offset: float, n: int = LLAMA_TEST_SIZE) -> np.ndarray:
    i = np.arange(n, dtype=np.float32)
    return (np.float32(0.1) + np.float32(2) * np.cos(i + np.float32(offset))).astype(np.float32)


def edge_rows(n: int, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """Rows of n elements that stress the scale rules."""
    neg_max = rng.uniform(-1, 1, n).astype(np.float32)
    neg_max[::32] = -3.0  # the largest magnitude of every block is negative
    tie = rng.uniform(-1, 1, n).astype(np.float32)
    tie[::32], tie[5::32] = 2.0, -2.0  # equal magnitudes of both signs
    blockwise = (rng.standard_normal(n) * np.repeat(10.0 ** rng.uniform(-4, 4, n // 32), 32)).astype(np.float32)
    return {
        "zeros": np.zeros(n, np.float32), "constant": np.full(n, 0.75, np.float32),
        "negative_constant": np.full(n, -1.25, np.float32), "tiny": (rng.standard_normal(n) * 1e-6).astype(np.float32),
        "subnormal_scale": (rng.standard_normal(n) * 1e-9).astype(np.float32),
        "huge": (rng.standard_normal(n) * 1e4).astype(np.float32),
        "beyond_f16": (rng.standard_normal(n) * 1e30).astype(np.float32),
        "negative_max": neg_max, "tie": tie, "blockwise_scales": blockwise,
        "one_spike": np.where(np.arange(n) % 97 == 3, 50.0, 0.01).astype(np.float32),
    }


# --- encoders against the gguf package ----------------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize("name", ["q8_0", "q4_0"])
def test_q8_0_q4_0_bytes_equal_gguf_quantize(name: str) -> None:
    rng = np.random.default_rng(1)
    cases = edge_rows(512, rng)
    cases["random"] = rng.standard_normal((64, 512)).astype(np.float32)
    cases["llama_vector"] = llama_test_vector(0.0)
    for label, rows in cases.items():
        with np.errstate(over="ignore"):
            want = gguf.quants.quantize(rows, GT[name.upper()]).view(np.uint8)
        got = Q.quantize(rows, WEIGHT_TYPES[name])
        assert got.shape == want.shape, label
        assert np.array_equal(got, want), f"{name} {label}: {np.count_nonzero(got != want)} bytes differ"


@pytest.mark.unit
@pytest.mark.parametrize("name", list(WEIGHT_TYPES))
def test_gguf_dequantize_equals_ours(name: str) -> None:
    rng = np.random.default_rng(2)
    cases = edge_rows(512, rng)
    cases["random"] = rng.standard_normal((32, 512)).astype(np.float32)
    for label, rows in cases.items():
        blocks = Q.quantize(rows, WEIGHT_TYPES[name])
        ours = Q.dequantize(blocks, WEIGHT_TYPES[name], 512)
        with np.errstate(over="ignore", invalid="ignore"):
            theirs = gguf.quants.dequantize(blocks, GT[name.upper()]).reshape(ours.shape)
        assert np.array_equal(ours, theirs, equal_nan=True), f"{name} {label}"
        if label in ("zeros",):
            assert not ours.any(), label
        if label in ("constant", "negative_constant"):  # a constant row must come back close to itself
            assert np.allclose(ours, rows, rtol=0.02), label


@pytest.mark.unit
@pytest.mark.parametrize("name", list(WEIGHT_TYPES))
def test_round_trip_error_within_llama_cpp_threshold(name: str) -> None:
    x = llama_test_vector(0.0)
    back = gguf.quants.dequantize(Q.quantize(x, WEIGHT_TYPES[name]), GT[name.upper()]).reshape(-1)
    total_error = float(np.sqrt(np.sum((back.astype(np.float64) - x) ** 2)) / x.size)
    rng = np.random.default_rng(3)
    g = rng.standard_normal((16, 1024)).astype(np.float32)
    g_back = gguf.quants.dequantize(Q.quantize(g, WEIGHT_TYPES[name]), GT[name.upper()]).reshape(g.shape)
    rel_rmse = float(np.sqrt(np.mean((g_back - g) ** 2) / np.mean(g ** 2)))
    print(f"\n{name}: llama.cpp total error {total_error:.6f} (< {MAX_TOTAL_ERROR}); gaussian relative RMSE {rel_rmse:.4f}")
    assert total_error < MAX_TOTAL_ERROR


@pytest.mark.unit
@pytest.mark.parametrize("path", ["scalar"] + SIMD_PATHS)
@pytest.mark.parametrize("name", list(WEIGHT_TYPES))
def test_dot_product_error_within_llama_cpp_threshold(name: str, path: str) -> None:
    x, y = llama_test_vector(0.0), llama_test_vector(1.0)
    got = Q.matmul(Q.quantize(x[None], WEIGHT_TYPES[name]), WEIGHT_TYPES[name], x.size, y[None], path=path)[0, 0]
    error = abs(float(got) - float(np.dot(x.astype(np.float64), y))) / x.size
    print(f"\n{name} {path}: dot product error {error:.6f} (< {MAX_DOT_ERROR})")
    assert error < MAX_DOT_ERROR


# --- the matmul: scalar reference against numpy, SIMD against scalar ------------------------------

def _activation_values(x: np.ndarray, name: str) -> np.ndarray:
    """x rounded through the activation format the kernels use (Q8_0 or Q8_K)."""
    if BLOCK[name] == 32:
        return gguf.quants.dequantize(Q.quantize(x, Q.GGML_Q8_0), GT.Q8_0).reshape(x.shape)
    return Q.dequantize(Q.quantize(x, Q.GGML_Q8_K), Q.GGML_Q8_K, x.shape[1])


def _case(name: str, n_in: int, n_out: int, n_rows: int, seed: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n_out, n_in)).astype(np.float32)
    x = rng.standard_normal((n_rows, n_in)).astype(np.float32)
    return Q.quantize(w, WEIGHT_TYPES[name]), x


@pytest.mark.unit
@pytest.mark.parametrize("n_rows", [5, 130])  # 130: more than one 64-row tile
@pytest.mark.parametrize("name", list(WEIGHT_TYPES))
def test_matmul_equals_float64_dot_of_decoded_operands(name: str, n_rows: int) -> None:
    n_in = 256 * 3
    blocks, x = _case(name, n_in, 19, n_rows, seed=4)
    w_dec = gguf.quants.dequantize(blocks, GT[name.upper()]).reshape(19, n_in).astype(np.float64)
    want = _activation_values(x, name).astype(np.float64) @ w_dec.T
    for path in ["scalar"] + SIMD_PATHS:
        got = Q.matmul(blocks, WEIGHT_TYPES[name], n_in, x, path=path, n_threads=2)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max(), err_msg=path)


def _n_in_cases(name: str) -> List[int]:
    # K-quants: multiples of 256; Q8_0/Q4_0: also multiples of 32 that are not of 256
    return [256, 768] if BLOCK[name] == 256 else [32, 96, 800]


@pytest.mark.unit
@pytest.mark.skipif(not SIMD_PATHS, reason="this CPU runs no SIMD path")
@pytest.mark.parametrize("path", SIMD_PATHS)
@pytest.mark.parametrize("name", list(WEIGHT_TYPES))
def test_simd_matmul_equals_scalar(name: str, path: str) -> None:
    worst = 0.0
    for n_in in _n_in_cases(name):
        for n_rows in (1, 3, 8, 17):
            blocks, x = _case(name, n_in, 37, n_rows, seed=n_in + n_rows)
            ref = Q.matmul(blocks, WEIGHT_TYPES[name], n_in, x, path="scalar")
            got = Q.matmul(blocks, WEIGHT_TYPES[name], n_in, x, path=path)
            scale = np.abs(ref).max()
            np.testing.assert_allclose(got, ref, rtol=SIMD_RTOL, atol=SIMD_RTOL * scale)
            worst = max(worst, float(np.max(np.abs(got - ref) / (np.abs(ref) + scale * 1e-3))))
            # each output element is computed by one thread: the thread count changes nothing
            assert np.array_equal(Q.matmul(blocks, WEIGHT_TYPES[name], n_in, x, path=path, n_threads=2), got)
            # a row's result does not depend on how many rows share the weight pass
            last = Q.matmul(blocks, WEIGHT_TYPES[name], n_in, x[-1:], path=path)
            assert np.array_equal(last[0], got[-1])
    print(f"\n{name} {path} vs scalar: max relative error {worst:.2e}")


@pytest.mark.unit
@pytest.mark.skipif(not SIMD_PATHS, reason="this CPU runs no SIMD path")
@pytest.mark.parametrize("path", SIMD_PATHS)
@pytest.mark.parametrize("name", list(WEIGHT_TYPES))
def test_interleaved_matmul_equals_scalar_exactly(name: str, path: str) -> None:
    """Row counts that are multiples of 8 run the x8 kernels (quants/repack.h), which
    promise the scalar reference's result bit for bit, for any number of activation rows."""
    for n_in in _n_in_cases(name):
        for n_out in (8, 40):
            for n_rows in (1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 24, 33):
                blocks, x = _case(name, n_in, n_out, n_rows, seed=3 * n_in + n_out + n_rows)
                ref = Q.matmul(blocks, WEIGHT_TYPES[name], n_in, x, path="scalar")
                got = Q.matmul(blocks, WEIGHT_TYPES[name], n_in, x, path=path, n_threads=2)
                assert np.array_equal(got, ref), (name, n_in, n_out, n_rows)


@pytest.mark.unit
def test_cpu_path_environment_variable() -> None:
    code = ("import numpy as np; from nld_cpp import quants as Q; rng = np.random.default_rng(0); "
            "w = Q.quantize(rng.standard_normal((8, 64)), Q.GGML_Q4_0); x = rng.standard_normal((3, 64)); "
            "same = np.array_equal(Q.matmul(w, Q.GGML_Q4_0, 64, x), Q.matmul(w, Q.GGML_Q4_0, 64, x, path='scalar')); "
            "print(Q.default_cpu_path(), same)")
    env = dict(os.environ, NLD_CPU_PATH="scalar")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["scalar", "True"]
    for path in SIMD_PATHS:
        env["NLD_CPU_PATH"] = path
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        assert out.stdout.split() == [path, "True"]


@pytest.mark.unit
def test_argument_errors_are_clear() -> None:
    x = np.zeros((2, 64), np.float32)
    with pytest.raises(NldError, match="not a multiple of the Q4_K block size 256"):
        Q.quantize(x, Q.GGML_Q4_K)
    with pytest.raises(NldError, match="unknown ggml type 99"):
        Q.row_bytes(99, 64)
    with pytest.raises(NldError, match="not a block quant type"):
        Q.quantize(x, Q.GGML_F16)
    with pytest.raises(NldError, match="n_per_row 0"):
        Q.row_bytes(Q.GGML_Q8_0, 0)
    from nld_cpp._binding import ffi, lib
    out = np.empty(10, np.uint8)
    n = ffi.new("size_t*")
    assert lib.nld_quantize(Q.GGML_Q8_0, ffi.from_buffer("float[]", x), 2, 64, ffi.from_buffer(out), 10, n) \
        == lib.NLD_ERR_INVALID_ARGUMENT
    assert "dst_capacity 10 is smaller than the 136 bytes" in ffi.string(lib.nld_last_error()).decode()
    w = Q.quantize(x, Q.GGML_Q8_0)
    with pytest.raises(NldError, match="weight type 15"):
        Q.matmul(Q.quantize(np.zeros((1, 256)), Q.GGML_Q8_K), Q.GGML_Q8_K, 256, np.zeros((1, 256)))
    y = np.empty((2, 2), np.float32)
    assert lib.nld_matmul(Q.GGML_Q8_0, ffi.from_buffer(w), w.nbytes, 2, 64, ffi.from_buffer("float[]", x), 2,
                          ffi.from_buffer("float[]", y), y.size, 7, 1) == lib.NLD_ERR_INVALID_ARGUMENT
    assert "unknown cpu_path 7" in ffi.string(lib.nld_last_error()).decode()
    assert lib.nld_matmul(Q.GGML_Q8_0, ffi.from_buffer(w), w.nbytes - 1, 2, 64, ffi.from_buffer("float[]", x), 2,
                          ffi.from_buffer("float[]", y), y.size, 0, 1) == lib.NLD_ERR_INVALID_ARGUMENT
    assert "weight_bytes 135 is smaller than the 136 bytes" in ffi.string(lib.nld_last_error()).decode()


@pytest.mark.unit
@pytest.mark.parametrize("vnni", ["native", "emulated"])
def test_kernels_under_sanitizers(tmp_path: Path, vnni: str) -> None:
    """tests/cpp/quants_check.cpp: every format and path on inf/nan/huge/subnormal weights, under ASan+UBSan.
    "emulated" builds the AVX-512 VNNI kernels with an exact AVX2 stand-in for vpdpbusd, so their logic is
    checked on CPUs without AVX-512 too (the native build runs them where the CPU has it)."""
    sources = [ROOT / "tests/cpp/quants_check.cpp"] + [ROOT / "quants" / f for f in
                                                      ("quants.cpp", "kquants.cpp", "dot.cpp", "dot_avx2.cpp",
                                                       "gemm_avx2.cpp", "gemm_vnni.cpp", "quantize_avx2.cpp",
                                                       "repack.cpp")]
    defines = ["-DNLD_VNNI_EMULATED"] if vnni == "emulated" else []
    stdout = run_sanitized(tmp_path, "quants_check", sources, defines)
    paths = {int(p) for p in stdout.split("paths")[1].split("\n")[0].split()}
    expected = {name for name in ("avx2", "avx512_vnni") if name in SIMD_PATHS}
    if vnni == "emulated" and "avx2" in SIMD_PATHS:
        expected.add("avx512_vnni")
    assert paths == {Q.CPU_PATHS[name] for name in expected | {"scalar"}}, stdout
