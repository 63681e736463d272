// kernel_throughput.cpp: the x8 matmul kernels of this CPU's default path
// alone (quants/gemm_avx2.cpp or gemm_vnni.cpp, NLD_CPU_PATH to choose)
// on a weight matrix far larger than the caches (221184 x 3072, about 0.5-1
// GB by type), so the 1-row case shows the weight stream and the many-row
// cases the arithmetic. Built and run by bench/bench_kernels.py:
//   c++ -O3 -std=c++17 -ffp-contract=off -pthread -I. -Icsrc
//       bench/kernel_throughput.cpp quants/*.cpp -o kernel_throughput
//   kernel_throughput TYPE THREADS ROWS [REPEATS [N_OUT]]
// TYPE is the ggml type id (8 Q8_0, 2 Q4_0, 12 Q4_K, 14 Q6_K). Prints one JSON
// line: the best of REPEATS calls (ms), weight bytes / time (GB/s) and
// multiply-adds / time (GMAC/s). Threads split the groups of 8 rows as the
// runtime does.
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "quants/dot.h"
#include "quants/repack.h"

using namespace nld;

namespace {

double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 4) {
        std::fprintf(stderr, "usage: kernel_throughput TYPE THREADS ROWS [REPEATS]\n");
        return 2;
    }
    const int type = std::atoi(argv[1]), threads = std::atoi(argv[2]), rows = std::atoi(argv[3]);
    const int repeats = argc > 4 ? std::atoi(argv[4]) : 10;
    if (!has_x8_layout(type) || threads < 1 || rows < 1 || repeats < 1 || !kernels_for(default_cpu_path()).x8) {
        std::fprintf(stderr, "kernel_throughput: bad arguments or no AVX2 on this CPU\n");
        return 2;
    }
    const int64_t n_in = 3072, n_out = argc > 5 ? std::atoll(argv[5]) : 9216 * 24;
    const bool k_quant = type == 12 || type == 14;
    const int block = k_quant ? QK_K : QK8_0;
    const size_t row_bytes = (size_t)(n_in / block) * (type == 8 ? 34 : type == 2 ? 18 : type == 12 ? 144 : 210);

    // Real blocks (from the quantizers, so scales are ordinary numbers) for
    // 64 distinct rows, repeated over the matrix.
    std::vector<float> src((size_t)n_in);
    std::vector<uint8_t> rows64(row_bytes * 64);
    for (int r = 0; r < 64; ++r) {
        for (int64_t i = 0; i < n_in; ++i) src[(size_t)i] = (float)(((i * 37 + r * 11) % 101) - 50) / 50.0f;
        uint8_t* dst = rows64.data() + (size_t)r * row_bytes;
        switch (type) {
        case 8: quantize_row_q8_0(src.data(), reinterpret_cast<block_q8_0*>(dst), n_in); break;
        case 2: quantize_row_q4_0(src.data(), reinterpret_cast<block_q4_0*>(dst), n_in); break;
        case 12: quantize_row_q4_k(src.data(), reinterpret_cast<block_q4_k*>(dst), n_in); break;
        default: quantize_row_q6_k(src.data(), reinterpret_cast<block_q6_k*>(dst), n_in); break;
        }
    }
    std::vector<uint8_t> plain(row_bytes * (size_t)n_out);
    for (int64_t r = 0; r < n_out; ++r)
        std::copy_n(rows64.data() + (size_t)(r % 64) * row_bytes, row_bytes, plain.data() + (size_t)r * row_bytes);
    const size_t bytes = x8_bytes(type, n_out, n_in);
    void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return 1;
    uint8_t* w = static_cast<uint8_t*>(mem);
    madvise(w, bytes, MADV_HUGEPAGE);
    repack_x8(type, plain.data(), row_bytes, n_in, 0, n_out / kGroupRows, w);
    plain = {};

    const size_t act_row = k_quant ? (size_t)(n_in / QK_K) * sizeof(block_q8_k) : (size_t)(n_in / QK8_0) * sizeof(block_q8_0s);
    std::vector<float> act_storage((act_row * rows + 3) / 4);
    uint8_t* act = reinterpret_cast<uint8_t*>(act_storage.data());
    for (int r = 0; r < rows; ++r) {
        for (int64_t i = 0; i < n_in; ++i) src[(size_t)i] = (float)(((i * 53 + r * 7) % 97) - 48) / 48.0f;
        if (k_quant)
            quantize_row_q8_k(src.data(), reinterpret_cast<block_q8_k*>(act + r * act_row), n_in);
        else
            quantize_row_q8_0s(src.data(), reinterpret_cast<block_q8_0s*>(act + r * act_row), n_in);
    }
    std::vector<float> y((size_t)n_out * rows);
    // As the runtime (ops.cpp run_groups): two adjacent groups per call where
    // the path has pair kernels.
    const dot_kernels& path = kernels_for(default_cpu_path());
    const x8_kernels& k = path.x8_pairs ? *path.x8_pairs : *path.x8;
    const gemm_x8_fn gemm = type == 8 ? k.q8_0 : type == 2 ? k.q4_0 : type == 12 ? k.q4_k : k.q6_k;
    const int64_t step = path.x8_pairs ? 2 : 1;
    const size_t group_bytes = x8_bytes(type, kGroupRows, n_in);
    const int64_t groups = n_out / kGroupRows;
    double best = 1e30;
    for (int rep = 0; rep < repeats; ++rep) {
        const double t0 = now();
        std::vector<std::thread> pool;
        for (int i = 0; i < threads; ++i)
            pool.emplace_back([&, i] {
                for (int64_t g = groups * i / threads / step * step; g < groups * (i + 1) / threads / step * step;
                     g += step)
                    gemm(n_in, w + g * group_bytes, act, act_row, rows, &y[(size_t)g * kGroupRows], n_out);
            });
        for (auto& t : pool) t.join();
        best = std::min(best, now() - t0);
    }
    munmap(w, bytes);
    std::printf("{\"path\": %d, \"type\": %d, \"threads\": %d, \"rows\": %d, \"best_ms\": %.2f, \"gb_s\": %.2f, "
                "\"gmac_s\": %.1f}\n",
                (int)default_cpu_path(), type, threads, rows, best * 1e3, (double)bytes / best / 1e9,
                (double)n_in * (double)n_out * rows / best / 1e9);
    return 0;
}
