// threadpool.h: a fixed pool of worker threads that runs parallel_for over an
// index range. The calling thread takes part, so n_threads = 1 runs inline.
// Work is split into contiguous chunks by index (parallel_for: one per
// thread; parallel_chunks: many, taken by whichever thread is free), and
// which thread computes an element never changes its arithmetic: results
// are identical for any count.
// A forward pass runs hundreds of short parallel_for calls, so idle workers
// spin (with a pause hint) for about 50 microseconds before they sleep on a
// condition variable, and the caller spins the same way for the last chunk.
#pragma once

#include <atomic>
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
    // Calls fn(begin, end) on the chunks [c * chunk, (c + 1) * chunk) of
    // [0, n) (the last one shorter), handed out in order to whichever thread
    // is free: a thread that runs slower (another process on its core) takes
    // fewer chunks instead of holding the others at the end of the call.
    void parallel_chunks(int64_t n, int64_t chunk, const std::function<void(int64_t, int64_t)>& fn);

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
    std::atomic<uint64_t> generation_{0};  // one step per job; written under mutex_
    std::atomic<int> pending_{0};          // worker chunks of the current job not yet done
    std::atomic<bool> stopping_{false};
};

}  // namespace nld
