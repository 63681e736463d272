// attention_loops.h: the f32 loops of attention for the query heads that
// share one KV head (GQA), each key tile and value row loaded once for all
// of them. Every result has the bits of ops.cpp's reference loops (a score
// summed over the dimensions in order, axpy_f32 per value row in order,
// softmax_f32 per head); only the register blocking differs, so a path's
// choice of kernels never changes an output.
#pragma once

#include <cstdint>

#include "kv_cache.h"    // kKeyTile, key_tile_offset
#include "quants/dot.h"  // NLD_HAVE_AVX2_PATH

namespace nld {

struct attention_loops {
    // out[j * out_step + s - begin] = sum over d < n, in order, of
    // q[j * q_step + d] * key (s, d), each a fused multiply-add (one
    // rounding: sum = fma(q, key, sum), from 0), for heads
    // j < n_heads and keys begin <= s < end; keys: one head's tiled keys
    // (kv_cache's layout: key (s, d) at key_tile_offset(s, d, n)).
    void (*scores)(const float* q, int64_t q_step, int n_heads, const float* keys, int64_t begin, int64_t end,
                   int64_t n, float* out, int64_t out_step);
    // out + j * out_step += sum over s < rows, in order, of
    // p[j * p_step + s] * (v + s * v_stride), n values, for heads j < n_heads:
    // each step out = fma(p, v, out).
    void (*weighted_sum)(const float* p, int64_t p_step, int n_heads, const float* v, int64_t v_stride, int64_t rows,
                         float* out, int64_t out_step, int64_t n);
    // s[0..n) <- softmax(scale * s) in place (ops.cpp's softmax_f32 order).
    void (*softmax)(float* s, int64_t n, float scale);
};

#ifdef NLD_HAVE_AVX2_PATH
// Heads taken two at a time on AVX2's 16 registers, four at a time with
// AVX-512VL's 32 (still 256-bit operations).
extern const attention_loops avx2_attention_loops;
extern const attention_loops avx512_attention_loops;
#endif

}  // namespace nld
