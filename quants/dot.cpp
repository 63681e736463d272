// dot.cpp: the scalar kernel table (the reference functions of quants.h) and
// the run-time choice of the CPU path (dot.h).
#include "quants/dot.h"

#include <cstdlib>
#include <cstring>

#include "quants/quants.h"

namespace nld {

namespace {

// The reference dot product, one activation row at a time.
template <typename W, typename X, float (*F)(int64_t, const W*, const X*)>
void reference_rows(int64_t n, const void* w, const void* x, size_t x_stride, int64_t n_rows, float* y,
                    int64_t y_stride) {
    for (int64_t r = 0; r < n_rows; ++r)
        y[r * y_stride] = F(n, static_cast<const W*>(w),
                            reinterpret_cast<const X*>(static_cast<const uint8_t*>(x) + (size_t)r * x_stride));
}

const dot_kernels scalar_kernels = {
    reference_rows<block_q8_0, block_q8_0, vec_dot_q8_0_q8_0>,
    reference_rows<block_q4_0, block_q8_0, vec_dot_q4_0_q8_0>,
    reference_rows<block_q4_k, block_q8_k, vec_dot_q4_k_q8_k>,
    reference_rows<block_q6_k, block_q8_k, vec_dot_q6_k_q8_k>,
    nullptr,
};

cpu_path pick_default_path() {
    const char* forced = std::getenv("NLD_CPU_PATH");
    if (forced && std::strcmp(forced, "scalar") == 0) return cpu_path::scalar;
    if (forced && std::strcmp(forced, "avx2") == 0 && cpu_path_supported(cpu_path::avx2)) return cpu_path::avx2;
    return cpu_path_supported(cpu_path::avx2) ? cpu_path::avx2 : cpu_path::scalar;
}

}  // namespace

bool cpu_path_supported(cpu_path p) {
    switch (p) {
    case cpu_path::scalar: return true;
    case cpu_path::avx2:
#ifdef NLD_HAVE_AVX2_PATH
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
        return false;
#endif
    }
    return false;
}

cpu_path default_cpu_path() {
    static const cpu_path chosen = pick_default_path();
    return chosen;
}

const dot_kernels& kernels_for(cpu_path p) {
#ifdef NLD_HAVE_AVX2_PATH
    if (p == cpu_path::avx2) return avx2_kernels;
#endif
    (void)p;
    return scalar_kernels;
}

}  // namespace nld
