// dot_avx2.cpp: AVX2 + FMA + F16C versions of the dot products of quants.h,
// compiled with target attributes (no global -mavx2), so the library still
// runs on x86-64 CPUs without AVX2; dot.cpp only selects these after
// checking the CPU. Each kernel takes R activation rows (R <= 4) at once:
// a weight block is loaded and unpacked once, then used for every row, and
// every row keeps its own accumulators, so its arithmetic is the same for
// any R. Products of 4/6-bit weights with int8 activations use maddubs
// (u8 x i8 -> i16 pairs, which cannot saturate for these ranges:
// 2*63*127 < 32767) and madd (i16 x i16 -> i32). Q8_0/Q4_0 accumulate block
// terms in 8 f32 lanes (a different order from the scalar reference, tested
// within 1e-4 relative); the K-quants sum each super-block in integers and
// add its terms in the reference order, so they equal the reference exactly.
#include "quants/dot.h"

#ifdef NLD_HAVE_AVX2_PATH

#include <immintrin.h>

#include "quants/quants.h"
#include "quants/row_passes.h"

#define NLD_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace nld {

namespace {


NLD_AVX2 inline float half(fp16_bits h) { return _cvtsh_ss(h); }

NLD_AVX2 inline float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

NLD_AVX2 inline int32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

NLD_AVX2 inline __m256i load32(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

template <typename X>
inline const X* row_blocks(const void* x, size_t stride, int r) {
    return reinterpret_cast<const X*>(static_cast<const uint8_t*>(x) + (size_t)r * stride);
}

// Q8_0 and Q4_0: 32 signed weights per block (qw) against each row's Q8_0
// block. |w| . (x with w's sign) keeps maddubs' first operand unsigned.
template <int R, typename Unpack>
NLD_AVX2 void q8_0_act_rows(int64_t n, const void* wv, const void* x, size_t stride, float* y, int64_t y_stride) {
    const typename Unpack::block* w = static_cast<const typename Unpack::block*>(wv);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK8_0; ++b) {
        const __m256i qw = Unpack::weights(w[b]);
        const __m256i abs_w = _mm256_sign_epi8(qw, qw);
        const float dw = half(w[b].d);
        for (int r = 0; r < R; ++r) {
            const block_q8_0& xb = row_blocks<block_q8_0>(x, stride, r)[b];
            const __m256i dot = _mm256_madd_epi16(_mm256_maddubs_epi16(abs_w, _mm256_sign_epi8(load32(xb.qs), qw)), ones);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dw * half(xb.d)), _mm256_cvtepi32_ps(dot), acc[r]);
        }
    }
    for (int r = 0; r < R; ++r) y[r * y_stride] = hsum_ps(acc[r]);
}

struct unpack_q8_0 {
    using block = block_q8_0;
    NLD_AVX2 static __m256i weights(const block_q8_0& b) { return load32(b.qs); }
};

struct unpack_q4_0 {
    using block = block_q4_0;
    NLD_AVX2 static __m256i weights(const block_q4_0& b) {
        const __m128i low4 = _mm_set1_epi8(0x0f);
        const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
        const __m128i lo = _mm_and_si128(raw, low4);                     // elements 0..15
        const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), low4);  // elements 16..31
        return _mm256_sub_epi8(_mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1), _mm256_set1_epi8(8));
    }
};

// Bits shift, shift+1 of every byte of qh, moved to bits 4-5.
template <int shift>
NLD_AVX2 inline __m256i q6_high2(__m256i qh) {
    return _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, shift), _mm256_set1_epi8(0x03)), 4);
}

template <int R>
NLD_AVX2 void q4_k_rows(int64_t n, const void* wv, const void* x, size_t stride, float* y, int64_t y_stride) {
    const block_q4_k* w = static_cast<const block_q4_k*>(wv);
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    float sum[R] = {};
    for (int64_t b = 0; b < n / QK_K; ++b) {
        uint8_t sc[8], m[8];
        for (int j = 0; j < 8; ++j) q4_k_scale_min(w[b].scales, j, &sc[j], &m[j]);
        __m256i isum[R];
        for (int r = 0; r < R; ++r) isum[r] = _mm256_setzero_si256();
        for (int c = 0; c < 4; ++c) {  // 64 elements: sub-blocks 2c (low nibbles) and 2c+1 (high)
            const __m256i raw = load32(w[b].qs + 32 * c);
            const __m256i qlo = _mm256_and_si256(raw, low4);
            const __m256i qhi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4);
            const __m256i sc_lo = _mm256_set1_epi16(sc[2 * c]), sc_hi = _mm256_set1_epi16(sc[2 * c + 1]);
            for (int r = 0; r < R; ++r) {
                const int8_t* xq = row_blocks<block_q8_k>(x, stride, r)[b].qs + 64 * c;
                const __m256i plo = _mm256_madd_epi16(_mm256_maddubs_epi16(qlo, load32(xq)), sc_lo);
                const __m256i phi = _mm256_madd_epi16(_mm256_maddubs_epi16(qhi, load32(xq + 32)), sc_hi);
                isum[r] = _mm256_add_epi32(isum[r], _mm256_add_epi32(plo, phi));
            }
        }
        for (int r = 0; r < R; ++r) {
            const block_q8_k& xb = row_blocks<block_q8_k>(x, stride, r)[b];
            int32_t msum = 0;
            for (int j = 0; j < 8; ++j) msum += m[j] * (xb.bsums[2 * j] + xb.bsums[2 * j + 1]);
            sum[r] += half(w[b].d) * xb.d * (float)hsum_epi32(isum[r]) - half(w[b].dmin) * xb.d * (float)msum;
        }
    }
    for (int r = 0; r < R; ++r) y[r * y_stride] = sum[r];
}

template <int R>
NLD_AVX2 void q6_k_rows(int64_t n, const void* wv, const void* x, size_t stride, float* y, int64_t y_stride) {
    const block_q6_k* w = static_cast<const block_q6_k*>(wv);
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    float sum[R] = {};
    for (int64_t b = 0; b < n / QK_K; ++b) {
        __m256i isum[R];
        for (int r = 0; r < R; ++r) isum[r] = _mm256_setzero_si256();
        for (int h = 0; h < 2; ++h) {
            const __m256i ql0 = load32(w[b].ql + 64 * h), ql1 = load32(w[b].ql + 64 * h + 32);
            const __m256i qh = load32(w[b].qh + 32 * h);
            // The stored q is 0..63 (value + 32): elements 128h + 32k + l.
            const __m256i q[4] = {
                _mm256_or_si256(_mm256_and_si256(ql0, low4), q6_high2<0>(qh)),
                _mm256_or_si256(_mm256_and_si256(ql1, low4), q6_high2<2>(qh)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4), q6_high2<4>(qh)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4), q6_high2<6>(qh)),
            };
            for (int k = 0; k < 4; ++k) {  // scale groups 8h+2k (low 16 elements), 8h+2k+1 (high 16)
                const __m256i scales =
                    _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi16(w[b].scales[8 * h + 2 * k])),
                                            _mm_set1_epi16(w[b].scales[8 * h + 2 * k + 1]), 1);
                for (int r = 0; r < R; ++r) {
                    const __m256i xq = load32(row_blocks<block_q8_k>(x, stride, r)[b].qs + 128 * h + 32 * k);
                    isum[r] = _mm256_add_epi32(isum[r], _mm256_madd_epi16(_mm256_maddubs_epi16(q[k], xq), scales));
                }
            }
        }
        for (int r = 0; r < R; ++r) {
            // take 32 * sum_g scale_g * (sum of x in group g) back out
            const block_q8_k& xb = row_blocks<block_q8_k>(x, stride, r)[b];
            int32_t offset = 0;
            for (int g = 0; g < 16; ++g) offset += w[b].scales[g] * xb.bsums[g];
            sum[r] += half(w[b].d) * xb.d * (float)(hsum_epi32(isum[r]) - 32 * offset);
        }
    }
    for (int r = 0; r < R; ++r) y[r * y_stride] = sum[r];
}

template <typename U>
constexpr dot_rows_fn q8_0_act_kernel =
    all_rows<q8_0_act_rows<4, U>, q8_0_act_rows<3, U>, q8_0_act_rows<2, U>, q8_0_act_rows<1, U>>;

}  // namespace

const dot_kernels avx2_kernels = {
    q8_0_act_kernel<unpack_q8_0>,
    q8_0_act_kernel<unpack_q4_0>,
    all_rows<q4_k_rows<4>, q4_k_rows<3>, q4_k_rows<2>, q4_k_rows<1>>,
    all_rows<q6_k_rows<4>, q6_k_rows<3>, q6_k_rows<2>, q6_k_rows<1>>,
    &avx2_x8_kernels,
    nullptr,
    &avx2_quantizers,
};

}  // namespace nld

#endif  // NLD_HAVE_AVX2_PATH
