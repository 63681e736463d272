// attention_loops.cpp: attention_loops.inc built for AVX2 (two heads per
// call) and for AVX-512VL (four: its 32 registers hold their 16
// accumulators; 512-bit registers for the longest runs), each with its own
// function attribute.
#include "backend/cpu/attention_loops.h"

#include "backend/cpu/exp_f32.h"  // exp_f32, exp8_avx2

#ifdef NLD_HAVE_AVX2_PATH

#include <immintrin.h>

#include <algorithm>
#include <cmath>  // std::fma
#include <cstring>

// GCC 12's AVX-512 headers pass an uninitialized "undefined" vector to the
// masked builtins behind plain intrinsics (_mm512_shuffle_f32x4, ...), which
// -Wmaybe-uninitialized and -Wuninitialized report; those lanes are never read.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace nld {

namespace avx2_loops {
#define NLD_ATTN_TARGET __attribute__((target("avx2,fma,f16c")))
#define NLD_ATTN_HEADS 2
#include "backend/cpu/attention_loops.inc"
#undef NLD_ATTN_TARGET
#undef NLD_ATTN_HEADS
}  // namespace avx2_loops

namespace avx512_loops {
#define NLD_ATTN_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512vl")))
#define NLD_ATTN_HEADS 4
#define NLD_ATTN_ZMM
#include "backend/cpu/attention_loops.inc"
#undef NLD_ATTN_TARGET
#undef NLD_ATTN_HEADS
#undef NLD_ATTN_ZMM
}  // namespace avx512_loops

const attention_loops avx2_attention_loops = avx2_loops::table;
const attention_loops avx512_attention_loops = avx512_loops::table;

}  // namespace nld

#endif  // NLD_HAVE_AVX2_PATH
