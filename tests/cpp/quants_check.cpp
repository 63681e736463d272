// quants_check.cpp: the quant formats and every CPU dot-product path on
// ordinary and hostile inputs (inf, nan, huge, subnormal), built with
// AddressSanitizer + UndefinedBehaviorSanitizer by tests/test_quants.py
// (also with -DNLD_VNNI_EMULATED, where the avx512_vnni path runs on any
// AVX2 CPU: see quants/gemm_vnni.cpp).
// Exit 0: no sanitizer report and every path equals the scalar reference
// within 1e-4 relative where the reference is finite (the x8 kernels of
// repack.h: bit for bit, or both NaN; the activation quantizers: byte for
// byte); 1: a mismatch (printed).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <vector>

#include "quants/dot.h"
#include "quants/quants.h"
#include "quants/repack.h"

using namespace nld;

namespace {

struct format {
    const char* name;
    int block, block_bytes;
    bool k_quant;
    void (*encode)(const float*, void*, int64_t);
    void (*decode)(const void*, float*, int64_t);
    dot_rows_fn dot_kernels::*dot;
    int32_t ggml_type;
    gemm_x8_fn x8_kernels::*gemm;
};

template <typename B, void (*F)(const float*, B*, int64_t)>
void enc(const float* x, void* out, int64_t n) { F(x, static_cast<B*>(out), n); }
template <typename B, void (*F)(const B*, float*, int64_t)>
void dec(const void* in, float* y, int64_t n) { F(static_cast<const B*>(in), y, n); }

const format kFormats[] = {
    {"Q8_0", 32, 34, false, enc<block_q8_0, quantize_row_q8_0>, dec<block_q8_0, dequantize_row_q8_0>, &dot_kernels::q8_0,
     8, &x8_kernels::q8_0},
    {"Q4_0", 32, 18, false, enc<block_q4_0, quantize_row_q4_0>, dec<block_q4_0, dequantize_row_q4_0>, &dot_kernels::q4_0,
     2, &x8_kernels::q4_0},
    {"Q4_K", 256, 144, true, enc<block_q4_k, quantize_row_q4_k>, dec<block_q4_k, dequantize_row_q4_k>, &dot_kernels::q4_k,
     12, &x8_kernels::q4_k},
    {"Q6_K", 256, 210, true, enc<block_q6_k, quantize_row_q6_k>, dec<block_q6_k, dequantize_row_q6_k>, &dot_kernels::q6_k,
     14, &x8_kernels::q6_k},
};

uint64_t g_state = 0x9e3779b97f4a7c15ull;
float uniform() {  // [-1, 1)
    g_state = g_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((g_state >> 40) * (1.0 / (1ull << 23))) - 1.0f;
}

// Aligned byte storage for blocks (they hold f16 / f32 fields).
struct blocks {
    std::vector<float> storage;
    explicit blocks(size_t bytes) : storage((bytes + 3) / 4) {}
    uint8_t* data() { return reinterpret_cast<uint8_t*>(storage.data()); }
};

// Group kernels against the scalar reference: n_out = 16 (two groups),
// every row count 1..n_rows. Returns the number of mismatches.
int check_x8(const format& f, const dot_kernels& k, const std::vector<float>& w, const std::vector<float>& x,
             int n, int n_rows, int hostile) {
    const int n_out = 16;
    const size_t w_row = (size_t)(n / f.block) * f.block_bytes;
    blocks wq(w_row * n_out);
    std::vector<float> row((size_t)n);
    for (int o = 0; o < n_out; ++o) {  // 16 rows out of w's values, each shifted by o
        for (int i = 0; i < n; ++i) row[(size_t)i] = w[((size_t)o * n + (size_t)i * 7 + (size_t)o) % w.size()];
        f.encode(row.data(), wq.data() + o * w_row, n);
    }
    blocks packed(x8_bytes(f.ggml_type, n_out, n));
    repack_x8(f.ggml_type, wq.data(), w_row, n, 0, n_out / kGroupRows, packed.data());
    const size_t x_row = f.k_quant ? (size_t)(n / QK_K) * sizeof(block_q8_k) : (size_t)(n / QK8_0) * sizeof(block_q8_0);
    const size_t xs_row = f.k_quant ? x_row : (size_t)(n / QK8_0) * sizeof(block_q8_0s);
    blocks xq(x_row * n_rows), xs(xs_row * n_rows);
    for (int r = 0; r < n_rows; ++r) {
        if (f.k_quant) {
            quantize_row_q8_k(&x[(size_t)r * n], reinterpret_cast<block_q8_k*>(xq.data() + r * x_row), n);
            quantize_row_q8_k(&x[(size_t)r * n], reinterpret_cast<block_q8_k*>(xs.data() + r * xs_row), n);
        } else {
            quantize_row_q8_0(&x[(size_t)r * n], reinterpret_cast<block_q8_0*>(xq.data() + r * x_row), n);
            quantize_row_q8_0s(&x[(size_t)r * n], reinterpret_cast<block_q8_0s*>(xs.data() + r * xs_row), n);
        }
    }
    int failures = 0;
    for (int rows = 1; rows <= n_rows; ++rows) {
        std::vector<float> ref((size_t)n_out * rows), y((size_t)n_out * rows);
        for (int o = 0; o < n_out; ++o)
            (kernels_for(cpu_path::scalar).*f.dot)(n, wq.data() + o * w_row, xq.data(), x_row, rows, &ref[o], n_out);
        const size_t group_bytes = x8_bytes(f.ggml_type, kGroupRows, n);
        for (int g = 0; g < n_out / kGroupRows; ++g)
            (k.x8->*f.gemm)(n, packed.data() + g * group_bytes, xs.data(), xs_row, rows, &y[(size_t)g * kGroupRows],
                            n_out);
        std::vector<float> y_pairs((size_t)n_out * rows);
        if (k.x8_pairs)  // both groups in one call
            (k.x8_pairs->*f.gemm)(n, packed.data(), xs.data(), xs_row, rows, y_pairs.data(), n_out);
        for (size_t i = 0; i < y.size(); ++i) {
            const float got[2] = {y[i], y_pairs[i]};
            for (int pairs = 0; pairs < (k.x8_pairs ? 2 : 1); ++pairs) {
                const bool same = std::isnan(ref[i]) ? std::isnan(got[pairs]) : got[pairs] == ref[i];
                if (!same) {
                    std::printf("%s x8%s, %d rows, hostile %d: y[%zu] = %g, scalar %g\n", f.name, pairs ? " pairs" : "",
                                rows, hostile, i, (double)got[pairs], (double)ref[i]);
                    ++failures;
                }
            }
        }
    }
    return failures;
}

// The path's activation quantizers against the reference, byte for byte, on
// rows x (n values each).
int check_quantizers(cpu_path p, const std::vector<float>& x, int n, int hostile) {
    const activation_quantizers& q = *kernels_for(p).quantize;
    const activation_quantizers& ref = *kernels_for(cpu_path::scalar).quantize;
    int failures = 0;
    for (size_t r = 0; r + (size_t)n <= x.size(); r += (size_t)n) {
        std::vector<block_q8_0s> a((size_t)n / QK8_0), b((size_t)n / QK8_0);
        q.q8_0s(&x[r], a.data(), n);
        ref.q8_0s(&x[r], b.data(), n);
        std::vector<block_q8_k> c((size_t)n / QK_K), d((size_t)n / QK_K);
        q.q8_k(&x[r], c.data(), n);
        ref.q8_k(&x[r], d.data(), n);
        // Blocks compared field by field (the scales as bits: NaN or -0 must match too).
        for (size_t i = 0; i < a.size(); ++i)
            if (std::memcmp(&a[i], &b[i], sizeof(block_q8_0s)) != 0) {
                std::printf("Q8_0s quantizer, path %d, hostile %d: row %zu block %zu differs\n", (int)p, hostile,
                            r / (size_t)n, i);
                ++failures;
            }
        for (size_t i = 0; i < c.size(); ++i)
            if (std::memcmp(&c[i], &d[i], sizeof(block_q8_k)) != 0) {
                std::printf("Q8_K quantizer, path %d, hostile %d: row %zu block %zu differs\n", (int)p, hostile,
                            r / (size_t)n, i);
                ++failures;
            }
    }
    return failures;
}

}  // namespace

int main() {
    const int n = 768, n_rows = 11, n_out = 7;  // 11 rows: passes of 8, 4 and a remainder
    const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
    const float specials[] = {0.0f, -0.0f, inf, -inf, nan, 3.0e38f, -3.0e38f, 1.0e-40f, 65504.0f, 65520.0f};
    int failures = 0;
    std::vector<cpu_path> paths = {cpu_path::scalar};
    for (cpu_path p : {cpu_path::avx2, cpu_path::avx512_vnni})
        if (cpu_path_supported(p)) paths.push_back(p);
    for (int hostile = 0; hostile < 2; ++hostile) {
        std::vector<float> w((size_t)n_out * n), x((size_t)n_rows * n);
        for (float& v : w) v = uniform() * 3.0f;
        for (float& v : x) v = uniform();
        if (hostile) {
            for (size_t i = 0; i < w.size(); i += 37) w[i] = specials[(i / 37) % 10];
            // Activations: the specials, and rows whose scale is exactly 1 (largest
            // value 127), so that halves (2.5, -0.5, 126.5) round away from zero.
            for (size_t i = 0; i < x.size(); i += 41) x[i] = specials[(i / 41) % 10];
            for (int i = 0; i < n; ++i) x[(size_t)n + i] = i == 0 ? 127.0f : (float)(i % 254 - 127) + 0.5f;
        }
        for (cpu_path p : paths) failures += check_quantizers(p, x, n, hostile);
        for (const format& f : kFormats) {
            const size_t w_row = (size_t)(n / f.block) * f.block_bytes;
            const size_t x_row = f.k_quant ? (size_t)(n / QK_K) * sizeof(block_q8_k) : (size_t)(n / QK8_0) * sizeof(block_q8_0);
            blocks wq(w_row * n_out), xq(x_row * n_rows);
            std::vector<float> back((size_t)n_out * n);
            for (int o = 0; o < n_out; ++o) {
                f.encode(&w[(size_t)o * n], wq.data() + o * w_row, n);
                f.decode(wq.data() + o * w_row, &back[(size_t)o * n], n);
            }
            for (int r = 0; r < n_rows; ++r) {
                if (f.k_quant)
                    quantize_row_q8_k(&x[(size_t)r * n], reinterpret_cast<block_q8_k*>(xq.data() + r * x_row), n);
                else
                    quantize_row_q8_0(&x[(size_t)r * n], reinterpret_cast<block_q8_0*>(xq.data() + r * x_row), n);
            }
            std::vector<float> ref((size_t)n_out * n_rows);
            for (cpu_path p : paths)
                if (kernels_for(p).x8) failures += check_x8(f, kernels_for(p), w, x, n, n_rows, hostile);
            for (cpu_path p : paths) {
                std::vector<float> y((size_t)n_out * n_rows);
                const dot_rows_fn dot = kernels_for(p).*f.dot;
                for (int o = 0; o < n_out; ++o) dot(n, wq.data() + o * w_row, xq.data(), x_row, n_rows, &y[o], n_out);
                if (p == cpu_path::scalar) {
                    ref = y;
                    continue;
                }
                for (size_t i = 0; i < y.size(); ++i) {
                    if (!std::isfinite(ref[i])) continue;
                    if (std::fabs(y[i] - ref[i]) > 1e-4f * (std::fabs(ref[i]) + 1.0f)) {
                        std::printf("%s path %d hostile %d: y[%zu] = %g, scalar %g\n", f.name, (int)p, hostile, i,
                                    (double)y[i], (double)ref[i]);
                        ++failures;
                    }
                }
            }
        }
    }
    std::printf("paths");
    for (cpu_path p : paths) std::printf(" %d", (int)p);
    std::printf("\n%s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
