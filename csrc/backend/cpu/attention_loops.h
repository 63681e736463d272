// attention_loops.h: the loops of attention for the query heads that share
// one KV head (GQA), over f32, f16 and q8_0 keys and values, each key tile
// and value row loaded once for all of them. Every result has the bits of
// ops.cpp's reference loops (a score summed over the dimensions in order, an
// axpy per value row in order, softmax_f32 per head); only the register
// blocking differs, so a path's choice of kernels never changes an output.
#pragma once

#include <cstdint>

#include "kv_cache.h"    // kv_type, the tile and row layouts, key_at_* / value_at_*
#include "quants/dot.h"  // NLD_HAVE_AVX2_PATH

namespace nld {

// Keys and values are read as bytes in kv_cache's layouts of their type
// (f32 also for the new rows of a forward, kept as f32 tiles and rows): the
// value read is key_at_<type> / value_at_<type> (kv_cache.h), so a key or
// value gives the same bits from every type's loop once converted.
using scores_fn = void (*)(const float* q, int64_t q_step, int n_heads, const uint8_t* keys, int64_t begin,
                           int64_t end, int64_t n, float* out, int64_t out_step);
using weighted_fn = void (*)(const float* p, int64_t p_step, int n_heads, const uint8_t* v, int64_t v_stride,
                             int64_t rows, float* out, int64_t out_step, int64_t n);

struct attention_loops {
    // out[j * out_step + s - begin] = sum over d < n, in order, of
    // q[j * q_step + d] * key (s, d), each a fused multiply-add (one
    // rounding: sum = fma(q, key, sum), from 0), for heads
    // j < n_heads and keys begin <= s < end; keys: one head's tiles.
    scores_fn scores_f32, scores_f16, scores_q8_0;
    // out + j * out_step += sum over s < rows, in order, of
    // p[j * p_step + s] * value row s (at v + s * v_stride bytes), n values,
    // for heads j < n_heads: each step out = fma(p, value, out).
    weighted_fn weighted_f32, weighted_f16, weighted_q8_0;
    // s[0..n) <- softmax(scale * s) in place (ops.cpp's softmax_f32 order).
    void (*softmax)(float* s, int64_t n, float scale);

    scores_fn scores(kv_type t) const {
        return t == kv_type::f16 ? scores_f16 : t == kv_type::q8_0 ? scores_q8_0 : scores_f32;
    }
    weighted_fn weighted_sum(kv_type t) const {
        return t == kv_type::f16 ? weighted_f16 : t == kv_type::q8_0 ? weighted_q8_0 : weighted_f32;
    }
};

#ifdef NLD_HAVE_AVX2_PATH
// Heads taken two at a time on AVX2's 16 registers, four at a time with
// AVX-512VL's 32 (still 256-bit operations).
extern const attention_loops avx2_attention_loops;
extern const attention_loops avx512_attention_loops;
#endif

}  // namespace nld
