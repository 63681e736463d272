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
        stopping_ = true;
    }
    work_ready_.notify_all();
    for (auto& w : workers_) w.join();
}

void threadpool::run_chunk(int index) {
    const int64_t chunk = (job_n_ + n_threads_ - 1) / n_threads_;
    const int64_t begin = std::min<int64_t>(job_n_, chunk * index);
    const int64_t end = std::min<int64_t>(job_n_, begin + chunk);
    if (begin < end) (*job_)(begin, end);
}

void threadpool::worker_loop(int index) {
    uint64_t seen = 0;
    for (;;) {
        {
            std::unique_lock<std::mutex> lock(mutex_);
            work_ready_.wait(lock, [&] { return stopping_ || generation_ != seen; });
            if (stopping_) return;
            seen = generation_;
        }
        run_chunk(index);
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (--pending_ == 0) work_done_.notify_one();
        }
    }
}

void threadpool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
    if (n <= 0) return;
    if (n_threads_ == 1 || n == 1) {
        fn(0, n);
        return;
    }
    {
        std::lock_guard<std::mutex> lock(mutex_);
        job_ = &fn;
        job_n_ = n;
        pending_ = n_threads_ - 1;
        ++generation_;
    }
    work_ready_.notify_all();
    run_chunk(0);
    std::unique_lock<std::mutex> lock(mutex_);
    work_done_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
}

}  // namespace nld
