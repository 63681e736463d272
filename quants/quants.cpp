// quants.cpp: scalar reference of the 32-element formats (Q8_0, Q4_0), the
// Q8_K activation format, the f16 conversions, and the reference dot
// products of every weight format with its activation format (quants.h).
// Built with -ffp-contract=off: the encoders must round exactly as ggml's
// (and the gguf package's) separate multiply and add.
#include "quants/quants.h"

#include <algorithm>
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

fp16_bits f32_to_fp16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, sizeof x);
    const uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (fp16_bits)(sign | 0x7e00u);  // nan stays a (quiet) nan
    if (ax >= 0x477ff000u) return (fp16_bits)(sign | 0x7c00u);  // >= 65520 rounds to inf
    if (ax < 0x38800000u) {
        // Below 2^-14: a half subnormal, in units of 2^-24. Adding 0.5 (whose
        // f32 ulp is 2^-24) makes the FPU round to nearest even for us.
        float a;
        std::memcpy(&a, &ax, sizeof a);
        const float shifted = a + 0.5f;
        uint32_t bits;
        std::memcpy(&bits, &shifted, sizeof bits);
        return (fp16_bits)(sign | (bits - 0x3f000000u));
    }
    const uint32_t mant_odd = (ax >> 13) & 1u;
    ax += 0xc8000fffu + mant_odd;  // exponent bias 127 -> 15, then round to nearest even
    return (fp16_bits)(sign | (ax >> 13));
}

// ---- Q8_0 / Q4_0 / Q8_K --------------------------------------------------------------

// The 8-bit scale rule of Q8_0 and Q8_K: d = amax/127, and 1/d (0 for an all-zero block).
static float int8_scale(const float* x, int n, float* inverse) {
    float amax = 0.0f;
    for (int j = 0; j < n; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    *inverse = d != 0.0f ? 1.0f / d : 0.0f;
    return d;
}

void quantize_row_q8_0(const float* src, block_q8_0* dst, int64_t n) {
    for (int64_t b = 0; b < n / QK8_0; ++b) {
        const float* x = src + b * QK8_0;
        float id;
        dst[b].d = f32_to_fp16(int8_scale(x, QK8_0, &id));
        for (int j = 0; j < QK8_0; ++j) dst[b].qs[j] = (int8_t)round_half_away(x[j] * id);
    }
}

// min(15, trunc(v)) for v = x/d + 8.5 >= 0, as ggml; NaN (from inf input) gives 0.
static int q4_0_level(float v) { return v >= 15.0f ? 15 : v > 0.0f ? (int)v : 0; }

void quantize_row_q4_0(const float* src, block_q4_0* dst, int64_t n) {
    for (int64_t b = 0; b < n / QK4_0; ++b) {
        const float* x = src + b * QK4_0;
        float amax = 0.0f, max = 0.0f;  // the first element of largest magnitude, with its sign
        for (int j = 0; j < QK4_0; ++j) {
            if (amax < std::fabs(x[j])) {
                amax = std::fabs(x[j]);
                max = x[j];
            }
        }
        const float d = max / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        dst[b].d = f32_to_fp16(d);
        for (int j = 0; j < QK4_0 / 2; ++j) {
            const int lo = q4_0_level(x[j] * id + 8.5f);
            const int hi = q4_0_level(x[j + QK4_0 / 2] * id + 8.5f);
            dst[b].qs[j] = (uint8_t)(lo | (hi << 4));
        }
    }
}

void quantize_row_q8_k(const float* src, block_q8_k* dst, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; ++b) {
        const float* x = src + b * QK_K;
        float id;
        dst[b].d = int8_scale(x, QK_K, &id);
        for (int j = 0; j < QK_K; ++j) dst[b].qs[j] = (int8_t)round_half_away(x[j] * id);
        for (int g = 0; g < QK_K / 16; ++g) {
            int sum = 0;
            for (int j = 0; j < 16; ++j) sum += dst[b].qs[16 * g + j];
            dst[b].bsums[g] = (int16_t)sum;
        }
    }
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

void dequantize_row_q8_k(const block_q8_k* src, float* dst, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; ++b)
        for (int j = 0; j < QK_K; ++j) dst[b * QK_K + j] = src[b].d * (float)src[b].qs[j];
}

// ---- reference dot products ------------------------------------------------------------

float vec_dot_q8_0_q8_0(int64_t n, const block_q8_0* w, const block_q8_0* x) {
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK8_0; ++b) {
        int32_t isum = 0;
        for (int j = 0; j < QK8_0; ++j) isum += (int32_t)w[b].qs[j] * x[b].qs[j];
        sum += fp16_to_f32(w[b].d) * fp16_to_f32(x[b].d) * (float)isum;
    }
    return sum;
}

float vec_dot_q4_0_q8_0(int64_t n, const block_q4_0* w, const block_q8_0* x) {
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK4_0; ++b) {
        int32_t isum = 0;
        for (int j = 0; j < QK4_0 / 2; ++j) {
            isum += ((w[b].qs[j] & 0x0f) - 8) * x[b].qs[j];
            isum += ((w[b].qs[j] >> 4) - 8) * x[b].qs[j + QK4_0 / 2];
        }
        sum += fp16_to_f32(w[b].d) * fp16_to_f32(x[b].d) * (float)isum;
    }
    return sum;
}

float vec_dot_q4_k_q8_k(int64_t n, const block_q4_k* w, const block_q8_k* x) {
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; ++b) {
        int32_t isum = 0, msum = 0;  // sum sc_j * (q . x) and sum m_j * (sum of x) over sub-blocks
        for (int j = 0; j < QK_K / 32; ++j) {
            uint8_t sc, m;
            q4_k_scale_min(w[b].scales, j, &sc, &m);
            const uint8_t* q = w[b].qs + 32 * (j / 2);
            const int shift = 4 * (j % 2);
            const int8_t* xq = x[b].qs + 32 * j;
            int32_t dot = 0;
            for (int i = 0; i < 32; ++i) dot += ((q[i] >> shift) & 0x0f) * xq[i];
            isum += sc * dot;
            msum += m * (x[b].bsums[2 * j] + x[b].bsums[2 * j + 1]);
        }
        sum += fp16_to_f32(w[b].d) * x[b].d * (float)isum - fp16_to_f32(w[b].dmin) * x[b].d * (float)msum;
    }
    return sum;
}

float vec_dot_q6_k_q8_k(int64_t n, const block_q6_k* w, const block_q8_k* x) {
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; ++b) {
        int32_t isum = 0;
        for (int half = 0; half < 2; ++half) {
            const uint8_t* ql = w[b].ql + 64 * half;
            const uint8_t* qh = w[b].qh + 32 * half;
            for (int k = 0; k < 4; ++k) {
                const int8_t* xq = x[b].qs + 128 * half + 32 * k;
                for (int g = 0; g < 2; ++g) {  // two groups of 16, one scale each
                    int32_t dot = 0;
                    for (int i = 16 * g; i < 16 * g + 16; ++i) {
                        const int lo = (ql[i + 32 * (k % 2)] >> (4 * (k / 2))) & 0x0f;
                        const int hi = (qh[i] >> (2 * k)) & 0x03;
                        dot += ((lo | (hi << 4)) - 32) * xq[i];
                    }
                    isum += w[b].scales[8 * half + 2 * k + g] * dot;
                }
            }
        }
        sum += fp16_to_f32(w[b].d) * x[b].d * (float)isum;
    }
    return sum;
}

}  // namespace nld
