// dot.cpp: the scalar kernel table (the reference functions of quants.h) and
// the run-time choice of the CPU path (dot.h).
#include "quants/dot.h"

#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "quants/quants.h"
#include "quants/repack.h"

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

const activation_quantizers reference_quantizers = {quantize_row_q8_0s, quantize_row_q8_k};

const dot_kernels scalar_kernels = {
    reference_rows<block_q8_0, block_q8_0, vec_dot_q8_0_q8_0>,
    reference_rows<block_q4_0, block_q8_0, vec_dot_q4_0_q8_0>,
    reference_rows<block_q4_k, block_q8_k, vec_dot_q4_k_q8_k>,
    reference_rows<block_q6_k, block_q8_k, vec_dot_q6_k_q8_k>,
    nullptr,
    nullptr,
    &reference_quantizers,
};

cpu_path pick_default_path() {
    const struct {
        const char* name;
        cpu_path path;
    } named[] = {{"scalar", cpu_path::scalar}, {"avx2", cpu_path::avx2}, {"avx512_vnni", cpu_path::avx512_vnni}};
    const char* forced = std::getenv("NLD_CPU_PATH");
    for (const auto& p : named)
        if (forced && std::strcmp(forced, p.name) == 0 && cpu_path_supported(p.path)) return p.path;
    for (cpu_path p : {cpu_path::avx512_vnni, cpu_path::avx2})
        if (cpu_path_supported(p)) return p;
    return cpu_path::scalar;
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
    case cpu_path::avx512_vnni:
#if defined(NLD_HAVE_AVX2_PATH) && defined(NLD_VNNI_EMULATED)
        return cpu_path_supported(cpu_path::avx2);  // test builds: the kernels run on AVX2 (gemm_vnni.cpp)
#elif defined(NLD_HAVE_AVX2_PATH)
        // libgcc's checks include the operating system's saving of the
        // AVX-512 registers.
        return cpu_path_supported(cpu_path::avx2) && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512vnni");
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
    if (p == cpu_path::avx512_vnni) {
        // Matrices without the x8 layout take the AVX2 row kernels.
        static const dot_kernels vnni = {avx2_kernels.q8_0,       avx2_kernels.q4_0,        avx2_kernels.q4_k,
                                         avx2_kernels.q6_k,       &avx512_vnni_x8_kernels,  avx512_vnni_pair_kernels,
                                         avx2_kernels.quantize};
        return vnni;
    }
#endif
    (void)p;
    return scalar_kernels;
}

}  // namespace nld
