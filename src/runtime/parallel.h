// Splitting work over threads: the runtime parallelises one image over tokens and heads (batch 1)
// and a batch over images.
#pragma once

#include <cstdint>
#include <functional>

namespace bitvit::runtime {

// Calls fn(begin, end) on `threads` contiguous chunks of [0, n) (fewer when n is small), on a pool
// of long-lived workers and the calling thread, and returns when every chunk is done. threads ≤ 1
// calls fn(0, n) directly; a call made while the pool is busy (from another thread, or nested in a
// chunk) runs its chunks one after another on the calling thread. An exception thrown by a chunk is
// rethrown here once every chunk has finished.
void parallel_for(int64_t n, int threads, const std::function<void(int64_t, int64_t)> & fn);

}  // namespace bitvit::runtime
