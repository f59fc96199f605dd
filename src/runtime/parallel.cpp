#include "runtime/parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace bitvit::runtime {
namespace {

thread_local bool in_worker = false;

// Workers that live as long as the process: a forward pass opens about ten parallel regions per
// block, and starting threads for each one cost more than the work of the smaller regions. Waiting
// spins (yielding) for up to kSpin before sleeping, since the next region usually follows within
// microseconds and a wake-up through the condition variable costs tens of them — more on a virtual
// machine. 1 ms outlasts the serial stretches and chunk imbalances of one image: with 100 µs, Swin-T
// at batch 1 on 2 threads had a median 18–29 % above its best run (the workers fell asleep between
// regions); with 1 ms, 7–12 %. One job runs at a time; a region opened while the pool is busy
// (another caller, or a nested region) runs on its own thread instead, which gives the same results.
constexpr auto kSpin = std::chrono::microseconds(1000);

// Spins until ready() or kSpin has passed; true when ready() became true.
template <typename Ready>
bool spin_until(Ready ready) {
    const auto until = std::chrono::steady_clock::now() + kSpin;
    while (!ready()) {
        if (std::chrono::steady_clock::now() > until) return false;
        std::this_thread::yield();
    }
    return true;
}

class WorkerPool {
public:
    static WorkerPool & instance() {
        static WorkerPool pool;
        return pool;
    }

    ~WorkerPool() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_ = true;
        }
        wake_.notify_all();
        for (auto & t : workers_) t.join();
    }

    // Runs fn on chunk c = [n·c/chunks, n·(c+1)/chunks) for every c: chunks 0 … chunks−2 on workers,
    // the last on the caller. Returns false (and runs nothing) when the pool is busy.
    bool run(int64_t n, int64_t chunks, const std::function<void(int64_t, int64_t)> & fn) {
        std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
        if (!busy.owns_lock() || in_worker) return false;
        while (static_cast<int64_t>(workers_.size()) < chunks - 1) {
            const int64_t index = static_cast<int64_t>(workers_.size());
            workers_.emplace_back([this, index] { work(index); });
        }
        {
            std::lock_guard<std::mutex> lock(mutex_);
            job_ = &fn;
            n_ = n;
            chunks_ = chunks;
            pending_ = chunks - 1;
            error_ = nullptr;
            generation_.fetch_add(1);
        }
        wake_.notify_all();
        std::exception_ptr own_error;
        try {
            fn(n * (chunks - 1) / chunks, n);
        } catch (...) {
            own_error = std::current_exception();
        }
        spin_until([this] { return pending_.load() == 0; });
        std::unique_lock<std::mutex> lock(mutex_);
        done_.wait(lock, [this] { return pending_.load() == 0; });
        if (own_error) std::rethrow_exception(own_error);
        if (error_) std::rethrow_exception(error_);
        return true;
    }

private:
    void work(int64_t index) {
        in_worker = true;
        uint64_t seen = 0;
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            lock.unlock();
            spin_until([&] { return generation_.load() != seen || stop_.load(); });
            lock.lock();
            wake_.wait(lock, [&] { return stop_.load() || generation_.load() != seen; });
            if (stop_) return;
            seen = generation_.load();
            if (index >= chunks_ - 1) continue;  // this job needs fewer workers
            const auto * job = job_;
            const int64_t begin = n_ * index / chunks_, end = n_ * (index + 1) / chunks_;
            lock.unlock();
            std::exception_ptr error;
            try {
                (*job)(begin, end);
            } catch (...) {
                error = std::current_exception();
            }
            lock.lock();
            if (error && !error_) error_ = error;
            if (pending_.fetch_sub(1) == 1) done_.notify_one();
        }
    }

    std::mutex busy_;   // held by the caller whose job is running
    std::mutex mutex_;  // guards everything below
    std::condition_variable wake_, done_;
    std::vector<std::thread> workers_;
    const std::function<void(int64_t, int64_t)> * job_ = nullptr;
    int64_t n_ = 0, chunks_ = 0;
    std::atomic<int64_t> pending_{0};      // chunks of the current job still running on workers
    std::atomic<uint64_t> generation_{0};  // bumped (under mutex_) for every job
    std::exception_ptr error_;
    std::atomic<bool> stop_{false};
};

}  // namespace

void parallel_for(int64_t n, int threads, const std::function<void(int64_t, int64_t)> & fn) {
    const int64_t chunks = std::min<int64_t>(std::max(threads, 1), n);
    if (chunks <= 1) {
        if (n > 0) fn(0, n);
        return;
    }
    if (WorkerPool::instance().run(n, chunks, fn)) return;
    for (int64_t c = 0; c < chunks; ++c) fn(n * c / chunks, n * (c + 1) / chunks);  // same chunks, one thread
}

}  // namespace bitvit::runtime
