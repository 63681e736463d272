// quantize_avx2.cpp: AVX2 versions of the activation quantizers the matmuls
// call on every row (quantize_row_q8_0s, quantize_row_q8_k), with the
// reference's results byte for byte: the same largest magnitude (NaN
// ignored, as std::max there), the same scalar scale and inverse, each
// value rounded half away from zero exactly as round_half_away (NaN and
// out-of-range products give 0), and exact integer sums.
#include "quants/dot.h"

#ifdef NLD_HAVE_AVX2_PATH

#include <immintrin.h>

#include "quants/quants.h"
#include "quants/repack.h"

#define NLD_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace nld {

namespace {

// round_half_away (quants.h) on 8 lanes: truncate, then step away from zero
// where the exact fraction v - trunc(v) reaches one half.
NLD_AVX2 inline __m256i round_half_away8(__m256 v) {
    const __m256i in_range = _mm256_castps_si256(
        _mm256_and_ps(_mm256_cmp_ps(v, _mm256_set1_ps(-2147483520.0f), _CMP_GT_OQ),
                      _mm256_cmp_ps(v, _mm256_set1_ps(2147483520.0f), _CMP_LT_OQ)));
    const __m256i t = _mm256_cvttps_epi32(v);
    const __m256 frac = _mm256_sub_ps(v, _mm256_cvtepi32_ps(t));
    const __m256i up = _mm256_castps_si256(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ));     // -1 or 0
    const __m256i down = _mm256_castps_si256(_mm256_cmp_ps(frac, _mm256_set1_ps(-0.5f), _CMP_LE_OQ));  // -1 or 0
    return _mm256_and_si256(_mm256_add_epi32(_mm256_sub_epi32(t, up), down), in_range);
}

// The reference's int8_scale over n values (n % 8 == 0): the largest |x|,
// NaN lanes never taken (max_ps returns its second operand then), d =
// amax / 127 and its inverse.
NLD_AVX2 inline float int8_scale8(const float* x, int n, float* inverse) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 amax = _mm256_setzero_ps();
    for (int j = 0; j < n; j += 8) amax = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)), amax);
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    const float d = _mm_cvtss_f32(m) / 127.0f;
    *inverse = d != 0.0f ? 1.0f / d : 0.0f;
    return d;
}

// 32 values x * id as int8 at out. |x| <= amax keeps every finite product
// within +-127.0001, so the saturating packs never saturate and equal the
// reference's (int8_t) cast.
NLD_AVX2 inline __m256i quantize32(const float* x, float id, int8_t* out) {
    const __m256 idv = _mm256_set1_ps(id);
    __m256i q[4];
    for (int c = 0; c < 4; ++c) q[c] = round_half_away8(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * c), idv));
    const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    // The packs work within 128-bit halves: put the 4-byte runs back in order.
    const __m256i ordered = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), ordered);
    return ordered;
}

// The sums of each run of 4 bytes of q (signed), in the 8 i32 lanes.
NLD_AVX2 inline __m256i sums_of_4(__m256i q) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q), _mm256_set1_epi16(1));
}

NLD_AVX2 void quantize_row_q8_0s_avx2(const float* src, block_q8_0s* dst, int64_t n) {
    for (int64_t b = 0; b < n / QK8_0; ++b) {
        const float* x = src + b * QK8_0;
        float id;
        const float d = int8_scale8(x, QK8_0, &id);
        dst[b].d = fp16_to_f32(f32_to_fp16(d));
        const __m256i s = sums_of_4(quantize32(x, id, dst[b].qs));
        __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, _MM_SHUFFLE(1, 0, 3, 2)));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, _MM_SHUFFLE(2, 3, 0, 1)));
        dst[b].offset8 = -8 * _mm_cvtsi128_si32(t);
    }
}

NLD_AVX2 void quantize_row_q8_k_avx2(const float* src, block_q8_k* dst, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; ++b) {
        const float* x = src + b * QK_K;
        float id;
        dst[b].d = int8_scale8(x, QK_K, &id);
        for (int c = 0; c < QK_K / 32; ++c) {
            // Lanes 0-3: the runs of group 2c, lanes 4-7: of group 2c + 1.
            const __m256i s4 = sums_of_4(quantize32(x + 32 * c, id, dst[b].qs + 32 * c));
            const __m256i s8 = _mm256_hadd_epi32(s4, s4);
            const __m256i s16 = _mm256_hadd_epi32(s8, s8);
            dst[b].bsums[2 * c] = (int16_t)_mm256_extract_epi32(s16, 0);
            dst[b].bsums[2 * c + 1] = (int16_t)_mm256_extract_epi32(s16, 4);
        }
    }
}

}  // namespace

const activation_quantizers avx2_quantizers = {quantize_row_q8_0s_avx2, quantize_row_q8_k_avx2};

}  // namespace nld

#endif  // NLD_HAVE_AVX2_PATH
