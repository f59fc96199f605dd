#include "spec/windows.h"

#include <cstddef>

namespace bitvit::spec {

std::vector<int64_t> swin_relative_position_index(int64_t M) {
    const int64_t T = M * M;
    std::vector<int64_t> index(static_cast<std::size_t>(T * T));
    for (int64_t a = 0; a < T; ++a) {
        for (int64_t b = 0; b < T; ++b) {
            const int64_t dy = a / M - b / M + M - 1, dx = a % M - b % M + M - 1;
            index[static_cast<std::size_t>(a * T + b)] = dy * (2 * M - 1) + dx;
        }
    }
    return index;
}

std::vector<float> swin_shift_mask(int64_t resolution, int64_t M, int64_t shift) {
    const int64_t R = padded_resolution(resolution, M), per_side = R / M, T = M * M;
    auto region = [&](int64_t i) -> int64_t { return i < R - M ? 0 : i < R - shift ? 1 : 2; };
    std::vector<float> mask(static_cast<std::size_t>(per_side * per_side * T * T));
    for (int64_t w = 0; w < per_side * per_side; ++w) {
        const int64_t y0 = w / per_side * M, x0 = w % per_side * M;
        auto label = [&](int64_t t) { return 3 * region(y0 + t / M) + region(x0 + t % M); };
        for (int64_t a = 0; a < T; ++a) {
            for (int64_t b = 0; b < T; ++b) mask[static_cast<std::size_t>((w * T + a) * T + b)] = label(a) == label(b) ? 0.0f : -100.0f;
        }
    }
    return mask;
}

}  // namespace bitvit::spec
