// quants.h: the block formats of ggml that nld_cpp reads and writes, each
// defined once (struct + size assert + scalar reference encode/decode), the
// scalar reference dot products of quantized weights with 8-bit activations,
// and the f16/bf16 scalar conversions. Layouts: spec/gguf-schema.md "Quant
// blocks"; the encoder choices are in docs/quants.md. Everything faster
// (quants/dot_avx2.cpp) is tested against these reference functions.
#pragma once

#include <cstdint>
#include <cstring>

namespace nld {

using fp16_bits = uint16_t;  // IEEE half, stored as bits
using bf16_bits = uint16_t;  // top 16 bits of an IEEE float

float fp16_to_f32(fp16_bits h);
fp16_bits f32_to_fp16(float f);  // round to nearest even, overflow to inf (as numpy / F16C)
inline float bf16_to_f32(bf16_bits b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

// Round half away from zero (C's roundf) to int, without a libm call: the
// fraction v - trunc(v) is exact in f32. NaN and |v| >= 2^31 give 0.
inline int round_half_away(float v) {
    if (!(v > -2147483520.0f && v < 2147483520.0f)) return 0;
    const int t = (int)v;
    const float frac = v - (float)t;
    return t + (frac >= 0.5f) - (frac <= -0.5f);
}

constexpr int QK8_0 = 32;
struct block_q8_0 {
    fp16_bits d;        // scale
    int8_t qs[QK8_0];   // x = d * q
};
static_assert(sizeof(block_q8_0) == 34, "Q8_0 block is 34 bytes");

constexpr int QK4_0 = 32;
struct block_q4_0 {
    fp16_bits d;              // scale
    uint8_t qs[QK4_0 / 2];    // low nibble: element j, high nibble: element j+16; x = d*(q-8)
};
static_assert(sizeof(block_q4_0) == 18, "Q4_0 block is 18 bytes");

// The K-quant super-block: 256 elements.
constexpr int QK_K = 256;

struct block_q4_k {
    fp16_bits d;          // super-scale of the sub-block scales
    fp16_bits dmin;       // super-scale of the sub-block mins
    uint8_t scales[12];   // 8 x (6-bit scale, 6-bit min), packed (see q4_k_scale_min)
    uint8_t qs[QK_K / 2]; // chunk c of 32 bytes: low nibbles elements 64c.., high 64c+32..
};
static_assert(sizeof(block_q4_k) == 144, "Q4_K block is 144 bytes");

struct block_q6_k {
    uint8_t ql[QK_K / 2];     // low 4 bits
    uint8_t qh[QK_K / 4];     // high 2 bits
    int8_t scales[QK_K / 16]; // one scale per 16 elements
    fp16_bits d;              // super-scale (last)
};
static_assert(sizeof(block_q6_k) == 210, "Q6_K block is 210 bytes");

// Activations only: the partner of Q4_K / Q6_K weights in dot products.
struct block_q8_k {
    float d;                   // x = d * q
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];  // sum of each group of 16 qs
};
static_assert(sizeof(block_q8_k) == 292, "Q8_K block is 292 bytes");

// Sub-block j (0..7) of a Q4_K block: its 6-bit scale and min.
inline void q4_k_scale_min(const uint8_t* s, int j, uint8_t* sc, uint8_t* m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (uint8_t)((s[j + 4] & 15) | ((s[j - 4] >> 6) << 4));
        *m = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

// Encode / decode n elements (n a multiple of the block size).
void quantize_row_q8_0(const float* src, block_q8_0* dst, int64_t n);  // bit-exact with ggml
void quantize_row_q4_0(const float* src, block_q4_0* dst, int64_t n);  // bit-exact with ggml
void quantize_row_q4_k(const float* src, block_q4_k* dst, int64_t n);  // our scale/min search
void quantize_row_q6_k(const float* src, block_q6_k* dst, int64_t n);  // our scale search
void quantize_row_q8_k(const float* src, block_q8_k* dst, int64_t n);
void dequantize_row_q8_0(const block_q8_0* src, float* dst, int64_t n);
void dequantize_row_q4_0(const block_q4_0* src, float* dst, int64_t n);
void dequantize_row_q4_k(const block_q4_k* src, float* dst, int64_t n);
void dequantize_row_q6_k(const block_q6_k* src, float* dst, int64_t n);
void dequantize_row_q8_k(const block_q8_k* src, float* dst, int64_t n);

// Scalar reference dot products of one weight row with one activation row of
// n elements. Integer sums per block; f32 accumulation of the block terms in
// block order.
float vec_dot_q8_0_q8_0(int64_t n, const block_q8_0* w, const block_q8_0* x);
float vec_dot_q4_0_q8_0(int64_t n, const block_q4_0* w, const block_q8_0* x);
float vec_dot_q4_k_q8_k(int64_t n, const block_q4_k* w, const block_q8_k* x);
float vec_dot_q6_k_q8_k(int64_t n, const block_q6_k* w, const block_q8_k* x);

}  // namespace nld
