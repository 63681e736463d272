// kquants.cpp: the K-quant weight formats Q4_K and Q6_K (quants.h): scalar
// reference decoders (the same f32 operations as the gguf package's
// dequantize, so both give identical floats) and our encoders.
//
// Encoders (docs/quants.md): each sub-block gets the least-squares scale (and
// for Q4_K the min) over a few candidate grids, keeping the one with the
// smallest squared error; then the sub-block scales are quantized to 6 bits
// (Q4_K) or 8 bits (Q6_K) against an f16 super-scale, and the elements are
// re-quantized against the scales as stored, so the error measured is the
// error of the bytes written.
#include <algorithm>
#include <cmath>

#include "quants/quants.h"

namespace nld {

namespace {

// Nearest integer in [lo, hi] (half away from zero); NaN gives lo.
int round_clamp(float v, int lo, int hi) { return round_half_away(std::min((float)hi, std::max((float)lo, v))); }

// The searches' rounding (clamp, then nearest; ties may go either way): a
// loop of these vectorises, unlike round_clamp. NaN gives lo.
inline int grid_point(float v, float lo, float hi) {
    v = v > lo ? v : lo;
    v = v < hi ? v : hi;
    return (int)(v - lo + 0.5f) + (int)lo;  // v - lo >= 0: truncation rounds half up
}

// sum q[i] * x[i] in four independent chains (n a multiple of 4).
double dot_q_x(const int* q, const float* x, int n) {
    double acc[4] = {0, 0, 0, 0};
    for (int i = 0; i < n; i += 4)
        for (int k = 0; k < 4; ++k) acc[k] += (double)q[i + k] * x[i + k];
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

// x (n) ~ s*q + b with q in [0, qmax] and b <= 0: candidate grids stretch
// (qmax + t)/(hi - lo) for t in [-1, 1] in steps of 0.1; for each grid, the
// exact least-squares (s, b) of the rounded q. Returns s and m = -b.
void fit_scale_min(const float* x, int n, int qmax, float* out_scale, float* out_min) {
    float lo = 0.0f, hi = x[0];
    double sx = 0;
    for (int i = 0; i < n; ++i) {
        lo = std::min(lo, x[i]);
        hi = std::max(hi, x[i]);
        sx += x[i];
    }
    if (!(hi > lo)) {  // constant non-positive block: x = -m exactly
        *out_scale = 0.0f;
        *out_min = -lo;
        return;
    }
    double best_err = INFINITY;
    float best_s = (hi - lo) / (float)qmax, best_b = lo;
    for (int step = -10; step <= 10; ++step) {
        const float iscale = ((float)qmax + 0.1f * (float)step) / (hi - lo);
        int q[QK_K];
        for (int i = 0; i < n; ++i) q[i] = grid_point(iscale * (x[i] - lo), 0.0f, (float)qmax);
        int64_t sq = 0, sqq = 0;  // exact
        for (int i = 0; i < n; ++i) {
            sq += q[i];
            sqq += q[i] * q[i];
        }
        const double sqx = dot_q_x(q, x, n);
        const double det = (double)(n * sqq - sq * sq);
        if (det <= 0) continue;
        double s = (n * sqx - (double)sq * sx) / det, b = ((double)sqq * sx - (double)sq * sqx) / det;
        if (b > 0) {  // the format's min is subtracted: b must be <= 0
            b = 0;
            s = sqx / (double)sqq;
        }
        // sum (s q + b - x)^2, expanded over the sums above (sum x^2 is the same for every grid)
        const double err = s * s * (double)sqq + 2 * s * b * (double)sq + n * b * b - 2 * s * sqx - 2 * b * sx;
        if (err < best_err) {
            best_err = err;
            best_s = (float)s;
            best_b = (float)b;
        }
    }
    *out_scale = std::max(best_s, 0.0f);
    *out_min = -best_b;
}

// x (n) ~ s*q with q in [-32, 31]: grids mapping the largest magnitude to
// -(32 + t), t in [-0.9, 0.9]; least-squares s for each. Returns s (signed).
float fit_symmetric(const float* x, int n) {
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < n; ++i) {
        if (std::fabs(x[i]) > amax) {
            amax = std::fabs(x[i]);
            max = x[i];
        }
    }
    if (amax == 0.0f) return 0.0f;
    double best_gain = -1, best_s = 0;
    for (int step = -9; step <= 9; ++step) {
        const float iscale = -(32.0f + 0.1f * (float)step) / max;
        int q[QK_K];
        for (int i = 0; i < n; ++i) q[i] = grid_point(iscale * x[i], -32.0f, 31.0f);
        int64_t sqq = 0;
        for (int i = 0; i < n; ++i) sqq += q[i] * q[i];
        const double sqx = dot_q_x(q, x, n);
        // squared error = sum x^2 - sqx^2 / sqq at the optimal s = sqx / sqq
        if (sqq > 0 && sqx * sqx / sqq > best_gain) {
            best_gain = sqx * sqx / sqq;
            best_s = sqx / sqq;
        }
    }
    return (float)best_s;
}

}  // namespace

void quantize_row_q4_k(const float* src, block_q4_k* dst, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; ++b) {
        const float* x = src + b * QK_K;
        block_q4_k& out = dst[b];
        float scale[8], min[8], max_scale = 0.0f, max_min = 0.0f;
        for (int j = 0; j < 8; ++j) {
            fit_scale_min(x + 32 * j, 32, 15, &scale[j], &min[j]);
            max_scale = std::max(max_scale, scale[j]);
            max_min = std::max(max_min, min[j]);
        }
        out.d = f32_to_fp16(max_scale / 63.0f);
        out.dmin = f32_to_fp16(max_min / 63.0f);
        const float d = fp16_to_f32(out.d), dmin = fp16_to_f32(out.dmin);
        uint8_t sc[8], m[8];
        for (int j = 0; j < 8; ++j) {
            sc[j] = d > 0.0f ? (uint8_t)round_clamp(scale[j] / d, 0, 63) : 0;
            m[j] = dmin > 0.0f ? (uint8_t)round_clamp(min[j] / dmin, 0, 63) : 0;
        }
        std::memset(out.scales, 0, sizeof out.scales);
        for (int j = 0; j < 4; ++j) {
            out.scales[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
            out.scales[j + 4] = (uint8_t)(m[j] | ((m[j + 4] >> 4) << 6));
            out.scales[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
        }
        std::memset(out.qs, 0, sizeof out.qs);
        for (int j = 0; j < 8; ++j) {
            const float ds = d * (float)sc[j], dm = dmin * (float)m[j];
            for (int i = 0; i < 32; ++i) {
                const int q = ds > 0.0f ? round_clamp((x[32 * j + i] + dm) / ds, 0, 15) : 0;
                out.qs[32 * (j / 2) + i] |= (uint8_t)(q << (4 * (j % 2)));
            }
        }
    }
}

void dequantize_row_q4_k(const block_q4_k* src, float* dst, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; ++b) {
        const float d = fp16_to_f32(src[b].d), dmin = fp16_to_f32(src[b].dmin);
        float* y = dst + b * QK_K;
        for (int j = 0; j < 8; ++j) {
            uint8_t sc, m;
            q4_k_scale_min(src[b].scales, j, &sc, &m);
            const float ds = d * (float)sc, dm = dmin * (float)m;
            const uint8_t* q = src[b].qs + 32 * (j / 2);
            for (int i = 0; i < 32; ++i) y[32 * j + i] = ds * (float)((q[i] >> (4 * (j % 2))) & 0x0f) - dm;
        }
    }
}

void quantize_row_q6_k(const float* src, block_q6_k* dst, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; ++b) {
        const float* x = src + b * QK_K;
        block_q6_k& out = dst[b];
        float scale[16], amax_scale = 0.0f;
        for (int g = 0; g < 16; ++g) {
            scale[g] = fit_symmetric(x + 16 * g, 16);
            amax_scale = std::max(amax_scale, std::fabs(scale[g]));
        }
        out.d = f32_to_fp16(amax_scale / 127.0f);
        const float d = fp16_to_f32(out.d);
        for (int g = 0; g < 16; ++g) out.scales[g] = d > 0.0f ? (int8_t)round_clamp(scale[g] / d, -127, 127) : 0;
        std::memset(out.ql, 0, sizeof out.ql);
        std::memset(out.qh, 0, sizeof out.qh);
        for (int e = 0; e < QK_K; ++e) {
            const float ds = d * (float)out.scales[e / 16];
            const int q = (ds != 0.0f ? round_clamp(x[e] / ds, -32, 31) : 0) + 32;  // 0..63
            // element e = 128*half + 32*k + l (spec/gguf-schema.md "Q6_K")
            const int half = e / 128, k = (e % 128) / 32, l = e % 32;
            out.ql[64 * half + l + 32 * (k % 2)] |= (uint8_t)((q & 0x0f) << (4 * (k / 2)));
            out.qh[32 * half + l] |= (uint8_t)((q >> 4) << (2 * k));
        }
    }
}

void dequantize_row_q6_k(const block_q6_k* src, float* dst, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; ++b) {
        const float d = fp16_to_f32(src[b].d);
        for (int e = 0; e < QK_K; ++e) {
            const int half = e / 128, k = (e % 128) / 32, l = e % 32;
            const int lo = (src[b].ql[64 * half + l + 32 * (k % 2)] >> (4 * (k / 2))) & 0x0f;
            const int hi = (src[b].qh[32 * half + l] >> (2 * k)) & 0x03;
            dst[b * QK_K + e] = (d * (float)src[b].scales[e / 16]) * (float)((lo | (hi << 4)) - 32);
        }
    }
}

}  // namespace nld
