// dot.h: the dot-product kernels of quantized weight rows with 8-bit
// activation rows, one table per CPU code path, and which path runs.
// The scalar path is quants.h's reference; every other path is tested
// against it (tests/test_quants.py). x86-64 builds carry the AVX2 path
// compiled with target attributes, so one binary runs on any x86-64; other
// architectures (ARM) build the scalar path only. The AVX-512 VNNI path is
// the AVX2 one with its x8 kernels summing products by vpdpbusd.
#pragma once

#include <cstddef>
#include <cstdint>

namespace nld {

// Values are nld_cpu_path of nld.h.
enum class cpu_path : int32_t { scalar = 1, avx2 = 2, avx512_vnni = 3 };

// One weight row (n elements) against n_rows activation rows:
// y[r * y_stride] = dot(w, x + r * x_stride bytes). A kernel may work on
// several rows at once (each weight block is unpacked once for all of them),
// but computes every row with the same arithmetic as a single row, so a
// row's result does not depend on n_rows.
using dot_rows_fn = void (*)(int64_t n, const void* w, const void* x, size_t x_stride, int64_t n_rows, float* y,
                             int64_t y_stride);

// One group of 8 weight rows in the x8 layout (repack.h) against n_rows
// activation rows: y[r * y_stride + j] = dot(weight row j, x row r), j < 8.
// Activation rows (x_stride bytes apart) are block_q8_0s rows for Q8_0 and
// Q4_0 weights, block_q8_k rows for the K-quants. Results equal the scalar
// reference dot products exactly.
using gemm_x8_fn = void (*)(int64_t n, const void* w_group, const void* x, size_t x_stride, int64_t n_rows, float* y,
                            int64_t y_stride);

struct x8_kernels {
    gemm_x8_fn q8_0;
    gemm_x8_fn q4_0;
    gemm_x8_fn q4_k;
    gemm_x8_fn q6_k;
};

struct block_q8_0s;  // repack.h
struct block_q8_k;   // quants.h

// The activation quantizers of a path, with the reference's results
// (quantize_row_q8_0s, quantize_row_q8_k) byte for byte.
struct activation_quantizers {
    void (*q8_0s)(const float* src, block_q8_0s* dst, int64_t n);
    void (*q8_k)(const float* src, block_q8_k* dst, int64_t n);
};

struct dot_kernels {
    dot_rows_fn q8_0;  // Q8_0 weights . Q8_0 activations
    dot_rows_fn q4_0;  // Q4_0 weights . Q8_0 activations
    dot_rows_fn q4_k;  // Q4_K weights . Q8_K activations
    dot_rows_fn q6_k;  // Q6_K weights . Q8_K activations
    const x8_kernels* x8;  // null: this path uses weights as stored
    // Kernels for two adjacent groups at once (w_group then the next group;
    // y[r * y_stride + j], j < 16, 8..15 the second group's rows), the same
    // results as x8 on each group; null where the path has none.
    const x8_kernels* x8_pairs;
    const activation_quantizers* quantize;
};

bool cpu_path_supported(cpu_path p);
// NLD_CPU_PATH (scalar | avx2 | avx512_vnni), read once, when it names a
// path this CPU runs; otherwise the fastest supported path.
cpu_path default_cpu_path();
// The kernels of p; p must be supported.
const dot_kernels& kernels_for(cpu_path p);
// Whether p runs AVX2 code (the f32 loops of the CPU ops follow it).
inline bool uses_avx2(cpu_path p) { return p == cpu_path::avx2 || p == cpu_path::avx512_vnni; }

// NLD_SCALAR_ONLY (CMake option) builds only the reference path, as on ARM.
#if (defined(__x86_64__) || defined(_M_X64)) && !defined(NLD_SCALAR_ONLY)
#define NLD_HAVE_AVX2_PATH 1
extern const dot_kernels avx2_kernels;     // dot_avx2.cpp
extern const x8_kernels avx2_x8_kernels;  // gemm_avx2.cpp
extern const x8_kernels avx512_vnni_x8_kernels;           // gemm_vnni.cpp
extern const x8_kernels* const avx512_vnni_pair_kernels;  // gemm_vnni.cpp (null in emulated test builds)
extern const activation_quantizers avx2_quantizers;       // quantize_avx2.cpp
#endif

}  // namespace nld
