// ops.cpp: the CPU ops (see ops.h): scalar reference ops, and the matmul of
// quantized weights over the dot-product kernels of quants/dot.h. Each
// output element is computed by exactly one thread in a fixed order, so
// results do not depend on the thread count.
#include "backend/cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "quants/quants.h"

namespace nld {

void weight_row_to_f32(const weight_matrix& w, int64_t r, float* dst) {
    const uint8_t* row = w.data + (uint64_t)r * w.row_bytes;
    switch (w.type) {
    case ggml_type::f32: std::memcpy(dst, row, (size_t)w.n_in * sizeof(float)); break;
    case ggml_type::f16: {
        const fp16_bits* h = reinterpret_cast<const fp16_bits*>(row);
        for (int64_t i = 0; i < w.n_in; ++i) dst[i] = fp16_to_f32(h[i]);
        break;
    }
    case ggml_type::bf16: {
        const bf16_bits* b = reinterpret_cast<const bf16_bits*>(row);
        for (int64_t i = 0; i < w.n_in; ++i) dst[i] = bf16_to_f32(b[i]);
        break;
    }
    case ggml_type::q8_0: dequantize_row_q8_0(reinterpret_cast<const block_q8_0*>(row), dst, w.n_in); break;
    case ggml_type::q4_0: dequantize_row_q4_0(reinterpret_cast<const block_q4_0*>(row), dst, w.n_in); break;
    case ggml_type::q4_k: dequantize_row_q4_k(reinterpret_cast<const block_q4_k*>(row), dst, w.n_in); break;
    case ggml_type::q6_k: dequantize_row_q6_k(reinterpret_cast<const block_q6_k*>(row), dst, w.n_in); break;
    default: std::fill(dst, dst + w.n_in, 0.0f); break;  // rejected at load; never reached
    }
}

static float dot_f32(const float* a, const float* b, int64_t n) {
    // Four partial sums: lets the compiler vectorise while the order stays fixed.
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; ++i) s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

bool is_block_quantized(ggml_type t) {
    return t == ggml_type::q8_0 || t == ggml_type::q4_0 || t == ggml_type::q4_k || t == ggml_type::q6_k;
}

void matmul_quantized(threadpool& pool, const weight_matrix& w, const float* x, float* y, int64_t n,
                      cpu_path path) {
    const dot_kernels& kernels = kernels_for(path);
    const bool k_quant = w.type == ggml_type::q4_k || w.type == ggml_type::q6_k;
    const dot_rows_fn dot = w.type == ggml_type::q8_0   ? kernels.q8_0
                           : w.type == ggml_type::q4_0 ? kernels.q4_0
                           : w.type == ggml_type::q4_k ? kernels.q4_k
                                                       : kernels.q6_k;
    const size_t act_row_bytes = k_quant ? (size_t)(w.n_in / QK_K) * sizeof(block_q8_k)
                                         : (size_t)(w.n_in / QK8_0) * sizeof(block_q8_0);
    // (n, act_row_bytes): the activations, quantized once per call. Blocks
    // hold floats, so the buffer is float-aligned.
    thread_local std::vector<float> act_storage;
    act_storage.resize((n * act_row_bytes + sizeof(float) - 1) / sizeof(float));
    uint8_t* act = reinterpret_cast<uint8_t*>(act_storage.data());
    pool.parallel_for(n, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
            if (k_quant)
                quantize_row_q8_k(x + t * w.n_in, reinterpret_cast<block_q8_k*>(act + t * act_row_bytes), w.n_in);
            else
                quantize_row_q8_0(x + t * w.n_in, reinterpret_cast<block_q8_0*>(act + t * act_row_bytes), w.n_in);
        }
    });
    // Each weight row meets a tile of activation rows while it is in cache;
    // tiles of kRowTile rows (about 200 KB of activations for n_in 3072) stay
    // in L2 during prefill. Every y element is still one dot product.
    constexpr int64_t kRowTile = 64;
    pool.parallel_for(w.n_out, [&](int64_t begin, int64_t end) {
        for (int64_t t0 = 0; t0 < n; t0 += kRowTile)
            for (int64_t o = begin; o < end; ++o)
                dot(w.n_in, w.data + (uint64_t)o * w.row_bytes, act + t0 * act_row_bytes, act_row_bytes,
                    std::min(kRowTile, n - t0), y + t0 * w.n_out + o, w.n_out);
    });
}

void matmul(threadpool& pool, const weight_matrix& w, const float* x, float* y, int64_t n) {
    if (is_block_quantized(w.type)) {
        matmul_quantized(pool, w, x, y, n, default_cpu_path());
        return;
    }
    pool.parallel_for(w.n_out, [&](int64_t begin, int64_t end) {
        std::vector<float> row(w.type == ggml_type::f32 ? 0 : (size_t)w.n_in);
        for (int64_t o = begin; o < end; ++o) {
            const float* wr;
            if (w.type == ggml_type::f32) {
                wr = reinterpret_cast<const float*>(w.data + (uint64_t)o * w.row_bytes);
            } else {
                weight_row_to_f32(w, o, row.data());
                wr = row.data();
            }
            for (int64_t t = 0; t < n; ++t) y[t * w.n_out + o] = dot_f32(wr, x + t * w.n_in, w.n_in);
        }
    });
}

void rmsnorm(const float* x, const float* weight, float* out, int64_t n, int64_t dim, float eps) {
    for (int64_t t = 0; t < n; ++t) {
        const float* xr = x + t * dim;
        float ss = 0.0f;
        for (int64_t i = 0; i < dim; ++i) ss += xr[i] * xr[i];
        const float inv = 1.0f / std::sqrt(ss / (float)dim + eps);
        for (int64_t i = 0; i < dim; ++i) out[t * dim + i] = weight[i] * (xr[i] * inv);
    }
}

void rope_adjacent(float* x, int64_t n, int64_t n_heads, int64_t head_dim, const int32_t* positions,
                   const float* inv_freq, float attn_factor) {
    const int64_t half = head_dim / 2;
    std::vector<float> cos_t(half), sin_t(half);
    for (int64_t t = 0; t < n; ++t) {
        for (int64_t j = 0; j < half; ++j) {
            const float angle = (float)positions[t] * inv_freq[j];  // f32, as transformers
            cos_t[j] = std::cos(angle) * attn_factor;
            sin_t[j] = std::sin(angle) * attn_factor;
        }
        for (int64_t h = 0; h < n_heads; ++h) {
            float* v = x + t * n_heads * head_dim + h * head_dim;
            for (int64_t j = 0; j < half; ++j) {
                const float a = v[2 * j], b = v[2 * j + 1];
                v[2 * j] = a * cos_t[j] - b * sin_t[j];
                v[2 * j + 1] = b * cos_t[j] + a * sin_t[j];
            }
        }
    }
}

void attention(threadpool& pool, const float* q, const float* cache_k, const float* cache_v, int64_t n_cached,
               const float* new_k, const float* new_v, const attention_rows& rows, float* out, int64_t n,
               int64_t n_head, int64_t n_head_kv, int64_t head_dim, float scale) {
    const int64_t group = n_head / n_head_kv;
    const int64_t q_stride = n_head * head_dim, kv_stride = n_head_kv * head_dim;
    pool.parallel_for(n * n_head, [&](int64_t begin, int64_t end) {
        std::vector<float> scores;
        std::vector<const float*> values;  // the value row of each visible key
        for (int64_t job = begin; job < end; ++job) {
            const int64_t t = job / n_head, h = job % n_head, kvh = h / group;
            const float* qv = q + t * q_stride + h * head_dim;
            scores.clear();
            values.clear();
            auto visit = [&](const float* keys, const float* vals, int64_t lo, int64_t hi) {
                for (int64_t s = lo; s < hi; ++s) {
                    scores.push_back(dot_f32(qv, keys + s * kv_stride + kvh * head_dim, head_dim) * scale);
                    values.push_back(vals + s * kv_stride + kvh * head_dim);
                }
            };
            visit(cache_k, cache_v, 0, n_cached);
            visit(new_k, new_v, 0, rows.see_prefix[t]);
            visit(new_k, new_v, rows.group_lo[t], rows.group_hi[t]);
            float max_score = -INFINITY;
            for (float sc : scores) max_score = std::max(max_score, sc);
            float sum = 0.0f;
            for (float& sc : scores) {
                sc = std::exp(sc - max_score);
                sum += sc;
            }
            float* o = out + t * q_stride + h * head_dim;
            std::fill(o, o + head_dim, 0.0f);
            for (size_t s = 0; s < scores.size(); ++s) {
                const float p = scores[s] / sum;
                for (int64_t d = 0; d < head_dim; ++d) o[d] += p * values[s][d];
            }
        }
    });
}

void swiglu(float* gate, const float* up, int64_t count) {
    for (int64_t i = 0; i < count; ++i) {
        const float g = gate[i];
        gate[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
}

}  // namespace nld
