// exp_f32.h: e^x for the softmax of attention and the SiLU of the FFN, as a
// fixed sequence of f32 multiplies, adds and bit operations, so the scalar
// reference (exp_f32) and the 8-lane AVX2 version (exp8_avx2) give the same
// bits and the vector loops need no libm call per element.
//
// Method: x = n ln2 + r with n = round(x log2 e) (the 1.5 * 2^23 rounding
// add) and r = (x - n ln2_hi) - n ln2_lo (ln2_hi has 9 significant bits, so
// n ln2_hi is exact for |n| <= 128); e^r on |r| <= ln2 / 2 by a degree-6
// polynomial (the Cephes expf coefficients); times 2^n built from its bits.
// Within 2 ulp of e^x on [-87.33, 88.37]; above 88.37 the result is +inf
// (libm's overflow starts at 88.72) and below -87.33, where e^x is under
// FLT_MIN, it is 0 (no subnormals). NaN gives NaN.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "quants/dot.h"  // NLD_HAVE_AVX2_PATH

#ifdef NLD_HAVE_AVX2_PATH
#include <immintrin.h>
#endif

namespace nld {

namespace exp_f32_constants {
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
constexpr uint32_t kRoundBits = 0x4b400000u;
constexpr float kLn2Hi = 0.693359375f;
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kMax = 88.3762626647949f;   // the largest x with n <= 127
constexpr float kMin = -87.3365447504019f;  // ln FLT_MIN
constexpr float kP[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                         4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};
}  // namespace exp_f32_constants

// Requires -ffp-contract=off (the library's build): a multiply then an add,
// never a fused multiply-add, as the vector version.
inline float exp_f32(float x) {
    using namespace exp_f32_constants;
    if (x > kMax) return INFINITY;
    if (x < kMin) return 0.0f;
    const float t = x * kLog2e + kRound;
    const float n = t - kRound;
    uint32_t t_bits;
    std::memcpy(&t_bits, &t, sizeof(t_bits));
    const uint32_t scale_bits = (t_bits - kRoundBits + 127u) << 23;  // 2^n
    const float r = (x - n * kLn2Hi) - n * kLn2Lo;
    float p = kP[0];
    for (int i = 1; i < 6; ++i) p = p * r + kP[i];
    p = (p * (r * r) + r) + 1.0f;
    float scale;
    std::memcpy(&scale, &scale_bits, sizeof(scale));
    return p * scale;
}

#ifdef NLD_HAVE_AVX2_PATH
// exp_f32 of 8 lanes.
__attribute__((target("avx2"))) inline __m256 exp8_avx2(__m256 x) {
    using namespace exp_f32_constants;
    const __m256 round = _mm256_set1_ps(kRound);
    const __m256 t = _mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)), round);
    const __m256 n = _mm256_sub_ps(t, round);
    const __m256i scale_bits = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32((int)kRoundBits)),
                         _mm256_set1_epi32(127)),
        23);
    const __m256 r = _mm256_sub_ps(_mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(kLn2Hi))),
                                   _mm256_mul_ps(n, _mm256_set1_ps(kLn2Lo)));
    __m256 p = _mm256_set1_ps(kP[0]);
    for (int i = 1; i < 6; ++i) p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(kP[i]));
    p = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(p, _mm256_mul_ps(r, r)), r), _mm256_set1_ps(1.0f));
    __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(scale_bits));
    y = _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), _mm256_cmp_ps(x, _mm256_set1_ps(kMax), _CMP_GT_OQ));
    return _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps(x, _mm256_set1_ps(kMin), _CMP_LT_OQ));
}
#endif

}  // namespace nld
