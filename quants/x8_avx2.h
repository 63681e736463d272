// x8_avx2.h: the pieces every x8 kernel (repack.h) on x86-64 shares:
// loads and broadcasts, the prefetch, and the f32 block and super-block
// terms, which apply the reference's operations (quants.cpp) in its order,
// lane by lane (lane j: weight row j), so the kernels' results equal the
// scalar reference bit for bit. Included by gemm_avx2.cpp and
// gemm_vnni.inc; each includer compiles these for its own target.
#pragma once

#include <immintrin.h>

#include <cstring>

#include "quants/repack.h"

#define NLD_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace nld {
namespace {

NLD_AVX2 inline __m256i load32(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// 4 activation bytes at p in every 32-bit lane.
NLD_AVX2 inline __m256i bcast4(const int8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

NLD_AVX2 inline __m256 half8(const fp16_bits* d) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(d)));
}

// Weights stream from memory once per call: each block asks for the lines
// kPrefetchBytes ahead (past the group's end: the next groups'), into L2,
// so memory keeps serving while the block computes. (Measured on the
// Zen 4 VM, one-row Q4_K / Q6_K, 2 threads: 8 KB into L2 streams 20-40%
// faster than 2 KB into L1.)
#ifndef NLD_PREFETCH_BYTES
#define NLD_PREFETCH_BYTES 8192
#endif
constexpr int kPrefetchBytes = NLD_PREFETCH_BYTES;

template <typename B>
NLD_AVX2 inline void prefetch_ahead(const B* block) {
    const char* p = reinterpret_cast<const char*>(block) + kPrefetchBytes;
    for (size_t off = 0; off < sizeof(B); off += 64) _mm_prefetch(p + off, _MM_HINT_T1);
}

template <typename X>
inline const X* act_row(const void* x, size_t stride, int r) {
    return reinterpret_cast<const X*>(static_cast<const uint8_t*>(x) + (size_t)r * stride);
}

// 8 bytes at p widened to 16 i16 lanes [p0, p0, p1, p1, ..., p7, p7] (one
// value per weight row, for madd against a lane's two i16 partial sums).
NLD_AVX2 inline __m256i dup8_u8(const uint8_t* p) {
    const __m128i dup = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    return _mm256_cvtepu8_epi16(_mm_shuffle_epi8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)), dup));
}
NLD_AVX2 inline __m256i dup8_i8(const int8_t* p) {
    const __m128i dup = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    return _mm256_cvtepi8_epi16(_mm_shuffle_epi8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)), dup));
}

// sum += (dw * dx) * isum, lane by lane (the reference's block term).
NLD_AVX2 inline __m256 add_block(__m256 sum, __m256 dw, float dx, __m256i isum) {
    return _mm256_add_ps(sum, _mm256_mul_ps(_mm256_mul_ps(dw, _mm256_set1_ps(dx)), _mm256_cvtepi32_ps(isum)));
}

// The Q8_K bsums of a row as the 8 sub-block sums (32 elements each), in i16:
// the 32-bit element p of each 128-bit half holds sub-blocks 2p, 2p+1.
NLD_AVX2 inline __m256i subblock_pairs(const block_q8_k& xb) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xb.bsums));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xb.bsums + 8));
    return _mm256_broadcastsi128_si256(_mm_hadd_epi16(a, b));
}

template <int p>
NLD_AVX2 inline __m256i pair_lane(__m256i pairs) {
    return _mm256_shuffle_epi32(pairs, _MM_SHUFFLE(p, p, p, p));
}

// One row's super-block term of Q4_K: (d * xd) * isum - (dmin * xd) * msum,
// lane by lane, msum = sum over sub-blocks of min * (sum of x).
NLD_AVX2 inline __m256 q4_k_term(const block_q4_kx8& w, const block_q8_k& xb, __m256i isum) {
    const __m256i ps = subblock_pairs(xb);
    __m256i msum = _mm256_setzero_si256();
    const __m256i lanes[4] = {pair_lane<0>(ps), pair_lane<1>(ps), pair_lane<2>(ps), pair_lane<3>(ps)};
    for (int p = 0; p < 4; ++p) {
        const __m256i m = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.mins + 16 * p)));
        msum = _mm256_add_epi32(msum, _mm256_madd_epi16(m, lanes[p]));
    }
    const __m256 xd = _mm256_set1_ps(xb.d);
    return _mm256_sub_ps(_mm256_mul_ps(_mm256_mul_ps(half8(w.d), xd), _mm256_cvtepi32_ps(isum)),
                         _mm256_mul_ps(_mm256_mul_ps(half8(w.dmin), xd), _mm256_cvtepi32_ps(msum)));
}

// One row's super-block term of Q6_K: (d * xd) * (isum - 32 * offset), lane
// by lane; offset = sum over groups of scale * (sum of x) (the stored q is
// the value + 32).
NLD_AVX2 inline __m256 q6_k_term(const block_q6_kx8& w, const block_q8_k& xb, __m256i isum) {
    __m256i offset = _mm256_setzero_si256();
    for (int p = 0; p < 8; ++p) {  // groups 2p, 2p+1: scale pairs against the pair of bsums
        const __m128i a = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w.scales + 8 * (2 * p)));
        const __m128i c = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w.scales + 8 * (2 * p + 1)));
        int32_t pair;
        std::memcpy(&pair, xb.bsums + 2 * p, 4);
        offset = _mm256_add_epi32(offset, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_unpacklo_epi8(a, c)),
                                                            _mm256_set1_epi32(pair)));
    }
    const __m256i total = _mm256_sub_epi32(isum, _mm256_slli_epi32(offset, 5));
    return _mm256_mul_ps(_mm256_mul_ps(half8(w.d), _mm256_set1_ps(xb.d)), _mm256_cvtepi32_ps(total));
}

// Bits 2k, 2k+1 of every qh byte moved to bits 4-5, or'ed with 4 low bits:
// one 16-bit shift puts them in place (bits crossing into the neighbouring
// byte land outside the 0x30 mask), one and keeps them.
NLD_AVX2 inline __m256i q6_value(__m256i low_bits, __m256i qh, int k) {
    const __m256i placed = k == 0 ? _mm256_slli_epi16(qh, 4)
                         : k == 1 ? _mm256_slli_epi16(qh, 2)
                         : k == 2 ? qh
                                  : _mm256_srli_epi16(qh, 2);
    return _mm256_or_si256(low_bits, _mm256_and_si256(placed, _mm256_set1_epi8(0x30)));
}

}  // namespace
}  // namespace nld
