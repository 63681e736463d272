// quants.cpp: scalar reference decoders for the formats in quants.h.
#include "quants/quants.h"

#include <cmath>

namespace nld {

float fp16_to_f32(fp16_bits h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    const uint32_t exp = (h >> 10) & 0x1f;
    const uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {  // subnormal half: value = mant * 2^-24
            float f = std::ldexp((float)mant, -24);
            std::memcpy(&bits, &f, sizeof bits);
            bits |= sign;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);  // inf / nan
    } else {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    }
    float out;
    std::memcpy(&out, &bits, sizeof out);
    return out;
}

void dequantize_row_q8_0(const block_q8_0* src, float* dst, int64_t n) {
    for (int64_t b = 0; b < n / QK8_0; ++b) {
        const float d = fp16_to_f32(src[b].d);
        for (int j = 0; j < QK8_0; ++j) dst[b * QK8_0 + j] = d * (float)src[b].qs[j];
    }
}

void dequantize_row_q4_0(const block_q4_0* src, float* dst, int64_t n) {
    for (int64_t b = 0; b < n / QK4_0; ++b) {
        const float d = fp16_to_f32(src[b].d);
        for (int j = 0; j < QK4_0 / 2; ++j) {
            dst[b * QK4_0 + j] = d * (float)((src[b].qs[j] & 0x0f) - 8);
            dst[b * QK4_0 + j + QK4_0 / 2] = d * (float)((src[b].qs[j] >> 4) - 8);
        }
    }
}

}  // namespace nld
