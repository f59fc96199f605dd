// parallel_for: every index exactly once whatever the thread count, nested and concurrent regions,
// and a chunk's exception reaching the caller.
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

#include "runtime/parallel.h"

using bitvit::runtime::parallel_for;

namespace {

std::vector<int> visits(int64_t n, int threads) {
    std::vector<std::atomic<int>> seen(static_cast<size_t>(n));
    parallel_for(n, threads, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) seen[i]++;
    });
    return std::vector<int>(seen.begin(), seen.end());
}

}  // namespace

TEST(ParallelFor, EveryIndexOnceForAnyThreadCount) {
    for (int64_t n : {0, 1, 2, 3, 7, 100}) {
        for (int threads : {0, 1, 2, 3, 8}) {
            EXPECT_EQ(visits(n, threads), std::vector<int>(static_cast<size_t>(n), 1)) << n << " " << threads;
        }
    }
}

TEST(ParallelFor, NestedRegionsRunAndCover) {
    std::atomic<int> total{0};
    parallel_for(4, 2, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
            parallel_for(10, 2, [&](int64_t b2, int64_t e2) { total += static_cast<int>(e2 - b2); });
        }
    });
    EXPECT_EQ(total.load(), 40);
}

TEST(ParallelFor, ConcurrentCallersEachGetTheirWork) {
    std::vector<std::thread> callers;
    std::atomic<int> failures{0};
    for (int c = 0; c < 4; ++c) {
        callers.emplace_back([&] {
            for (int rep = 0; rep < 50; ++rep) {
                if (visits(37, 2) != std::vector<int>(37, 1)) failures++;
            }
        });
    }
    for (auto & t : callers) t.join();
    EXPECT_EQ(failures.load(), 0);
}

TEST(ParallelFor, AChunksExceptionReachesTheCaller) {
    for (int64_t failing : {0, 9}) {  // a worker's chunk, then the caller's own
        EXPECT_THROW(parallel_for(10, 2,
                                  [&](int64_t b, int64_t e) {
                                      if (b <= failing && failing < e) throw std::runtime_error("chunk failed");
                                  }),
                     std::runtime_error);
    }
    EXPECT_EQ(visits(5, 2), std::vector<int>(5, 1));  // the pool still works afterwards
}
