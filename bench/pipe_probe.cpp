// pipe_probe.cpp: which AVX-512 instructions slow down a stream of 512-bit
// vpdpbusd on this CPU, i.e. compete with it for its execution ports. The
// x8 pair kernels (quants/gemm_vnni.cpp) issue, beside their products,
// scale multiplies (vpmulld, vmulps), conversions, masks, shifts and the
// 256-bit inserts of load_pair; this probe says which of those cost time.
//   c++ -O2 -std=c++17 bench/pipe_probe.cpp -o pipe_probe && ./pipe_probe
// Prints one JSON object: dpbusd_per_ns (8 independent vpdpbusd chains),
// ymm_dpbusd_per_ns (the same on 256-bit registers: half the products) and,
// per instruction, the time of 8 vpdpbusd plus 4 and plus 8 of it (from
// independent chains) relative to the 8 vpdpbusd alone. 1.00 means the
// instruction issues beside vpdpbusd for free; 2.00 at 8 means each one
// takes a vpdpbusd slot. Needs AVX-512 F/BW/VL/VNNI; one thread.
#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <cstdio>

// GCC 12's AVX-512 headers pass an uninitialized "undefined" vector to the
// masked builtins behind plain intrinsics; those lanes are never read.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#define PROBE_TARGET __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni"), noinline))
#define PROBE_INLINE __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni"), always_inline)) inline
#define KEEP(x) __asm__ volatile("" : "+v"(x))  // the value is used: no folding, no hoisting
// One step of each of the eight chains a0..a7.
#define PROBE_EIGHT(STEP) \
    STEP(a0);             \
    STEP(a1);             \
    STEP(a2);             \
    STEP(a3);             \
    STEP(a4);             \
    STEP(a5);             \
    STEP(a6);             \
    STEP(a7)

namespace {

alignas(64) signed char bytes[4096];

enum class extra { none, vmulps, vpmulld, vpdpwssd, vcvtdq2ps, vaddps, vpaddd, vpandd, vpsrlw, vinserti64x4 };

// One instruction E on the chain m (integer) or f (float).
template <extra E>
PROBE_INLINE void apply(__m512i& m, __m512& f, __m512i u, __m512i v, __m512 g) {
    if constexpr (E == extra::vmulps) f = _mm512_mul_ps(f, g);
    if constexpr (E == extra::vpmulld) m = _mm512_mullo_epi32(m, u);
    if constexpr (E == extra::vpdpwssd) m = _mm512_dpwssd_epi32(m, u, v);
    if constexpr (E == extra::vcvtdq2ps) f = _mm512_cvtepi32_ps(m);
    if constexpr (E == extra::vaddps) f = _mm512_add_ps(f, g);
    if constexpr (E == extra::vpaddd) m = _mm512_add_epi32(m, u);
    if constexpr (E == extra::vpandd) m = _mm512_and_si512(m, u);
    if constexpr (E == extra::vpsrlw) m = _mm512_srli_epi16(m, 4);
    if constexpr (E == extra::vinserti64x4) m = _mm512_inserti64x4(m, _mm512_castsi512_si256(u), 1);
    KEEP(m);
    KEEP(f);
}

// Seconds for iters rounds of 8 vpdpbusd plus count (0, 4 or 8)
// instructions E. Named registers, not arrays: every chain stays in a
// register (an array element behind an asm barrier would live in memory).
template <extra E, int count>
PROBE_TARGET double run(long iters) {
    __m512i a0 = _mm512_set1_epi32(1), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    __m512i m0 = _mm512_set1_epi32(3), m1 = m0, m2 = m0, m3 = m0, m4 = m0, m5 = m0, m6 = m0, m7 = m0;
    __m512 f0 = _mm512_set1_ps(1.0f), f1 = f0, f2 = f0, f3 = f0, f4 = f0, f5 = f0, f6 = f0, f7 = f0;
    __m512i u = _mm512_loadu_si512(bytes), v = _mm512_loadu_si512(bytes + 64);
    __m512 g = _mm512_set1_ps(1.0000001f);
    KEEP(u);  // unknown to the compiler: nothing folds (the bytes are zeros)
    KEEP(v);
    KEEP(g);
#define PROBE_DOT(a)                         \
    a = _mm512_dpbusd_epi32(a, u, v); \
    KEEP(a)
    const auto t0 = std::chrono::steady_clock::now();
    for (long it = 0; it < iters; ++it) {
        PROBE_EIGHT(PROBE_DOT);
        if constexpr (count >= 4) {
            apply<E>(m0, f0, u, v, g);
            apply<E>(m1, f1, u, v, g);
            apply<E>(m2, f2, u, v, g);
            apply<E>(m3, f3, u, v, g);
        }
        if constexpr (count >= 8) {
            apply<E>(m4, f4, u, v, g);
            apply<E>(m5, f5, u, v, g);
            apply<E>(m6, f6, u, v, g);
            apply<E>(m7, f7, u, v, g);
        }
    }
#undef PROBE_DOT
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const __m512i ints[] = {a0, a1, a2, a3, a4, a5, a6, a7, m0, m1, m2, m3, m4, m5, m6, m7};
    const __m512 floats[] = {f0, f1, f2, f3, f4, f5, f6, f7};
    __m512i sum = _mm512_setzero_si512();
    __m512 fsum = _mm512_setzero_ps();
    for (const __m512i& x : ints) sum = _mm512_add_epi32(sum, x);
    for (const __m512& x : floats) fsum = _mm512_add_ps(fsum, x);
    alignas(64) int32_t si[16];
    alignas(64) float sf[16];
    _mm512_store_si512(si, sum);
    _mm512_store_ps(sf, fsum);
    if (si[0] == 12345 && sf[0] == 1.0f) std::printf(" ");  // never: keeps the sums alive
    return s;
}

// Seconds for iters rounds of 8 independent 256-bit vpdpbusd.
PROBE_TARGET double run_ymm(long iters) {
    __m256i a0 = _mm256_set1_epi32(1), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bytes)), v = u;
    KEEP(u);
    KEEP(v);
#define PROBE_DOT(a)                  \
    a = _mm256_dpbusd_epi32(a, u, v); \
    KEEP(a)
    const auto t0 = std::chrono::steady_clock::now();
    for (long it = 0; it < iters; ++it) {
        PROBE_EIGHT(PROBE_DOT);
    }
#undef PROBE_DOT
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(a0, a1), _mm256_add_epi32(a2, a3)),
                                         _mm256_add_epi32(_mm256_add_epi32(a4, a5), _mm256_add_epi32(a6, a7)));
    alignas(32) int32_t si[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(si), sum);
    if (si[0] == 12345) std::printf(" ");  // never: keeps the sums alive
    return s;
}

}  // namespace

namespace {

template <extra E>
void report(const char* name, long iters, double base, bool last) {
    const double four = run<E, 4>(iters) / base, eight = run<E, 8>(iters) / base;
    std::printf("  \"%s\": [%.2f, %.2f]%s\n", name, four, eight, last ? "" : ",");
}

}  // namespace

int main() {
    if (!__builtin_cpu_supports("avx512vnni") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512vl")) {
        std::fprintf(stderr, "pipe_probe: this CPU has no AVX-512 VNNI\n");
        return 2;
    }
    const long iters = 20000000;
    run<extra::none, 0>(iters / 10);  // warm up (clock ramp)
    const double base = run<extra::none, 0>(iters);
    std::printf("{\n  \"dpbusd_per_ns\": %.2f,\n", 8.0 * (double)iters / base / 1e9);
    std::printf("  \"ymm_dpbusd_per_ns\": %.2f,\n", 8.0 * (double)iters / run_ymm(iters) / 1e9);
    report<extra::vmulps>("vmulps", iters, base, false);
    report<extra::vpmulld>("vpmulld", iters, base, false);
    report<extra::vpdpwssd>("vpdpwssd", iters, base, false);
    report<extra::vcvtdq2ps>("vcvtdq2ps", iters, base, false);
    report<extra::vaddps>("vaddps", iters, base, false);
    report<extra::vpaddd>("vpaddd", iters, base, false);
    report<extra::vpandd>("vpandd", iters, base, false);
    report<extra::vpsrlw>("vpsrlw", iters, base, false);
    report<extra::vinserti64x4>("vinserti64x4", iters, base, true);
    std::printf("}\n");
    return 0;
}
