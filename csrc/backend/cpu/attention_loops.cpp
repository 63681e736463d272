// attention_loops.cpp: attention_loops.inc built for AVX2 (two heads per
// call) and for AVX-512VL (four: its 32 registers hold their 16
// accumulators), each with its own function attribute.
#include "backend/cpu/attention_loops.h"

#ifdef NLD_HAVE_AVX2_PATH

#include <immintrin.h>

#include <algorithm>

namespace nld {

namespace avx2_loops {
#define NLD_ATTN_TARGET __attribute__((target("avx2")))
#define NLD_ATTN_HEADS 2
#include "backend/cpu/attention_loops.inc"
#undef NLD_ATTN_TARGET
#undef NLD_ATTN_HEADS
}  // namespace avx2_loops

namespace avx512_loops {
#define NLD_ATTN_TARGET __attribute__((target("avx2,avx512f,avx512vl")))
#define NLD_ATTN_HEADS 4
#include "backend/cpu/attention_loops.inc"
#undef NLD_ATTN_TARGET
#undef NLD_ATTN_HEADS
}  // namespace avx512_loops

const attention_loops avx2_attention_loops = {avx2_loops::scores, avx2_loops::weighted_sum};
const attention_loops avx512_attention_loops = {avx512_loops::scores, avx512_loops::weighted_sum};

}  // namespace nld

#endif  // NLD_HAVE_AVX2_PATH
