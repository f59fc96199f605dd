// Splitting work over threads: the runtime parallelises one image over tokens and heads (batch 1)
// and a batch over images.
#pragma once

#include <cstdint>
#include <functional>

namespace bitvit::runtime {

// Calls fn(begin, end) on `threads` contiguous chunks of [0, n) (fewer when n is small), the last on
// the calling thread, and returns when every chunk is done. threads ≤ 1 calls fn(0, n) directly.
void parallel_for(int64_t n, int threads, const std::function<void(int64_t, int64_t)> & fn);

}  // namespace bitvit::runtime
