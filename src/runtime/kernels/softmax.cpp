#include "runtime/kernels/softmax.h"

#include <stdexcept>
#include <string>

#include "runtime/kernels/softmax-body.h"

namespace bitvit::runtime {

float softmax_exp(float x) { return fixed_exp(x); }

void softmax_rows_ref(float * x, int64_t rows, int64_t n, int64_t ld) {
    for (int64_t r = 0; r < rows; ++r) {
        float * row = x + r * ld;
        float mx = row[0];
        for (int64_t j = 1; j < n; ++j) mx = std::max(mx, row[j]);
        float lanes[16] = {};
        for (int64_t j = 0; j < n; ++j) {
            row[j] = fixed_exp(row[j] - mx);
            lanes[j % 16] += row[j];
        }
        for (int width = 8; width >= 1; width /= 2) {
            for (int l = 0; l < width; ++l) lanes[l] += lanes[l + width];
        }
        for (int64_t j = 0; j < n; ++j) row[j] /= lanes[0];
    }
}

void softmax_rows(Isa isa, float * x, int64_t rows, int64_t n, int64_t ld) {
    if (static_cast<int>(isa) > static_cast<int>(best_supported_isa())) {
        throw std::invalid_argument(std::string("softmax_rows: this CPU cannot run the ") + isa_name(isa) + " tier");
    }
    switch (isa) {
        case Isa::scalar: return softmax_rows_body(x, rows, n, ld);
        case Isa::avx2: return softmax_rows_avx2(x, rows, n, ld);
        case Isa::avx512bw:
        case Isa::avx512vpopcntdq: return softmax_rows_avx512(x, rows, n, ld);
    }
}

void softmax_rows(float * x, int64_t rows, int64_t n, int64_t ld) {
    static const Isa isa = selected_isa();
    softmax_rows(isa, x, rows, n, ld);
}

}  // namespace bitvit::runtime
