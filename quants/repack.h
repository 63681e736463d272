// repack.h: the interleaved ("x8") weight layout of the SIMD matmul path.
// A quantized weight matrix whose row count is a multiple of 8 is rewritten
// once, at load, into groups of 8 rows; within a group, each block position
// b holds block b of all 8 rows, with the quants interleaved in 4-byte
// pieces: piece p of row j sits at byte 32 * p + 4 * j of the block's quant
// area. One 32-byte load then holds 4 consecutive quants of each of the 8
// rows, so a kernel multiplies them by 4 activation bytes broadcast to all
// lanes and accumulates 8 output rows in the 8 lanes of one register: no
// horizontal sums and one scale multiply per block for 8 rows. The values
// are those of the file (no requantization): the x8 kernels compute the same
// integers and the same f32 operations, in the same order, as the scalar
// reference dot products of quants.h, so their results are equal to it.
// Memory: Q8_0, Q4_0, Q6_K keep their size; Q4_K grows by 2.8% (its 6-bit
// scales and mins are stored unpacked: 1184 bytes per 8 super-blocks
// instead of 1152).
#pragma once

#include <cstddef>
#include <cstdint>

#include "quants/quants.h"

namespace nld {

constexpr int kGroupRows = 8;  // weight rows per interleaved group

// 8 Q8_0 blocks: qs piece p (elements 4p..4p+3) of row j at 32 * p + 4 * j.
struct block_q8_0x8 {
    fp16_bits d[kGroupRows];
    int8_t qs[kGroupRows * QK8_0];
};
static_assert(sizeof(block_q8_0x8) == 8 * sizeof(block_q8_0), "Q8_0 x8 keeps the size of 8 blocks");

// 8 Q4_0 blocks: byte piece c (bytes 4c..4c+3 of the row's qs: elements
// 4c+e in the low nibbles, 16+4c+e in the high) of row j at 32 * c + 4 * j.
struct block_q4_0x8 {
    fp16_bits d[kGroupRows];
    uint8_t qs[kGroupRows * QK4_0 / 2];
};
static_assert(sizeof(block_q4_0x8) == 8 * sizeof(block_q4_0), "Q4_0 x8 keeps the size of 8 blocks");

// 8 Q4_K super-blocks. scales[8 * s + j]: sub-block s of row j; mins are
// stored for pairs of sub-blocks: mins[16 * p + 2 * j + i] is the min of
// sub-block 2p+i of row j. qs: for chunk c (the row's bytes 32c..32c+31:
// sub-block 2c low nibbles, 2c+1 high) and piece t (bytes 4t..4t+3 of the
// chunk), row j at 256 * c + 32 * t + 4 * j.
struct block_q4_kx8 {
    fp16_bits d[kGroupRows];
    fp16_bits dmin[kGroupRows];
    uint8_t scales[8 * kGroupRows];
    uint8_t mins[8 * kGroupRows];
    uint8_t qs[kGroupRows * QK_K / 2];
};
static_assert(sizeof(block_q4_kx8) == 1184, "Q4_K x8 is 1184 bytes");

// 8 Q6_K super-blocks. scales[8 * g + j]: group g of row j. ql: for half h,
// ql chunk k2 (the row's bytes 64h + 32 k2 ..) and piece t, row j at
// 512 * h + 256 * k2 + 32 * t + 4 * j. qh: half h, piece t, row j at
// 256 * h + 32 * t + 4 * j.
struct block_q6_kx8 {
    fp16_bits d[kGroupRows];
    int8_t scales[16 * kGroupRows];
    uint8_t ql[kGroupRows * QK_K / 2];
    uint8_t qh[kGroupRows * QK_K / 4];
};
static_assert(sizeof(block_q6_kx8) == 8 * sizeof(block_q6_k), "Q6_K x8 keeps the size of 8 blocks");

// The activation partner of x8 Q8_0 / Q4_0 weights: a Q8_0 block with its
// scale widened to f32 (exactly: f16 -> f32 is exact) and -8 times the sum
// of its quants: the term that takes back an offset of 8 added to every
// weight (Q4_0 stores q + 8), broadcast by the kernels straight from memory
// (16 times it takes back an offset of 128: Q8_0 on the VNNI path).
struct block_q8_0s {
    float d;
    int32_t offset8;
    int8_t qs[QK8_0];
};
static_assert(sizeof(block_q8_0s) == 40, "Q8_0s block is 40 bytes");

// The weight types with an x8 layout (the others are used as stored).
bool has_x8_layout(int32_t ggml_type);
// Bytes of the x8 form of n_out rows of n_in elements (n_out % 8 == 0).
size_t x8_bytes(int32_t ggml_type, int64_t n_out, int64_t n_in);
// Rewrites rows [8 * g0, 8 * g1) (groups g0..g1-1) of src (rows of
// row_bytes) into dst, the start of the x8 form of the whole matrix.
void repack_x8(int32_t ggml_type, const uint8_t* src, uint64_t row_bytes, int64_t n_in, int64_t g0, int64_t g1,
               uint8_t* dst);

// Q8_0 activations in the block_q8_0s form (same quants and scales as
// quantize_row_q8_0).
void quantize_row_q8_0s(const float* src, block_q8_0s* dst, int64_t n);

}  // namespace nld
