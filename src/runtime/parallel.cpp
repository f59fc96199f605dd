#include "runtime/parallel.h"

#include <algorithm>
#include <thread>
#include <vector>

namespace bitvit::runtime {

void parallel_for(int64_t n, int threads, const std::function<void(int64_t, int64_t)> & fn) {
    const int64_t chunks = std::min<int64_t>(std::max(threads, 1), n);
    if (chunks <= 1) {
        if (n > 0) fn(0, n);
        return;
    }
    std::vector<std::thread> pool;
    for (int64_t c = 0; c + 1 < chunks; ++c) pool.emplace_back(fn, n * c / chunks, n * (c + 1) / chunks);
    fn(n * (chunks - 1) / chunks, n);
    for (auto & t : pool) t.join();
}

}  // namespace bitvit::runtime
