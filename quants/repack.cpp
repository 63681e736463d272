// repack.cpp: the x8 layout of repack.h (plain scalar code; it runs once per
// weight at load).
#include "quants/repack.h"

#include <cstring>

namespace nld {

namespace {

constexpr int32_t kQ4_0 = 2, kQ8_0 = 8, kQ4_K = 12, kQ6_K = 14;  // ggml type ids

template <typename Block>
const Block& block_of(const uint8_t* src, uint64_t row_bytes, int64_t row, int64_t b) {
    return reinterpret_cast<const Block*>(src + (uint64_t)row * row_bytes)[b];
}

// Piece p (4 bytes at src + 4p) of row j goes to dst + 32p + 4j.
void interleave_pieces(const uint8_t* src, int n_pieces, int j, uint8_t* dst) {
    for (int p = 0; p < n_pieces; ++p) std::memcpy(dst + 32 * p + 4 * j, src + 4 * p, 4);
}

void group_q8_0(const uint8_t* src, uint64_t rb, int64_t g, int64_t nb, block_q8_0x8* out) {
    for (int64_t b = 0; b < nb; ++b)
        for (int j = 0; j < kGroupRows; ++j) {
            const block_q8_0& in = block_of<block_q8_0>(src, rb, 8 * g + j, b);
            out[b].d[j] = in.d;
            interleave_pieces(reinterpret_cast<const uint8_t*>(in.qs), QK8_0 / 4, j,
                              reinterpret_cast<uint8_t*>(out[b].qs));
        }
}

void group_q4_0(const uint8_t* src, uint64_t rb, int64_t g, int64_t nb, block_q4_0x8* out) {
    for (int64_t b = 0; b < nb; ++b)
        for (int j = 0; j < kGroupRows; ++j) {
            const block_q4_0& in = block_of<block_q4_0>(src, rb, 8 * g + j, b);
            out[b].d[j] = in.d;
            interleave_pieces(in.qs, QK4_0 / 8, j, out[b].qs);
        }
}

void group_q4_k(const uint8_t* src, uint64_t rb, int64_t g, int64_t nb, block_q4_kx8* out) {
    for (int64_t b = 0; b < nb; ++b)
        for (int j = 0; j < kGroupRows; ++j) {
            const block_q4_k& in = block_of<block_q4_k>(src, rb, 8 * g + j, b);
            out[b].d[j] = in.d;
            out[b].dmin[j] = in.dmin;
            for (int s = 0; s < 8; ++s) {
                uint8_t sc, m;
                q4_k_scale_min(in.scales, s, &sc, &m);
                out[b].scales[8 * s + j] = sc;
                out[b].mins[16 * (s / 2) + 2 * j + s % 2] = m;
            }
            for (int c = 0; c < 4; ++c) interleave_pieces(in.qs + 32 * c, 8, j, out[b].qs + 256 * c);
        }
}

void group_q6_k(const uint8_t* src, uint64_t rb, int64_t g, int64_t nb, block_q6_kx8* out) {
    for (int64_t b = 0; b < nb; ++b)
        for (int j = 0; j < kGroupRows; ++j) {
            const block_q6_k& in = block_of<block_q6_k>(src, rb, 8 * g + j, b);
            out[b].d[j] = in.d;
            for (int s = 0; s < 16; ++s) out[b].scales[8 * s + j] = in.scales[s];
            for (int h = 0; h < 2; ++h) {
                for (int k2 = 0; k2 < 2; ++k2)
                    interleave_pieces(in.ql + 64 * h + 32 * k2, 8, j, out[b].ql + 512 * h + 256 * k2);
                interleave_pieces(in.qh + 32 * h, 8, j, out[b].qh + 256 * h);
            }
        }
}

}  // namespace

bool has_x8_layout(int32_t t) { return t == kQ8_0 || t == kQ4_0 || t == kQ4_K || t == kQ6_K; }

size_t x8_bytes(int32_t t, int64_t n_out, int64_t n_in) {
    const size_t groups = (size_t)(n_out / kGroupRows);
    switch (t) {
    case kQ8_0: return groups * (size_t)(n_in / QK8_0) * sizeof(block_q8_0x8);
    case kQ4_0: return groups * (size_t)(n_in / QK4_0) * sizeof(block_q4_0x8);
    case kQ4_K: return groups * (size_t)(n_in / QK_K) * sizeof(block_q4_kx8);
    case kQ6_K: return groups * (size_t)(n_in / QK_K) * sizeof(block_q6_kx8);
    default: return 0;
    }
}

void repack_x8(int32_t t, const uint8_t* src, uint64_t row_bytes, int64_t n_in, int64_t g0, int64_t g1,
               uint8_t* dst) {
    const size_t group_bytes = x8_bytes(t, kGroupRows, n_in);
    for (int64_t g = g0; g < g1; ++g) {
        uint8_t* out = dst + (size_t)g * group_bytes;
        switch (t) {
        case kQ8_0: group_q8_0(src, row_bytes, g, n_in / QK8_0, reinterpret_cast<block_q8_0x8*>(out)); break;
        case kQ4_0: group_q4_0(src, row_bytes, g, n_in / QK4_0, reinterpret_cast<block_q4_0x8*>(out)); break;
        case kQ4_K: group_q4_k(src, row_bytes, g, n_in / QK_K, reinterpret_cast<block_q4_kx8*>(out)); break;
        case kQ6_K: group_q6_k(src, row_bytes, g, n_in / QK_K, reinterpret_cast<block_q6_kx8*>(out)); break;
        default: break;
        }
    }
}

void quantize_row_q8_0s(const float* src, block_q8_0s* dst, int64_t n) {
    for (int64_t b = 0; b < n / QK8_0; ++b) {
        block_q8_0 q;
        quantize_row_q8_0(src + b * QK8_0, &q, QK8_0);
        dst[b].d = fp16_to_f32(q.d);
        int32_t sum = 0;
        for (int i = 0; i < QK8_0; ++i) sum += q.qs[i];
        dst[b].offset8 = -8 * sum;
        std::memcpy(dst[b].qs, q.qs, QK8_0);
    }
}

}  // namespace nld
