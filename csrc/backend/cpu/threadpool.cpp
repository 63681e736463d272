// threadpool.cpp: see threadpool.h.
#include "backend/cpu/threadpool.h"

#include <algorithm>

namespace nld {

threadpool::threadpool(int n_threads) {
    if (n_threads <= 0) n_threads = (int)std::max(1u, std::thread::hardware_concurrency());
    n_threads_ = n_threads;
    for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

threadpool::~threadpool() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_.store(true);
    }
    work_ready_.notify_all();
    for (auto& w : workers_) w.join();
}

namespace {

constexpr int kSpins = 2000;  // pause hints before sleeping: about 50 us

inline void pause_hint() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

}  // namespace

void threadpool::run_chunk(int index) {
    const int64_t chunk = (job_n_ + n_threads_ - 1) / n_threads_;
    const int64_t begin = std::min<int64_t>(job_n_, chunk * index);
    const int64_t end = std::min<int64_t>(job_n_, begin + chunk);
    if (begin < end) (*job_)(begin, end);
}

void threadpool::worker_loop(int index) {
    uint64_t seen = 0;
    for (;;) {
        int spins = 0;
        while (generation_.load(std::memory_order_acquire) == seen && !stopping_.load(std::memory_order_acquire)) {
            if (++spins < kSpins) {
                pause_hint();
                continue;
            }
            std::unique_lock<std::mutex> lock(mutex_);
            work_ready_.wait(lock, [&] { return stopping_.load() || generation_.load() != seen; });
        }
        if (stopping_.load(std::memory_order_acquire)) return;
        seen = generation_.load(std::memory_order_acquire);
        run_chunk(index);
        if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
            std::lock_guard<std::mutex> lock(mutex_);
            work_done_.notify_one();
        }
    }
}

void threadpool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
    if (n <= 0) return;
    if (n_threads_ == 1 || n == 1) {
        fn(0, n);
        return;
    }
    job_ = &fn;
    job_n_ = n;
    pending_.store(n_threads_ - 1, std::memory_order_relaxed);
    {
        // Under the mutex: a worker about to sleep either sees the new
        // generation in its wait predicate or is woken by the notify below.
        std::lock_guard<std::mutex> lock(mutex_);
        generation_.fetch_add(1, std::memory_order_release);
    }
    work_ready_.notify_all();
    run_chunk(0);
    for (int spins = 0; pending_.load(std::memory_order_acquire) != 0 && spins < kSpins; ++spins) pause_hint();
    if (pending_.load(std::memory_order_acquire) != 0) {
        std::unique_lock<std::mutex> lock(mutex_);
        work_done_.wait(lock, [&] { return pending_.load() == 0; });
    }
    job_ = nullptr;
}

void threadpool::parallel_chunks(int64_t n, int64_t chunk, const std::function<void(int64_t, int64_t)>& fn) {
    if (n <= 0) return;
    chunk = std::max<int64_t>(chunk, 1);
    const int64_t n_chunks = (n + chunk - 1) / chunk;
    if (n_threads_ == 1 || n_chunks == 1) {
        for (int64_t c = 0; c < n_chunks; ++c) fn(c * chunk, std::min(n, (c + 1) * chunk));
        return;
    }
    std::atomic<int64_t> next{0};
    parallel_for(std::min<int64_t>(n_threads_, n_chunks), [&](int64_t, int64_t) {
        for (int64_t c = next.fetch_add(1, std::memory_order_relaxed); c < n_chunks;
             c = next.fetch_add(1, std::memory_order_relaxed))
            fn(c * chunk, std::min(n, (c + 1) * chunk));
    });
}

}  // namespace nld
