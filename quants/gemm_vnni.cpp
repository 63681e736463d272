// gemm_vnni.cpp: AVX-512 VNNI kernels for x8 weights (repack.h), with the
// contract of gemm_avx2.cpp (one group of 8 weight rows against several
// activation rows, each result equal to the scalar reference bit for bit),
// the products summed by vpdpbusd on 256-bit registers (AVX-512 VL): each
// 32-bit lane adds its four u8 x i8 products straight into an i32, so no
// i16 pair sums, no saturation limits and no madd steps. The unsigned side
// is the weight: Q4_0 stored as q in 0..15, Q4_K 0..15, Q6_K 0..63, and Q8_0
// w taken as w + 128. The f32 terms are x8_avx2.h's, so both paths give the
// same bits. Passes of 4 rows here; passes of 8 (and Q4_0's passes of 4)
// take the 512-bit pair kernels below.
//
// NLD_VNNI_EMULATED (tests only: tests/cpp/quants_check.cpp) builds these
// kernels for plain AVX2 with each vpdpbusd replaced by an exact AVX2
// sequence, so machines without AVX-512 still check their logic.
#include "quants/dot.h"

#ifdef NLD_HAVE_AVX2_PATH

#include "quants/row_passes.h"
#include "quants/x8_avx2.h"

// GCC 12's AVX-512 headers pass an uninitialized "undefined" vector to the
// masked builtins behind plain intrinsics (_mm512_cvtph_ps, ...), which
// -Wmaybe-uninitialized reports in every caller; those lanes are never read.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#ifdef NLD_VNNI_EMULATED
#define NLD_VNNI NLD_AVX2
#else
#define NLD_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512vnni")))
#endif

namespace nld {

namespace {

// acc plus, in each 32-bit lane, the four products of u's bytes (unsigned)
// with the 4 bytes at p (signed): vpdpbusd with p broadcast by the
// instruction itself ({1to8}; GCC does not fold a broadcast into it).
NLD_VNNI inline __m256i dot4_at(__m256i acc, __m256i u, const int8_t* p) {
#ifdef NLD_VNNI_EMULATED
    // Even and odd bytes widened to i16 (u: zero-, s: sign-extended); madd
    // sums each lane's two even and two odd products exactly in i32.
    const __m256i s = bcast4(p);
    const __m256i even_u = _mm256_and_si256(u, _mm256_set1_epi16(0x00ff)), odd_u = _mm256_srli_epi16(u, 8);
    const __m256i even_s = _mm256_srai_epi16(_mm256_slli_epi16(s, 8), 8), odd_s = _mm256_srai_epi16(s, 8);
    return _mm256_add_epi32(acc, _mm256_add_epi32(_mm256_madd_epi16(even_u, even_s), _mm256_madd_epi16(odd_u, odd_s)));
#else
    using bytes4 = int32_t __attribute__((may_alias, aligned(1)));
    __asm__("vpdpbusd %2%{1to8%}, %1, %0" : "+v"(acc) : "v"(u), "m"(*reinterpret_cast<const bytes4*>(p)));
    return acc;
#endif
}

// Q8_0: the weight w taken as the unsigned w + 128 (its top bit flipped);
// each block's sum starts from -128 * sum(x) to take the offset back.
template <int R>
NLD_VNNI void q8_0_vnni(int64_t n, const void* wv, const void* x, size_t stride, float* y, int64_t y_stride) {
    const block_q8_0x8* w = static_cast<const block_q8_0x8*>(wv);
    const __m256i top_bit = _mm256_set1_epi8((char)0x80);
    __m256 sum[R];
    for (int r = 0; r < R; ++r) sum[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK8_0; ++b) {
        if (kPrefetchBytes > 0) prefetch_ahead(w + b);
        __m256i u[8];
        for (int p = 0; p < 8; ++p) u[p] = _mm256_xor_si256(load32(w[b].qs + 32 * p), top_bit);
        const __m256 dw = half8(w[b].d);
        for (int r = 0; r < R; ++r) {
            const block_q8_0s& xb = act_row<block_q8_0s>(x, stride, r)[b];
            __m256i a0 = dot4_at(_mm256_slli_epi32(_mm256_set1_epi32(xb.offset8), 4), u[0], xb.qs);
            __m256i a1 = dot4_at(_mm256_setzero_si256(), u[1], xb.qs + 4);
            for (int p = 2; p < 8; p += 2) {
                a0 = dot4_at(a0, u[p], xb.qs + 4 * p);
                a1 = dot4_at(a1, u[p + 1], xb.qs + 4 * p + 4);
            }
            sum[r] = add_block(sum[r], dw, xb.d, _mm256_add_epi32(a0, a1));
        }
    }
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(y + r * y_stride, sum[r]);
}

template <int R>
NLD_VNNI void q4_0_vnni(int64_t n, const void* wv, const void* x, size_t stride, float* y, int64_t y_stride) {
    const block_q4_0x8* w = static_cast<const block_q4_0x8*>(wv);
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256 sum[R];
    for (int r = 0; r < R; ++r) sum[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK4_0; ++b) {
        if (kPrefetchBytes > 0) prefetch_ahead(w + b);
        __m256i q[8];  // q[c]: elements 4c..4c+3 of each row; q[4 + c]: 16+4c..
        for (int c = 0; c < 4; ++c) {
            const __m256i raw = load32(w[b].qs + 32 * c);
            q[c] = _mm256_and_si256(raw, low4);
            q[4 + c] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4);
        }
        const __m256 dw = half8(w[b].d);
        for (int r = 0; r < R; ++r) {
            const block_q8_0s& xb = act_row<block_q8_0s>(x, stride, r)[b];
            // Weights stored as q + 8: the integer dot starts from -8 * sum(x).
            __m256i a0 = dot4_at(_mm256_set1_epi32(xb.offset8), q[0], xb.qs);
            __m256i a1 = dot4_at(_mm256_setzero_si256(), q[4], xb.qs + 16);
            for (int c = 1; c < 4; ++c) {
                a0 = dot4_at(a0, q[c], xb.qs + 4 * c);
                a1 = dot4_at(a1, q[4 + c], xb.qs + 16 + 4 * c);
            }
            sum[r] = add_block(sum[r], dw, xb.d, _mm256_add_epi32(a0, a1));
        }
    }
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(y + r * y_stride, sum[r]);
}

// 8 bytes at p (one per weight row) widened to the 8 i32 lanes.
NLD_VNNI inline __m256i lanes_u8(const uint8_t* p) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
NLD_VNNI inline __m256i lanes_i8(const int8_t* p) {
    return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

// Each piece unpacked right before its use (gemm_avx2.cpp's one-row stream
// schedule; here it also beats unpacking first for 2-4 rows).
template <int R>
NLD_VNNI void q4_k_vnni(int64_t n, const void* wv, const void* x, size_t stride, float* y, int64_t y_stride) {
    const block_q4_kx8* w = static_cast<const block_q4_kx8*>(wv);
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256 sum[R];
    for (int r = 0; r < R; ++r) sum[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; ++b) {
        if (kPrefetchBytes > 0) prefetch_ahead(w + b);
        __m256i isum[R];
        for (int r = 0; r < R; ++r) isum[r] = _mm256_setzero_si256();
        for (int c = 0; c < 4; ++c) {  // sub-blocks 2c (low nibbles) and 2c+1 (high nibbles)
            __m256i acc_lo[R], acc_hi[R];
            for (int r = 0; r < R; ++r) acc_lo[r] = acc_hi[r] = _mm256_setzero_si256();
            for (int t = 0; t < 8; ++t) {
                const __m256i raw = load32(w[b].qs + 256 * c + 32 * t);
                const __m256i lo = _mm256_and_si256(raw, low4);
                const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4);
                for (int r = 0; r < R; ++r) {
                    const int8_t* xq = act_row<block_q8_k>(x, stride, r)[b].qs + 64 * c + 4 * t;
                    acc_lo[r] = dot4_at(acc_lo[r], lo, xq);
                    acc_hi[r] = dot4_at(acc_hi[r], hi, xq + 32);
                }
            }
            const __m256i sc_lo = lanes_u8(w[b].scales + 8 * (2 * c)), sc_hi = lanes_u8(w[b].scales + 8 * (2 * c + 1));
            for (int r = 0; r < R; ++r)
                isum[r] = _mm256_add_epi32(isum[r], _mm256_add_epi32(_mm256_mullo_epi32(acc_lo[r], sc_lo),
                                                                     _mm256_mullo_epi32(acc_hi[r], sc_hi)));
        }
        for (int r = 0; r < R; ++r)
            sum[r] = _mm256_add_ps(sum[r], q4_k_term(w[b], act_row<block_q8_k>(x, stride, r)[b], isum[r]));
    }
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(y + r * y_stride, sum[r]);
}

// -32 times each 16-element group's activation sum (bsums) of a Q8_K block,
// as i32 at out[0..15]: where a Q6_K group's integer dot starts in
// q6_k_pair, so that it is the dot of the values (stored + 32) rather than
// of the stored bytes. (q6_k_vnni keeps q6_k_term's second sum: started
// this way, GCC spills its 256-bit row sums: 4 rows in cache 90 -> 77
// GMAC/s.)
NLD_VNNI inline void q6_k_starts(const block_q8_k& xb, int32_t* out) {
    for (int half = 0; half < 2; ++half) {
        const __m256i bsums =
            _mm256_cvtepi16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(xb.bsums + 8 * half)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8 * half),
                            _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(bsums, 5)));
    }
}

// Each piece's four values unpacked once, from one load of each of its ql
// and qh bytes (gemm_avx2.cpp's one-row stream schedule; here it also beats
// unpacking per use for 2-4 rows).
template <int R>
NLD_VNNI void q6_k_vnni(int64_t n, const void* wv, const void* x, size_t stride, float* y, int64_t y_stride) {
    const block_q6_kx8* w = static_cast<const block_q6_kx8*>(wv);
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256 sum[R];
    for (int r = 0; r < R; ++r) sum[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; ++b) {
        if (kPrefetchBytes > 0) prefetch_ahead(w + b);
        __m256i isum[R];
        for (int r = 0; r < R; ++r) isum[r] = _mm256_setzero_si256();
        for (int h = 0; h < 2; ++h) {
            for (int g = 0; g < 2; ++g) {  // pieces t = 4g..4g+3: one scale group per k
                __m256i q[4][4];           // [piece][k]
                for (int i = 0; i < 4; ++i) {
                    const int t = 4 * g + i;
                    const __m256i ql0 = load32(w[b].ql + 512 * h + 32 * t);
                    const __m256i ql1 = load32(w[b].ql + 512 * h + 256 + 32 * t);
                    const __m256i qh = load32(w[b].qh + 256 * h + 32 * t);
                    q[i][0] = q6_value(_mm256_and_si256(ql0, low4), qh, 0);
                    q[i][1] = q6_value(_mm256_and_si256(ql1, low4), qh, 1);
                    q[i][2] = q6_value(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4), qh, 2);
                    q[i][3] = q6_value(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4), qh, 3);
                }
                for (int k = 0; k < 4; ++k) {
                    const __m256i sc = lanes_i8(w[b].scales + 8 * (8 * h + 2 * k + g));
                    for (int r = 0; r < R; ++r) {
                        const int8_t* xq = act_row<block_q8_k>(x, stride, r)[b].qs + 128 * h + 32 * k + 16 * g;
                        const __m256i a0 = dot4_at(dot4_at(_mm256_setzero_si256(), q[0][k], xq), q[1][k], xq + 4);
                        const __m256i a1 = dot4_at(dot4_at(_mm256_setzero_si256(), q[2][k], xq + 8), q[3][k], xq + 12);
                        isum[r] = _mm256_add_epi32(isum[r], _mm256_mullo_epi32(_mm256_add_epi32(a0, a1), sc));
                    }
                }
            }
        }
        for (int r = 0; r < R; ++r)
            sum[r] = _mm256_add_ps(sum[r], q6_k_term(w[b], act_row<block_q8_k>(x, stride, r)[b], isum[r]));
    }
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(y + r * y_stride, sum[r]);
}

#ifndef NLD_VNNI_EMULATED
// Pairs of adjacent groups (16 weight rows: group g in lanes 0-7, g + 1 in
// lanes 8-15) on 512-bit registers: one vpdpbusd takes 64 products. On
// Zen 4 it issues half as often as a 256-bit one, so the products per cycle
// are the same; what the pairs save is half the other instructions per
// product (unpacking, scales, f32 terms), of which the multiplies (vmulps,
// vpmulld, vpdpwssd) take vpdpbusd's own slots (bench/pipe_probe.cpp). Lane
// by lane the same operations, so the same bits. (Test builds with
// NLD_VNNI_EMULATED have no pair table.)
#define NLD_VNNI512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

NLD_VNNI512 inline __m512i dot4_at16(__m512i acc, __m512i u, const int8_t* p) {
    using bytes4 = int32_t __attribute__((may_alias, aligned(1)));
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(u), "m"(*reinterpret_cast<const bytes4*>(p)));
    return acc;
}

// 32 bytes at a in the low half, 32 at b in the high half.
NLD_VNNI512 inline __m512i load_pair(const void* a, const void* b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(load32(a)), load32(b), 1);
}

// 8 bytes at a then 8 at b, one per lane (u8 or i8).
NLD_VNNI512 inline __m128i bytes_pair(const void* a, const void* b) {
    return _mm_unpacklo_epi64(_mm_loadl_epi64(static_cast<const __m128i*>(a)),
                              _mm_loadl_epi64(static_cast<const __m128i*>(b)));
}

NLD_VNNI512 inline __m512 half16(const fp16_bits* a, const fp16_bits* b) {
    const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a));
    const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b));
    const __m256i h = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
    return _mm512_cvtph_ps(h);
}

// (dw * dx) * isum on 16 lanes: a block's f32 term (add_block, x8_avx2.h).
NLD_VNNI512 inline __m512 block_term16(__m512 dw, float dx, __m512i isum) {
    return _mm512_mul_ps(_mm512_mul_ps(dw, _mm512_set1_ps(dx)), _mm512_cvtepi32_ps(isum));
}

// add_block (x8_avx2.h) on 16 lanes.
NLD_VNNI512 inline __m512 add_block16(__m512 sum, __m512 dw, float dx, __m512i isum) {
    return _mm512_add_ps(sum, block_term16(dw, dx, isum));
}

// The pair kernels read two groups at once, each as a stream: each asks
// for the lines kPairPrefetchBytes ahead in its own group and, past that
// group's end, in the group two ahead (g + 2 for g, g + 3 for g + 1: the
// next pair, read at the same time), so both streams of the next call are
// already on their way. One stream's lines are asked for before the
// other's, not alternately (Zen 4 VM, 8 rows, 2 threads, five alternating
// runs: Q6_K 34.7 -> 30.9 ms, Q4_0 19.8 -> 19.1, Q8_0 and Q4_K even).
// Two streams ask for twice the lines per step, so their lead is twice a
// single stream's (8 rows, 2 threads, against 8 KB, two alternating runs:
// Q4_K 23.1 -> 20.5 ms, Q6_K 31.0 -> 29.0, Q4_0 19.8 -> 18.8; Q8_0 22.1
// -> 23.2, within its run-to-run spread).
#ifndef NLD_PAIR_PREFETCH_BYTES
#define NLD_PAIR_PREFETCH_BYTES 16384
#endif
constexpr int kPairPrefetchBytes = NLD_PAIR_PREFETCH_BYTES;

template <typename B>
NLD_VNNI512 inline void prefetch_pair(const B* w0, int64_t b, int64_t n_blocks) {
    const size_t group = (size_t)n_blocks * sizeof(B), at = (size_t)b * sizeof(B) + kPairPrefetchBytes;
    const char* p = reinterpret_cast<const char*>(w0) + at + (at >= group ? group : 0);
    for (size_t off = 0; off < sizeof(B); off += 64) _mm_prefetch(p + off, _MM_HINT_T1);
    for (size_t off = 0; off < sizeof(B); off += 64) _mm_prefetch(p + group + off, _MM_HINT_T1);
}

template <int R>
NLD_VNNI512 void q8_0_pair(int64_t n, const void* wv, const void* x, size_t stride, float* y, int64_t y_stride) {
    const block_q8_0x8* w0 = static_cast<const block_q8_0x8*>(wv);
    const block_q8_0x8* w1 = w0 + n / QK8_0;  // the next group
    const __m512i top_bit = _mm512_set1_epi8((char)0x80);
    __m512 sum[R];
    for (int r = 0; r < R; ++r) sum[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < n / QK8_0; ++b) {
        if (kPairPrefetchBytes > 0) prefetch_pair(w0, b, w1 - w0);
        __m512i u[8];
        for (int p = 0; p < 8; ++p) u[p] = _mm512_xor_si512(load_pair(w0[b].qs + 32 * p, w1[b].qs + 32 * p), top_bit);
        const __m512 dw = half16(w0[b].d, w1[b].d);
        for (int r = 0; r < R; ++r) {
            const block_q8_0s& xb = act_row<block_q8_0s>(x, stride, r)[b];
            __m512i a = _mm512_slli_epi32(_mm512_set1_epi32(xb.offset8), 4);
            for (int p = 0; p < 8; ++p) a = dot4_at16(a, u[p], xb.qs + 4 * p);
            sum[r] = add_block16(sum[r], dw, xb.d, a);
        }
    }
    for (int r = 0; r < R; ++r) _mm512_storeu_ps(y + r * y_stride, sum[r]);
}

template <int R>
NLD_VNNI512 void q4_0_pair(int64_t n, const void* wv, const void* x, size_t stride, float* y, int64_t y_stride) {
    const block_q4_0x8* w0 = static_cast<const block_q4_0x8*>(wv);
    const block_q4_0x8* w1 = w0 + n / QK4_0;
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    __m512 sum[R];
    for (int r = 0; r < R; ++r) sum[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < n / QK4_0; ++b) {
        if (kPairPrefetchBytes > 0) prefetch_pair(w0, b, w1 - w0);
        __m512i q[8];
        for (int c = 0; c < 4; ++c) {
            const __m512i raw = load_pair(w0[b].qs + 32 * c, w1[b].qs + 32 * c);
            q[c] = _mm512_and_si512(raw, low4);
            q[4 + c] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low4);
        }
        const __m512 dw = half16(w0[b].d, w1[b].d);
        for (int r = 0; r < R; ++r) {
            const block_q8_0s& xb = act_row<block_q8_0s>(x, stride, r)[b];
            __m512i a = _mm512_set1_epi32(xb.offset8);
            for (int c = 0; c < 8; ++c) a = dot4_at16(a, q[c], xb.qs + 4 * c);  // q[c]: elements 4c..4c+3
            sum[r] = add_block16(sum[r], dw, xb.d, a);
        }
    }
    for (int r = 0; r < R; ++r) _mm512_storeu_ps(y + r * y_stride, sum[r]);
}

// The f32 sums of R rows of a K-quant pair kernel, each added to once per
// super-block: in registers up to 8 rows; past that in an L1 array, so the
// registers hold the R integer sums and the unpacked weights (16 rows would
// need 32 registers for the two kinds of sums alone). The same adds either way.
template <int R>
struct row_sums {
    static constexpr bool kInMemory = R > 8;
    __m512 reg[kInMemory ? 1 : R];
    alignas(64) float mem[kInMemory ? R : 1][16];

    NLD_VNNI512 row_sums() {
        for (int r = 0; r < R; ++r) {
            if constexpr (kInMemory)
                _mm512_store_ps(mem[r], _mm512_setzero_ps());
            else
                reg[r] = _mm512_setzero_ps();
        }
    }
    NLD_VNNI512 void add(int r, __m512 v) {
        if constexpr (kInMemory)
            _mm512_store_ps(mem[r], _mm512_add_ps(_mm512_load_ps(mem[r]), v));
        else
            reg[r] = _mm512_add_ps(reg[r], v);
    }
    NLD_VNNI512 void store(float* y, int64_t y_stride) const {
        for (int r = 0; r < R; ++r)
            _mm512_storeu_ps(y + r * y_stride, kInMemory ? _mm512_load_ps(mem[r]) : reg[r]);
    }
};

// The weight side of two groups' Q4_K super-block terms, for all rows: the
// scales d and dmin, and the mins as i16 pairs (mins_pairs[p], lane j: the
// mins of sub-blocks 2p and 2p+1 of row j).
struct q4_k_sides16 {
    __m512 d, dmin;
    __m512i mins_pairs[4];
};

NLD_VNNI512 inline q4_k_sides16 q4_k_sides(const block_q4_kx8& w0, const block_q4_kx8& w1) {
    q4_k_sides16 s;
    s.d = half16(w0.d, w1.d);
    s.dmin = half16(w0.dmin, w1.dmin);
    for (int p = 0; p < 4; ++p)
        s.mins_pairs[p] = _mm512_cvtepu8_epi16(_mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w0.mins + 16 * p))),
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(w1.mins + 16 * p)), 1));
    return s;
}

// q4_k_term (x8_avx2.h) on 16 lanes, the mins summed by vpdpwssd against
// the row's sub-block sums (pairs of bsums) broadcast to every lane.
NLD_VNNI512 inline __m512 q4_k_term16(const q4_k_sides16& s, const block_q8_k& xb, __m512i isum) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xb.bsums));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xb.bsums + 8));
    const __m512i ps = _mm512_broadcast_i32x4(_mm_hadd_epi16(a, b));  // element p: sub-blocks 2p, 2p+1
    __m512i msum = _mm512_setzero_si512();
    msum = _mm512_dpwssd_epi32(msum, s.mins_pairs[0], _mm512_shuffle_epi32(ps, _MM_PERM_AAAA));
    msum = _mm512_dpwssd_epi32(msum, s.mins_pairs[1], _mm512_shuffle_epi32(ps, _MM_PERM_BBBB));
    msum = _mm512_dpwssd_epi32(msum, s.mins_pairs[2], _mm512_shuffle_epi32(ps, _MM_PERM_CCCC));
    msum = _mm512_dpwssd_epi32(msum, s.mins_pairs[3], _mm512_shuffle_epi32(ps, _MM_PERM_DDDD));
    const __m512 xd = _mm512_set1_ps(xb.d);
    return _mm512_sub_ps(_mm512_mul_ps(_mm512_mul_ps(s.d, xd), _mm512_cvtepi32_ps(isum)),
                         _mm512_mul_ps(_mm512_mul_ps(s.dmin, xd), _mm512_cvtepi32_ps(msum)));
}

template <int R>
NLD_VNNI512 void q4_k_pair(int64_t n, const void* wv, const void* x, size_t stride, float* y, int64_t y_stride) {
    const block_q4_kx8* w0 = static_cast<const block_q4_kx8*>(wv);
    const block_q4_kx8* w1 = w0 + n / QK_K;
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    row_sums<R> sum;
    for (int64_t b = 0; b < n / QK_K; ++b) {
        if (kPairPrefetchBytes > 0) prefetch_pair(w0, b, w1 - w0);
        __m512i isum[R];
        for (int r = 0; r < R; ++r) isum[r] = _mm512_setzero_si512();
        for (int s = 0; s < 8; ++s) {
            const int c = s / 2;
            __m512i q[8];
            for (int t = 0; t < 8; ++t) {
                const __m512i raw = load_pair(w0[b].qs + 256 * c + 32 * t, w1[b].qs + 256 * c + 32 * t);
                q[t] = _mm512_and_si512(s % 2 ? _mm512_srli_epi16(raw, 4) : raw, low4);
            }
            const __m512i sc = _mm512_cvtepu8_epi32(bytes_pair(w0[b].scales + 8 * s, w1[b].scales + 8 * s));
            for (int r = 0; r < R; ++r) {
                const int8_t* xq = act_row<block_q8_k>(x, stride, r)[b].qs + 32 * s;
                __m512i a = dot4_at16(_mm512_setzero_si512(), q[0], xq);
                for (int t = 1; t < 8; ++t) a = dot4_at16(a, q[t], xq + 4 * t);
                isum[r] = _mm512_add_epi32(isum[r], _mm512_mullo_epi32(a, sc));
            }
        }
        const q4_k_sides16 sides = q4_k_sides(w0[b], w1[b]);
        for (int r = 0; r < R; ++r) sum.add(r, q4_k_term16(sides, act_row<block_q8_k>(x, stride, r)[b], isum[r]));
    }
    sum.store(y, y_stride);
}

// q6_value (x8_avx2.h) on 512-bit registers.
NLD_VNNI512 inline __m512i q6_value16(__m512i low_bits, __m512i qh, int k) {
    const __m512i placed = k == 0 ? _mm512_slli_epi16(qh, 4)
                         : k == 1 ? _mm512_slli_epi16(qh, 2)
                         : k == 2 ? qh
                                  : _mm512_srli_epi16(qh, 2);
    return _mm512_or_si512(low_bits, _mm512_and_si512(placed, _mm512_set1_epi8(0x30)));
}

// Each 16-element group's four pieces are unpacked right before its rows
// (loaded again from L1 for each k): fewer live registers than unpacking
// a (h, g) set once for all k, which spills the row sums (Zen 4 VM, in
// cache: 131 against 123 GMAC/s on one thread).
// The stored values are q + 32 (0..63). Each group's integer dot starts
// from -32 times the group's sum of activations (its bsum), so it is the dot
// of q itself; its scale multiplies it as is. The sum over the super-block
// is the integer q6_k_term computes as isum - 32 * sum(scale * bsum), so the
// result is the same (its f32 term is then block_term16 of that integer),
// without that second sum's 8 vpdpwssd per row, which take the products'
// slots. (|dot of q| <= 16 * 32 * 127, times a scale of
// at most 128, 16 groups: below 2^31.)
template <int R>
NLD_VNNI512 void q6_k_pair(int64_t n, const void* wv, const void* x, size_t stride, float* y, int64_t y_stride) {
    const block_q6_kx8* w0 = static_cast<const block_q6_kx8*>(wv);
    const block_q6_kx8* w1 = w0 + n / QK_K;
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    row_sums<R> sum;
    for (int64_t b = 0; b < n / QK_K; ++b) {
        if (kPairPrefetchBytes > 0) prefetch_pair(w0, b, w1 - w0);
        __m512i isum[R];
        alignas(64) int32_t start[R][QK_K / 16];
        for (int r = 0; r < R; ++r) {
            isum[r] = _mm512_setzero_si512();
            q6_k_starts(act_row<block_q8_k>(x, stride, r)[b], start[r]);
        }
        for (int h = 0; h < 2; ++h)
            for (int g = 0; g < 2; ++g)
                for (int k = 0; k < 4; ++k) {
                    __m512i q[4];
                    for (int i = 0; i < 4; ++i) {
                        const int t = 4 * g + i;
                        const int ql_at = 512 * h + 256 * (k % 2) + 32 * t, qh_at = 256 * h + 32 * t;
                        const __m512i ql = load_pair(w0[b].ql + ql_at, w1[b].ql + ql_at);
                        const __m512i qh = load_pair(w0[b].qh + qh_at, w1[b].qh + qh_at);
                        q[i] = q6_value16(_mm512_and_si512(k < 2 ? ql : _mm512_srli_epi16(ql, 4), low4), qh, k);
                    }
                    const int group = 8 * h + 2 * k + g;  // elements 16 * group ..
                    const __m512i sc =
                        _mm512_cvtepi8_epi32(bytes_pair(w0[b].scales + 8 * group, w1[b].scales + 8 * group));
                    for (int r = 0; r < R; ++r) {
                        const int8_t* xq = act_row<block_q8_k>(x, stride, r)[b].qs + 16 * group;
                        __m512i a = dot4_at16(_mm512_set1_epi32(start[r][group]), q[0], xq);
                        for (int i = 1; i < 4; ++i) a = dot4_at16(a, q[i], xq + 4 * i);
                        isum[r] = _mm512_add_epi32(isum[r], _mm512_mullo_epi32(a, sc));
                    }
                }
        const __m512 d = half16(w0[b].d, w1[b].d);
        for (int r = 0; r < R; ++r) sum.add(r, block_term16(d, act_row<block_q8_k>(x, stride, r)[b].d, isum[r]));
    }
    sum.store(y, y_stride);
}
#endif  // NLD_VNNI_EMULATED

}  // namespace

namespace {
constexpr gemm_x8_fn one_group_q8_0 = all_rows<q8_0_vnni<4>, q8_0_vnni<3>, q8_0_vnni<2>, q8_0_vnni<1>>;
constexpr gemm_x8_fn one_group_q4_0 = all_rows<q4_0_vnni<4>, q4_0_vnni<3>, q4_0_vnni<2>, q4_0_vnni<1>>;
constexpr gemm_x8_fn one_group_q4_k = all_rows<q4_k_vnni<4>, q4_k_vnni<3>, q4_k_vnni<2>, q4_k_vnni<1>>;
constexpr gemm_x8_fn one_group_q6_k = all_rows<q6_k_vnni<4>, q6_k_vnni<3>, q6_k_vnni<2>, q6_k_vnni<1>>;
}  // namespace

const x8_kernels avx512_vnni_x8_kernels = {one_group_q8_0, one_group_q4_0, one_group_q4_k, one_group_q6_k};

#ifdef NLD_VNNI_EMULATED
const x8_kernels* const avx512_vnni_pair_kernels = nullptr;
#else
namespace {

// A pair-table entry: (where P16 is given) passes of 16 rows through P16
// over both groups, passes of 8 through P8, then (where P4 is given) passes
// of 4 through P4, the remaining rows through the one-group kernel S, group
// by group. For 4 rows the 256-bit kernels beat the 512-bit ones except
// with Q4_0 (Zen 4 VM, 2 threads: Q4_0 0.87x the time, Q4_K 1.15x, Q6_K
// 1.55x, Q8_0 even), so only Q4_0 has a P4. Passes of 16 share each block's
// unpacking between twice the rows; the Q8_0 and Q4_0 kernels' 16 row sums
// and 8 weight registers fit in 32 (Zen 4 VM, 2 threads, best of 6-10,
// alternating: 32 rows Q8_0 85.6 -> 78.6 ms, Q4_0 75.9 -> 72.3; 64 rows
// Q8_0 145 -> 138, Q4_0 154 -> 142). Q4_K's 16-row passes keep their f32
// sums in L1 (row_sums): from memory 32 rows 82-95 -> 73-97 ms and 64 rows
// 152-184 -> 156-168 ms over five alternating pairs each, 4 of 5 faster;
// even in cache (one thread, about 150 GMAC/s both). Q6_K's were even or
// slower (in cache 139 -> 130 GMAC/s at best), so it keeps passes of 8.
template <typename B, int QK, rows_pass_fn<16> P16, rows_pass_fn<8> P8, rows_pass_fn<4> P4, gemm_x8_fn S>
void pair_rows(int64_t n, const void* w, const void* x, size_t x_stride, int64_t n_rows, float* y, int64_t y_stride) {
    const uint8_t* xb = static_cast<const uint8_t*>(x);
    int64_t r = 0;
    if constexpr (P16 != nullptr)
        for (; r + 16 <= n_rows; r += 16) P16(n, w, xb + (size_t)r * x_stride, x_stride, y + r * y_stride, y_stride);
    for (; r + 8 <= n_rows; r += 8) P8(n, w, xb + (size_t)r * x_stride, x_stride, y + r * y_stride, y_stride);
    if constexpr (P4 != nullptr)
        for (; r + 4 <= n_rows; r += 4) P4(n, w, xb + (size_t)r * x_stride, x_stride, y + r * y_stride, y_stride);
    if (r == n_rows) return;
    S(n, w, xb + (size_t)r * x_stride, x_stride, n_rows - r, y + r * y_stride, y_stride);
    S(n, static_cast<const B*>(w) + n / QK, xb + (size_t)r * x_stride, x_stride, n_rows - r,
      y + r * y_stride + kGroupRows, y_stride);
}

const x8_kernels pair_table = {
    pair_rows<block_q8_0x8, QK8_0, q8_0_pair<16>, q8_0_pair<8>, nullptr, one_group_q8_0>,
    pair_rows<block_q4_0x8, QK4_0, q4_0_pair<16>, q4_0_pair<8>, q4_0_pair<4>, one_group_q4_0>,
    pair_rows<block_q4_kx8, QK_K, q4_k_pair<16>, q4_k_pair<8>, nullptr, one_group_q4_k>,
    pair_rows<block_q6_kx8, QK_K, nullptr, q6_k_pair<8>, nullptr, one_group_q6_k>,
};

}  // namespace
const x8_kernels* const avx512_vnni_pair_kernels = &pair_table;
#endif

}  // namespace nld

#endif  // NLD_HAVE_AVX2_PATH
