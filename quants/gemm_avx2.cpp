// gemm_avx2.cpp: AVX2 kernels for x8 weights (repack.h): one group of 8
// weight rows against R activation rows (R <= 4 per pass). Lane j of every
// accumulator belongs to weight row j, so 8 outputs leave in one store. The
// integer part of each block (or super-block) is exact; the f32 part applies
// the reference's operations (quants.cpp) in its order, lane by lane, with
// separate multiplies and adds, so each output equals the scalar reference
// bit for bit. Products: maddubs (u8 x i8 -> i16 pairs) with the weight as
// the unsigned side (Q4_0 stored as q in 0..15, Q4_K 0..15, Q6_K 0..63; Q8_0
// via |w| and the activation with w's sign), summed in i16 only as far as
// they cannot overflow, then madd into i32.
#include "quants/dot.h"

#ifdef NLD_HAVE_AVX2_PATH

#include "quants/row_passes.h"
#include "quants/x8_avx2.h"

namespace nld {

namespace {

template <int R>
NLD_AVX2 void q8_0_x8(int64_t n, const void* wv, const void* x, size_t stride, float* y, int64_t y_stride) {
    const block_q8_0x8* w = static_cast<const block_q8_0x8*>(wv);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 sum[R];
    for (int r = 0; r < R; ++r) sum[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK8_0; ++b) {
        if (kPrefetchBytes > 0) prefetch_ahead(w + b);
        __m256i isum[R];
        for (int r = 0; r < R; ++r) isum[r] = _mm256_setzero_si256();
        for (int p = 0; p < QK8_0 / 4; ++p) {
            const __m256i q = load32(w[b].qs + 32 * p);
            const __m256i abs_q = _mm256_sign_epi8(q, q);
            for (int r = 0; r < R; ++r) {
                const __m256i xs = _mm256_sign_epi8(bcast4(act_row<block_q8_0s>(x, stride, r)[b].qs + 4 * p), q);
                isum[r] = _mm256_add_epi32(isum[r], _mm256_madd_epi16(_mm256_maddubs_epi16(abs_q, xs), ones));
            }
        }
        const __m256 dw = half8(w[b].d);
        for (int r = 0; r < R; ++r) sum[r] = add_block(sum[r], dw, act_row<block_q8_0s>(x, stride, r)[b].d, isum[r]);
    }
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(y + r * y_stride, sum[r]);
}

// One row's Q4_0 block term from its i16 pair sums acc16 (weights stored as
// q + 8): the integer dot is madd(acc16, 1) - 8 * sum(x).
NLD_AVX2 inline __m256 add_q4_0_block(__m256 sum, __m256 dw, const block_q8_0s& xb, __m256i acc16) {
    const __m256i isum =
        _mm256_add_epi32(_mm256_madd_epi16(acc16, _mm256_set1_epi16(1)), _mm256_set1_epi32(xb.offset8));
    return add_block(sum, dw, xb.d, isum);
}

// One activation row (decode): the weight stream is the bound, and these
// schedules (Q4_0/Q4_K: each piece unpacked right before its use; Q6_K: each
// piece unpacked once for its four uses) keep more loads in flight and spend
// fewer instructions per byte than the multi-row schedules below (measured:
// 20 vs 17 GB/s on 2 threads). Same arithmetic, same results.
template <int R>
NLD_AVX2 void q4_0_x8_stream(int64_t n, const void* wv, const void* x, size_t stride, float* y, int64_t y_stride) {
    const block_q4_0x8* w = static_cast<const block_q4_0x8*>(wv);
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256 sum[R];
    for (int r = 0; r < R; ++r) sum[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK4_0; ++b) {
        if (kPrefetchBytes > 0) prefetch_ahead(w + b);
        // i16 lanes: 8 maddubs pairs of at most 2 * 15 * 127 each: |sum| <= 30480.
        __m256i acc[R];
        for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_si256();
        for (int c = 0; c < 4; ++c) {
            const __m256i raw = load32(w[b].qs + 32 * c);
            const __m256i lo = _mm256_and_si256(raw, low4);                     // elements 4c..4c+3
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4);  // elements 16+4c..
            for (int r = 0; r < R; ++r) {
                const int8_t* xq = act_row<block_q8_0s>(x, stride, r)[b].qs;
                acc[r] = _mm256_add_epi16(acc[r], _mm256_add_epi16(_mm256_maddubs_epi16(lo, bcast4(xq + 4 * c)),
                                                                   _mm256_maddubs_epi16(hi, bcast4(xq + 16 + 4 * c))));
            }
        }
        const __m256 dw = half8(w[b].d);
        for (int r = 0; r < R; ++r) sum[r] = add_q4_0_block(sum[r], dw, act_row<block_q8_0s>(x, stride, r)[b], acc[r]);
    }
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(y + r * y_stride, sum[r]);
}

template <int R>
NLD_AVX2 void q4_k_x8_stream(int64_t n, const void* wv, const void* x, size_t stride, float* y, int64_t y_stride) {
    const block_q4_kx8* w = static_cast<const block_q4_kx8*>(wv);
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256 sum[R];
    for (int r = 0; r < R; ++r) sum[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; ++b) {
        if (kPrefetchBytes > 0) prefetch_ahead(w + b);
        __m256i isum[R];
        for (int r = 0; r < R; ++r) isum[r] = _mm256_setzero_si256();
        for (int c = 0; c < 4; ++c) {  // sub-blocks 2c (low nibbles) and 2c+1 (high nibbles)
            __m256i acc_lo[R], acc_hi[R];  // 8 pairs of at most 2 * 15 * 127: |sum| <= 30480
            for (int r = 0; r < R; ++r) acc_lo[r] = acc_hi[r] = _mm256_setzero_si256();
            for (int t = 0; t < 8; ++t) {
                const __m256i raw = load32(w[b].qs + 256 * c + 32 * t);
                const __m256i lo = _mm256_and_si256(raw, low4);
                const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4);
                for (int r = 0; r < R; ++r) {
                    const int8_t* xq = act_row<block_q8_k>(x, stride, r)[b].qs + 64 * c + 4 * t;
                    acc_lo[r] = _mm256_add_epi16(acc_lo[r], _mm256_maddubs_epi16(lo, bcast4(xq)));
                    acc_hi[r] = _mm256_add_epi16(acc_hi[r], _mm256_maddubs_epi16(hi, bcast4(xq + 32)));
                }
            }
            const __m256i sc_lo = dup8_u8(w[b].scales + 8 * (2 * c)), sc_hi = dup8_u8(w[b].scales + 8 * (2 * c + 1));
            for (int r = 0; r < R; ++r)
                isum[r] = _mm256_add_epi32(isum[r], _mm256_add_epi32(_mm256_madd_epi16(acc_lo[r], sc_lo),
                                                                     _mm256_madd_epi16(acc_hi[r], sc_hi)));
        }
        for (int r = 0; r < R; ++r)
            sum[r] = _mm256_add_ps(sum[r], q4_k_term(w[b], act_row<block_q8_k>(x, stride, r)[b], isum[r]));
    }
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(y + r * y_stride, sum[r]);
}

template <int R>
NLD_AVX2 void q6_k_x8_stream(int64_t n, const void* wv, const void* x, size_t stride, float* y, int64_t y_stride) {
    const block_q6_kx8* w = static_cast<const block_q6_kx8*>(wv);
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256 sum[R];
    for (int r = 0; r < R; ++r) sum[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; ++b) {
        if (kPrefetchBytes > 0) prefetch_ahead(w + b);
        __m256i isum[R];
        for (int r = 0; r < R; ++r) isum[r] = _mm256_setzero_si256();
        for (int h = 0; h < 2; ++h) {
            for (int tp = 0; tp < 4; ++tp) {  // pieces t = 2tp, 2tp+1: 8 elements of one scale group
                __m256i q[2][4];
                for (int i = 0; i < 2; ++i) {
                    const int t = 2 * tp + i;
                    const __m256i ql0 = load32(w[b].ql + 512 * h + 32 * t);
                    const __m256i ql1 = load32(w[b].ql + 512 * h + 256 + 32 * t);
                    const __m256i qh = load32(w[b].qh + 256 * h + 32 * t);
                    q[i][0] = q6_value(_mm256_and_si256(ql0, low4), qh, 0);
                    q[i][1] = q6_value(_mm256_and_si256(ql1, low4), qh, 1);
                    q[i][2] = q6_value(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4), qh, 2);
                    q[i][3] = q6_value(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4), qh, 3);
                }
                for (int k = 0; k < 4; ++k) {
                    const __m256i sc = dup8_i8(w[b].scales + 8 * (8 * h + 2 * k + tp / 2));
                    for (int r = 0; r < R; ++r) {
                        // 2 pairs of at most 2 * 63 * 127: |sum| <= 32004.
                        const int8_t* xq = act_row<block_q8_k>(x, stride, r)[b].qs + 128 * h + 32 * k + 8 * tp;
                        const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(q[0][k], bcast4(xq)),
                                                           _mm256_maddubs_epi16(q[1][k], bcast4(xq + 4)));
                        isum[r] = _mm256_add_epi32(isum[r], _mm256_madd_epi16(p, sc));
                    }
                }
            }
        }
        for (int r = 0; r < R; ++r)
            sum[r] = _mm256_add_ps(sum[r], q6_k_term(w[b], act_row<block_q8_k>(x, stride, r)[b], isum[r]));
    }
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(y + r * y_stride, sum[r]);
}

// Several activation rows: each block is unpacked once into registers, then
// every row runs through it (fewer live registers than one accumulator
// pair per row, so no spills).
template <int R>
NLD_AVX2 void q4_0_x8(int64_t n, const void* wv, const void* x, size_t stride, float* y, int64_t y_stride) {
    const block_q4_0x8* w = static_cast<const block_q4_0x8*>(wv);
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256 sum[R];
    for (int r = 0; r < R; ++r) sum[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK4_0; ++b) {
        if (kPrefetchBytes > 0) prefetch_ahead(w + b);
        // q[c]: elements 4c..4c+3 of each row (low nibbles of piece c); q[4 + c]: 16+4c.. (high).
        __m256i q[8];
        for (int c = 0; c < 4; ++c) {
            const __m256i raw = load32(w[b].qs + 32 * c);
            q[c] = _mm256_and_si256(raw, low4);
            q[4 + c] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4);
        }
        const __m256 dw = half8(w[b].d);
        for (int r = 0; r < R; ++r) {
            const block_q8_0s& xb = act_row<block_q8_0s>(x, stride, r)[b];
            // i16 lanes: 8 maddubs pairs of at most 2 * 15 * 127 each: |sum| <= 30480.
            __m256i a0 = _mm256_maddubs_epi16(q[0], bcast4(xb.qs));
            __m256i a1 = _mm256_maddubs_epi16(q[4], bcast4(xb.qs + 16));
            for (int c = 1; c < 4; ++c) {
                a0 = _mm256_add_epi16(a0, _mm256_maddubs_epi16(q[c], bcast4(xb.qs + 4 * c)));
                a1 = _mm256_add_epi16(a1, _mm256_maddubs_epi16(q[4 + c], bcast4(xb.qs + 16 + 4 * c)));
            }
            sum[r] = add_q4_0_block(sum[r], dw, xb, _mm256_add_epi16(a0, a1));
        }
    }
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(y + r * y_stride, sum[r]);
}

template <int R>
NLD_AVX2 void q4_k_x8(int64_t n, const void* wv, const void* x, size_t stride, float* y, int64_t y_stride) {
    const block_q4_kx8* w = static_cast<const block_q4_kx8*>(wv);
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256 sum[R];
    for (int r = 0; r < R; ++r) sum[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; ++b) {
        if (kPrefetchBytes > 0) prefetch_ahead(w + b);
        __m256i isum[R];
        for (int r = 0; r < R; ++r) isum[r] = _mm256_setzero_si256();
        for (int s = 0; s < 8; ++s) {  // sub-block s: chunk s / 2, low nibbles for even s, high for odd
            const int c = s / 2;
            __m256i q[8];
            for (int t = 0; t < 8; ++t) {
                const __m256i raw = load32(w[b].qs + 256 * c + 32 * t);
                q[t] = _mm256_and_si256(s % 2 ? _mm256_srli_epi16(raw, 4) : raw, low4);
            }
            const __m256i sc = dup8_u8(w[b].scales + 8 * s);
            for (int r = 0; r < R; ++r) {
                // 8 pairs of at most 2 * 15 * 127 each: |sum| <= 30480.
                const int8_t* xq = act_row<block_q8_k>(x, stride, r)[b].qs + 32 * s;
                __m256i a0 = _mm256_maddubs_epi16(q[0], bcast4(xq));
                __m256i a1 = _mm256_maddubs_epi16(q[1], bcast4(xq + 4));
                for (int t = 2; t < 8; t += 2) {
                    a0 = _mm256_add_epi16(a0, _mm256_maddubs_epi16(q[t], bcast4(xq + 4 * t)));
                    a1 = _mm256_add_epi16(a1, _mm256_maddubs_epi16(q[t + 1], bcast4(xq + 4 * t + 4)));
                }
                isum[r] = _mm256_add_epi32(isum[r], _mm256_madd_epi16(_mm256_add_epi16(a0, a1), sc));
            }
        }
        for (int r = 0; r < R; ++r)
            sum[r] = _mm256_add_ps(sum[r], q4_k_term(w[b], act_row<block_q8_k>(x, stride, r)[b], isum[r]));
    }
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(y + r * y_stride, sum[r]);
}

template <int R>
NLD_AVX2 void q6_k_x8(int64_t n, const void* wv, const void* x, size_t stride, float* y, int64_t y_stride) {
    const block_q6_kx8* w = static_cast<const block_q6_kx8*>(wv);
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256 sum[R];
    for (int r = 0; r < R; ++r) sum[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; ++b) {
        if (kPrefetchBytes > 0) prefetch_ahead(w + b);
        __m256i isum[R];
        for (int r = 0; r < R; ++r) isum[r] = _mm256_setzero_si256();
        for (int h = 0; h < 2; ++h) {
            for (int tp = 0; tp < 4; ++tp) {  // pieces t = 2tp, 2tp+1: 8 elements of one scale group
                for (int k = 0; k < 4; ++k) {
                    __m256i q[2];
                    for (int i = 0; i < 2; ++i) {
                        const int t = 2 * tp + i;
                        const __m256i ql = load32(w[b].ql + 512 * h + 256 * (k % 2) + 32 * t);
                        const __m256i qh = load32(w[b].qh + 256 * h + 32 * t);
                        const __m256i low = _mm256_and_si256(k < 2 ? ql : _mm256_srli_epi16(ql, 4), low4);
                        q[i] = q6_value(low, qh, k);
                    }
                    const __m256i sc = dup8_i8(w[b].scales + 8 * (8 * h + 2 * k + tp / 2));
                    for (int r = 0; r < R; ++r) {
                        // 2 pairs of at most 2 * 63 * 127: |sum| <= 32004.
                        const int8_t* xq = act_row<block_q8_k>(x, stride, r)[b].qs + 128 * h + 32 * k + 8 * tp;
                        const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(q[0], bcast4(xq)),
                                                           _mm256_maddubs_epi16(q[1], bcast4(xq + 4)));
                        isum[r] = _mm256_add_epi32(isum[r], _mm256_madd_epi16(p, sc));
                    }
                }
            }
        }
        for (int r = 0; r < R; ++r)
            sum[r] = _mm256_add_ps(sum[r], q6_k_term(w[b], act_row<block_q8_k>(x, stride, r)[b], isum[r]));
    }
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(y + r * y_stride, sum[r]);
}

}  // namespace

const x8_kernels avx2_x8_kernels = {
    all_rows<q8_0_x8<4>, q8_0_x8<3>, q8_0_x8<2>, q8_0_x8<1>>,
    all_rows<q4_0_x8<4>, q4_0_x8<3>, q4_0_x8<2>, q4_0_x8_stream<1>>,
    all_rows<q4_k_x8<4>, q4_k_x8<3>, q4_k_x8<2>, q4_k_x8_stream<1>>,
    all_rows<q6_k_x8<4>, q6_k_x8<3>, q6_k_x8<2>, q6_k_x8_stream<1>>,
};

}  // namespace nld

#endif  // NLD_HAVE_AVX2_PATH
