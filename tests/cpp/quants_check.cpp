// quants_check.cpp: the quant formats and every CPU dot-product path on
// ordinary and hostile inputs (inf, nan, huge, subnormal), built with
// AddressSanitizer + UndefinedBehaviorSanitizer by tests/test_quants.py.
// Exit 0: no sanitizer report and every path equals the scalar reference
// within 1e-4 relative where the reference is finite; 1: a mismatch (printed).
#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

#include "quants/dot.h"
#include "quants/quants.h"

using namespace nld;

namespace {

struct format {
    const char* name;
    int block, block_bytes;
    bool k_quant;
    void (*encode)(const float*, void*, int64_t);
    void (*decode)(const void*, float*, int64_t);
    dot_rows_fn dot_kernels::*dot;
};

template <typename B, void (*F)(const float*, B*, int64_t)>
void enc(const float* x, void* out, int64_t n) { F(x, static_cast<B*>(out), n); }
template <typename B, void (*F)(const B*, float*, int64_t)>
void dec(const void* in, float* y, int64_t n) { F(static_cast<const B*>(in), y, n); }

const format kFormats[] = {
    {"Q8_0", 32, 34, false, enc<block_q8_0, quantize_row_q8_0>, dec<block_q8_0, dequantize_row_q8_0>, &dot_kernels::q8_0},
    {"Q4_0", 32, 18, false, enc<block_q4_0, quantize_row_q4_0>, dec<block_q4_0, dequantize_row_q4_0>, &dot_kernels::q4_0},
    {"Q4_K", 256, 144, true, enc<block_q4_k, quantize_row_q4_k>, dec<block_q4_k, dequantize_row_q4_k>, &dot_kernels::q4_k},
    {"Q6_K", 256, 210, true, enc<block_q6_k, quantize_row_q6_k>, dec<block_q6_k, dequantize_row_q6_k>, &dot_kernels::q6_k},
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

}  // namespace

int main() {
    const int n = 768, n_rows = 5, n_out = 7;
    const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
    const float specials[] = {0.0f, -0.0f, inf, -inf, nan, 3.0e38f, -3.0e38f, 1.0e-40f, 65504.0f, 65520.0f};
    int failures = 0;
    std::vector<cpu_path> paths = {cpu_path::scalar};
    if (cpu_path_supported(cpu_path::avx2)) paths.push_back(cpu_path::avx2);
    for (int hostile = 0; hostile < 2; ++hostile) {
        std::vector<float> w((size_t)n_out * n), x((size_t)n_rows * n);
        for (float& v : w) v = uniform() * 3.0f;
        for (float& v : x) v = uniform();
        if (hostile)
            for (size_t i = 0; i < w.size(); i += 37) w[i] = specials[(i / 37) % 10];
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
    std::printf("%s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
