// roofline.cpp: this machine's limits for the benchmark's roofline columns.
// Built and run by bench/bench_vs_llama_cpp.py (c++ -O2 -march=native
// -pthread); prints one JSON object:
//   read_gb_s:  STREAM-like read bandwidth, n threads summing disjoint parts
//               of a 1 GiB buffer (median of runs), GB = 1e9 bytes;
//   int8_gop_s: the int8 multiply-add peak of AVX2 (no VNNI): maddubs
//               (u8 x i8, 32 multiply-adds = 64 ops per 32-byte instruction)
//               summed in i16, n threads, each with 8 independent chains so
//               throughput, not latency, bounds it. (The kernels also need
//               one madd per 8 maddubs or so, and their unpacking.)
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

int64_t int8_loop(int64_t iters) {
    __m256i w = _mm256_set1_epi8(3), x = _mm256_set1_epi8(-2);
    __m256i acc[8];
    for (auto& a : acc) a = _mm256_setzero_si256();
    for (int64_t i = 0; i < iters; ++i) {
        for (int k = 0; k < 8; ++k)  // 8 independent maddubs -> add chains
            acc[k] = _mm256_add_epi16(acc[k], _mm256_maddubs_epi16(w, x));
        __asm__ volatile("" : "+x"(w), "+x"(x));  // keeps the compiler from hoisting the products
    }
    int64_t total = 0;
    for (auto& a : acc) {
        int16_t v[16];
        std::memcpy(v, &a, sizeof(v));
        for (int16_t e : v) total += e;
    }
    return total;
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
    const int64_t iters = 50'000'000;
    std::vector<double> peak;
    for (int r = 0; r < runs; ++r) {
        const double t = on_threads(threads, [&](int) { sink = int8_loop(iters); });
        peak.push_back((double)iters * 8 * 32 * 2 * threads / t / 1e9);
    }
    std::printf("{\"threads\": %d, \"runs\": %d, \"read_gb_s\": %.2f, \"read_gb_s_max\": %.2f, "
                "\"int8_gop_s\": %.1f}\n",
                threads, runs, median(bw), *std::max_element(bw.begin(), bw.end()), median(peak));
    return 0;
}
