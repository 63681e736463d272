// ops.h: the CPU ops of one forward pass (the readable reference every faster
// backend is tested against). Activations are row-major f32: a tensor
// "(n, d)" is n rows of d floats. Weights stay in their file type and are
// used in place through weight_matrix.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/cpu/threadpool.h"
#include "kv_cache.h"  // kv_type
#include "gguf.h"
#include "quants/dot.h"

namespace nld {

// A weight matrix as stored in GGUF: n_out rows of n_in elements (torch
// Linear.weight [out, in]; GGUF ne = [in, out]).
struct weight_matrix {
    ggml_type type = ggml_type::f32;
    int64_t n_in = 0;
    int64_t n_out = 0;
    uint64_t row_bytes = 0;
    const uint8_t* data = nullptr;
    // The same rows in the x8 layout (quants/repack.h), when the matrix was
    // repacked for a path with x8 kernels; null otherwise.
    const uint8_t* x8 = nullptr;
};

// Whether w can take the x8 layout: a quant type that has one and a row
// count that is a multiple of 8.
bool can_repack_x8(const weight_matrix& w);

// Decode row r of w into dst (n_in floats).
void weight_row_to_f32(const weight_matrix& w, int64_t r, float* dst);

// y (n, n_out) = x (n, n_in) @ w^T. Parallel over output columns. F32/F16/
// BF16 weights: f32 dot products of the decoded row with each x row.
// Quantized weights go through matmul_quantized on default_cpu_path().
void matmul(threadpool& pool, const weight_matrix& w, const float* x, float* y, int64_t n);

// ys[i] (n, ws[i]->n_out) = x (n, n_in) @ ws[i]^T for count matrices that read
// the same x (q/k/v, gate/up). On the x8 path, when all of them are x8 and
// take the same activation rows, x is quantized once and one parallel_for
// covers the groups of all of them, split by weight bytes; otherwise one
// matmul each. Each output is computed by the same kernel either way, so the
// results are those of separate matmul calls, bit for bit.
void matmul_same_input(threadpool& pool, const weight_matrix* const* ws, float* const* ys, int count, const float* x,
                       int64_t n);

// Q8_0 / Q4_0 / Q4_K / Q6_K weights used in place: each x row is quantized
// once (Q8_0 activations for Q8_0/Q4_0, Q8_K for the K-quants), then each
// weight row (or group of 8 rows, with w.x8 on a path with x8 kernels) is
// dotted with every activation row while it is in cache. One path for any n
// (decode, blocks, prefill); y elements are computed by one thread each, so
// results do not depend on the thread count, and every path's results equal
// the scalar reference (the plain AVX2 Q8_0/Q4_0 kernels within 1e-4).
bool is_block_quantized(ggml_type t);
void matmul_quantized(threadpool& pool, const weight_matrix& w, const float* x, float* y, int64_t n, cpu_path path);

// out (n, dim) = x / sqrt(mean(x^2) + eps) * weight, variance in f32 (the
// squares summed in 16 partial sums, then a fixed tree: see ops.cpp).
void rmsnorm(const float* x, const float* weight, float* out, int64_t n, int64_t dim, float eps);

// The rotary angles of n rows, angle (t, j) = positions[t] * inv_freq[j] in
// f32 (as transformers), j < half = head_dim / 2; cos and sin, each (n,
// half), scaled by attn_factor. The same for every layer of a forward pass.
struct rope_angles {
    std::vector<float> cos, sin;
};
void compute_rope_angles(const int32_t* positions, int64_t n, const float* inv_freq, int64_t half, float attn_factor,
                         rope_angles& out);

// Rotary embedding on adjacent pairs (2j, 2j+1) of every head (the GGUF q/k
// layout) by the angles of each row. x: (n, n_heads * head_dim).
void rope_adjacent(float* x, int64_t n, int64_t n_heads, int64_t head_dim, const rope_angles& angles);

// Attention of n new rows. Row t sees the n_cached cache keys, the new keys
// [0, see_prefix[t]) and the new keys [group_lo[t], group_hi[t]) (disjoint
// from the prefix). GQA: q head h reads kv head h / (n_head / n_head_kv).
// q: (n, n_head*hd); the cache: one layer of a kv_cache (its types'
// layouts, kv head h's keys at h * key_head_bytes, values at
// h * value_head_bytes); new_k, new_v: (n, n_head_kv*hd), already rounded
// through the cache's types (kv_cache::round_trip) where they differ from
// f32; out: (n, n_head*hd).
struct attention_rows {
    const int32_t* see_prefix;
    const int32_t* group_lo;
    const int32_t* group_hi;
};
struct cache_layer {
    kv_type type_k, type_v;
    const uint8_t* keys;
    int64_t key_head_bytes;
    const uint8_t* values;
    int64_t value_head_bytes;
    int64_t value_row_bytes;
    int64_t n_cached;
};
void attention(threadpool& pool, const float* q, const cache_layer& cache, const float* new_k, const float* new_v,
               const attention_rows& rows, float* out, int64_t n, int64_t n_head, int64_t n_head_kv, int64_t head_dim,
               float scale);

// gate (n, d) <- silu(gate) * up, the elements split across the pool.
void swiglu(threadpool& pool, float* gate, const float* up, int64_t count);

}  // namespace nld
