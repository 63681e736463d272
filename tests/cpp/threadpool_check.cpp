// threadpool_check.cpp: threadpool::parallel_for and parallel_chunks against
// their contracts (threadpool.h), built with AddressSanitizer and
// UndefinedBehaviorSanitizer by tests/test_threadpool.py:
// - every index of [0, n) is passed exactly once, for pool sizes 1-4 and
//   sizes around the chunk size (0, 1, one short of a chunk, one over, ...);
// - parallel_chunks calls fn on whole chunks: begin a multiple of the chunk,
//   end the next multiple or n;
// - a thread held up inside one chunk takes no more while the others clear
//   the rest (the reason the matmuls use parallel_chunks);
// - a pool is reusable call after call, and with work on every thread.
// Prints one line per section and "ok" at the end; exits 1 on a failure.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "backend/cpu/threadpool.h"

using nld::threadpool;

namespace {

int failures = 0;

void expect(bool ok, const char* what, int threads, long long n, long long chunk) {
    if (ok) return;
    ++failures;
    std::printf("FAIL %s (threads %d, n %lld, chunk %lld)\n", what, threads, n, chunk);
}

// Each index once; each call a whole chunk (chunk 0 means parallel_for).
void check_cover(threadpool& pool, int64_t n, int64_t chunk) {
    std::vector<std::atomic<int>> seen((size_t)n);
    for (auto& s : seen) s.store(0);
    std::atomic<bool> aligned{true};
    const auto fn = [&](int64_t begin, int64_t end) {
        if (begin < 0 || end > n || begin >= end) aligned.store(false);
        if (chunk > 0 && (begin % chunk != 0 || end != std::min(n, begin + chunk))) aligned.store(false);
        for (int64_t i = std::max<int64_t>(begin, 0); i < std::min(end, n); ++i) seen[(size_t)i].fetch_add(1);
    };
    if (chunk > 0)
        pool.parallel_chunks(n, chunk, fn);
    else
        pool.parallel_for(n, fn);
    bool once = true;
    for (auto& s : seen) once = once && s.load() == 1;
    expect(once, "every index exactly once", pool.size(), n, chunk);
    expect(aligned.load(), "calls on whole chunks inside [0, n)", pool.size(), n, chunk);
}

}  // namespace

int main() {
    int cases = 0;
    for (int threads = 1; threads <= 4; ++threads) {
        threadpool pool(threads);
        for (int64_t chunk : {0, 1, 2, 3, 7, 64})
            for (int64_t n : {0, 1, 2, 5, 6, 7, 8, 13, 64, 65, 127, 1000}) {
                check_cover(pool, n, chunk);
                ++cases;
            }
    }
    std::printf("cover: %d cases\n", cases);

    // One thread sleeps in the first chunk it takes; the others, free, must
    // take every other chunk meanwhile (a fixed split would leave that
    // thread its whole share).
    for (int threads = 2; threads <= 4; ++threads) {
        threadpool pool(threads);
        constexpr int64_t kChunks = 64;
        std::mutex mutex;
        std::set<std::thread::id> slept;
        std::vector<std::thread::id> taker(kChunks);
        pool.parallel_chunks(kChunks, 1, [&](int64_t begin, int64_t end) {
            for (int64_t c = begin; c < end; ++c) {
                taker[(size_t)c] = std::this_thread::get_id();
                if (c == 0) {
                    {
                        std::lock_guard<std::mutex> lock(mutex);
                        slept.insert(std::this_thread::get_id());
                    }
                    std::this_thread::sleep_for(std::chrono::milliseconds(300));
                }
            }
        });
        int by_sleeper = 0;
        for (const auto& id : taker) by_sleeper += slept.count(id) ? 1 : 0;
        expect(by_sleeper == 1, "the held-up thread took only its first chunk", threads, kChunks, 1);
        std::printf("held up: %d threads, the sleeper took %d of %lld chunks\n", threads, by_sleeper,
                    (long long)kChunks);
    }

    // Many calls on one pool, each with work for every thread.
    {
        threadpool pool(3);
        std::atomic<int64_t> total{0};
        for (int call = 0; call < 2000; ++call)
            pool.parallel_chunks(call % 50, 1 + call % 5, [&](int64_t begin, int64_t end) { total += end - begin; });
        int64_t expected = 0;
        for (int call = 0; call < 2000; ++call) expected += call % 50;
        expect(total.load() == expected, "2000 calls on one pool cover their indices", 3, expected, 0);
        std::printf("reuse: %lld indices over 2000 calls\n", (long long)total.load());
    }

    if (failures) return 1;
    std::printf("ok\n");
    return 0;
}
