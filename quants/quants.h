// quants.h: the block formats of ggml that nld_cpp reads, each defined once
// (struct + size assert + scalar reference decode), and the f16/bf16 scalar
// conversions. Layouts: spec/gguf-schema.md "Quant blocks". Encoders and SIMD
// dot products arrive with the quantization work; everything faster is tested
// against these reference decoders.
#pragma once

#include <cstdint>
#include <cstring>

namespace nld {

using fp16_bits = uint16_t;  // IEEE half, stored as bits
using bf16_bits = uint16_t;  // top 16 bits of an IEEE float

float fp16_to_f32(fp16_bits h);
inline float bf16_to_f32(bf16_bits b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
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

// Decode n elements (n a multiple of the block size) starting at `src`.
void dequantize_row_q8_0(const block_q8_0* src, float* dst, int64_t n);
void dequantize_row_q4_0(const block_q4_0* src, float* dst, int64_t n);

}  // namespace nld
