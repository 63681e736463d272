// threadpool.h: a fixed pool of worker threads that runs parallel_for over an
// index range. The calling thread takes part, so n_threads = 1 runs inline.
// Work is split into contiguous chunks by index, so which thread computes an
// element never changes its arithmetic: results are identical for any count.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace nld {

class threadpool {
public:
    explicit threadpool(int n_threads);  // <= 0: hardware concurrency
    ~threadpool();
    threadpool(const threadpool&) = delete;
    threadpool& operator=(const threadpool&) = delete;

    int size() const { return n_threads_; }
    // Calls fn(begin, end) on disjoint chunks covering [0, n); returns when all
    // are done. fn must not throw.
    void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn);

private:
    void worker_loop(int index);
    void run_chunk(int index);

    int n_threads_;
    std::vector<std::thread> workers_;
    std::mutex mutex_;
    std::condition_variable work_ready_;
    std::condition_variable work_done_;
    const std::function<void(int64_t, int64_t)>* job_ = nullptr;
    int64_t job_n_ = 0;
    uint64_t generation_ = 0;
    int pending_ = 0;
    bool stopping_ = false;
};

}  // namespace nld
