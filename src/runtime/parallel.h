// Splitting work over threads: the runtime parallelises one image over tokens and heads (batch 1)
// and a batch over images.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>

namespace bitvit::runtime {

// Calls fn(begin, end) on `threads` contiguous chunks of [0, n) (fewer when n is small), on a pool
// of long-lived workers and the calling thread, and returns when every chunk is done. threads ≤ 1
// calls fn(0, n) directly; a call made while the pool is busy (from another thread, or nested in a
// chunk) runs its chunks one after another on the calling thread. An exception thrown by a chunk is
// rethrown here once every chunk has finished.
void parallel_for(int64_t n, int threads, const std::function<void(int64_t, int64_t)> & fn);

// The threads worth giving a region of `macs` multiply-adds: splitting costs microseconds, so a
// region below kMinMacsPerThread per extra thread (the 28×28 models' layers) stays on one thread.
constexpr int64_t kMinMacsPerThread = int64_t{1} << 22;
// What one value of an element-wise pass (residual add, LayerNorm, activation) counts as in
// threads_for: a pass over 16k values (~15 µs) is worth a second thread.
constexpr int64_t kElementwiseMacs = 256;
inline int threads_for(int64_t macs, int threads) {
    const int64_t worth = std::max<int64_t>(1, macs / kMinMacsPerThread);
    return static_cast<int>(std::min<int64_t>(std::max(threads, 1), worth));
}

}  // namespace bitvit::runtime
