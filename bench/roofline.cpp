// roofline.cpp: this machine's limits for the benchmark's roofline columns.
// Built and run by bench/bench_vs_llama_cpp.py (c++ -O2 -march=native
// -pthread); prints one JSON object:
//   read_gb_s:  STREAM-like read bandwidth, n threads summing disjoint parts
//               of a 1 GiB buffer (median of runs), GB = 1e9 bytes;
//   int8_gop_s: the int8 multiply-add peak of the instruction the kernels
//               sum products with on this machine (1 MAC = 2 ops), n threads,
//               each with independent chains so throughput, not latency,
//               bounds it: vpdpbusd (AVX-512 VNNI, 32 u8 x i8 products into
//               i32 per 256-bit instruction) where the compiler targets it
//               (-march=native), else maddubs (AVX2, 32 products summed in
//               pairs into i16) with its i16 add. Both are printed
//               (int8_maddubs_gop_s, int8_vnni_gop_s; null without VNNI) and
//               int8_kind names the one int8_gop_s is.
//   usage: roofline THREADS [RUNS]
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// Runs fn(thread index) on n threads at once; returns the wall time.
template <typename F>
double on_threads(int n, F fn) {
    std::vector<std::thread> pool;
    const double t0 = now();
    for (int i = 0; i < n; ++i) pool.emplace_back(fn, i);
    for (auto& t : pool) t.join();
    return now() - t0;
}

volatile int64_t sink;

int64_t sum_bytes(const uint8_t* p, size_t n) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 128 <= n; i += 128) {
        a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i*)(p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i*)(p + i + 32)));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i*)(p + i + 64)));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i*)(p + i + 96)));
    }
    const __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    int64_t out[4];
    std::memcpy(out, &s, sizeof(out));
    return out[0] + out[1] + out[2] + out[3];
}

// The sum of a vector's 32-bit lanes (keeps the chains' results alive).
int64_t lanes_sum(__m256i v) {
    int32_t e[8];
    std::memcpy(e, &v, sizeof(e));
    int64_t t = 0;
    for (int32_t x : e) t += x;
    return t;
}

// 8 maddubs -> i16 add chains per iteration, each on its own activation
// register; the empty asm makes every operand new each iteration, so
// nothing is hoisted or shared.
int64_t maddubs_loop(int64_t iters) {
    __m256i w = _mm256_set1_epi8(3), x0 = _mm256_set1_epi8(-2), x1 = x0, x2 = x0, x3 = x0, x4 = x0, x5 = x0, x6 = x0,
            x7 = x0;
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (int64_t i = 0; i < iters; ++i) {
        a0 = _mm256_add_epi16(a0, _mm256_maddubs_epi16(w, x0));
        a1 = _mm256_add_epi16(a1, _mm256_maddubs_epi16(w, x1));
        a2 = _mm256_add_epi16(a2, _mm256_maddubs_epi16(w, x2));
        a3 = _mm256_add_epi16(a3, _mm256_maddubs_epi16(w, x3));
        a4 = _mm256_add_epi16(a4, _mm256_maddubs_epi16(w, x4));
        a5 = _mm256_add_epi16(a5, _mm256_maddubs_epi16(w, x5));
        a6 = _mm256_add_epi16(a6, _mm256_maddubs_epi16(w, x6));
        a7 = _mm256_add_epi16(a7, _mm256_maddubs_epi16(w, x7));
        __asm__ volatile("" : "+x"(w), "+x"(x0), "+x"(x1), "+x"(x2), "+x"(x3), "+x"(x4), "+x"(x5), "+x"(x6), "+x"(x7));
    }
    return lanes_sum(_mm256_add_epi16(_mm256_add_epi16(_mm256_add_epi16(a0, a1), _mm256_add_epi16(a2, a3)),
                                      _mm256_add_epi16(_mm256_add_epi16(a4, a5), _mm256_add_epi16(a6, a7))));
}
constexpr int kMaddubsPerIter = 8;

#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
// 12 vpdpbusd chains per iteration (its latency is several cycles and two
// or more issue per cycle on current cores); the empty asm makes every
// accumulator new each iteration, so no two chains are merged.
int64_t vnni_loop(int64_t iters) {
    __m256i w = _mm256_set1_epi8(3), x = _mm256_set1_epi8(-2);
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0,
            a9 = a0, a10 = a0, a11 = a0;
    for (int64_t i = 0; i < iters; ++i) {
        a0 = _mm256_dpbusd_epi32(a0, w, x);
        a1 = _mm256_dpbusd_epi32(a1, w, x);
        a2 = _mm256_dpbusd_epi32(a2, w, x);
        a3 = _mm256_dpbusd_epi32(a3, w, x);
        a4 = _mm256_dpbusd_epi32(a4, w, x);
        a5 = _mm256_dpbusd_epi32(a5, w, x);
        a6 = _mm256_dpbusd_epi32(a6, w, x);
        a7 = _mm256_dpbusd_epi32(a7, w, x);
        a8 = _mm256_dpbusd_epi32(a8, w, x);
        a9 = _mm256_dpbusd_epi32(a9, w, x);
        a10 = _mm256_dpbusd_epi32(a10, w, x);
        a11 = _mm256_dpbusd_epi32(a11, w, x);
        __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(a4), "+x"(a5), "+x"(a6), "+x"(a7),
                         "+x"(a8), "+x"(a9), "+x"(a10), "+x"(a11));
    }
    const __m256i s = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(a0, a1), _mm256_add_epi32(a2, a3)),
                                       _mm256_add_epi32(_mm256_add_epi32(a4, a5), _mm256_add_epi32(a6, a7)));
    return lanes_sum(_mm256_add_epi32(s, _mm256_add_epi32(_mm256_add_epi32(a8, a9), _mm256_add_epi32(a10, a11))));
}
constexpr int kVnniPerIter = 12;
#endif

// Median GOP/s of loop (per_iter 32-MAC instructions per iteration) on n threads.
template <typename F>
double int8_peak(int threads, int runs, int per_iter, F loop) {
    const int64_t iters = 50'000'000;
    std::vector<double> peak;
    for (int r = 0; r < runs; ++r) {
        const double t = on_threads(threads, [&](int) { sink = loop(iters); });
        peak.push_back((double)iters * per_iter * 32 * 2 * threads / t / 1e9);
    }
    return median(peak);
}

}  // namespace

int main(int argc, char** argv) {
    const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
    const int runs = argc > 2 ? std::atoi(argv[2]) : 5;
    if (threads < 1 || runs < 1) {
        std::fprintf(stderr, "usage: roofline THREADS [RUNS]\n");
        return 2;
    }
    const size_t bytes = (size_t)1 << 30;
    uint8_t* buf = static_cast<uint8_t*>(std::aligned_alloc(4096, bytes));
    if (!buf) {
        std::fprintf(stderr, "roofline: cannot allocate 1 GiB\n");
        return 1;
    }
    std::memset(buf, 1, bytes);  // touch every page before timing
    const size_t part = bytes / threads / 128 * 128;
    std::vector<double> bw;
    for (int r = 0; r < runs; ++r) {
        const double t = on_threads(threads, [&](int i) { sink = sum_bytes(buf + (size_t)i * part, part); });
        bw.push_back((double)part * threads / t / 1e9);
    }
    std::free(buf);
    const double maddubs = int8_peak(threads, runs, kMaddubsPerIter, maddubs_loop);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    const double vnni = int8_peak(threads, runs, kVnniPerIter, vnni_loop);
    char vnni_text[32];
    std::snprintf(vnni_text, sizeof(vnni_text), "%.1f", vnni);
    const double peak = vnni;
    const char* kind = "vpdpbusd";
#else
    const char* vnni_text = "null";
    const double peak = maddubs;
    const char* kind = "maddubs";
#endif
    std::printf("{\"threads\": %d, \"runs\": %d, \"read_gb_s\": %.2f, \"read_gb_s_max\": %.2f, "
                "\"int8_gop_s\": %.1f, \"int8_kind\": \"%s\", \"int8_maddubs_gop_s\": %.1f, "
                "\"int8_vnni_gop_s\": %s}\n",
                threads, runs, median(bw), *std::max_element(bw.begin(), bw.end()), peak, kind, maddubs, vnni_text);
    return 0;
}
