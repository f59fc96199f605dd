#include "runtime/kernels/float-gemm.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "runtime/cpu-features.h"
#include "runtime/kernels/bgemm.h"
#include "runtime/kernels/float-gemm-blocked.h"

namespace bitvit::runtime {

void sgemm_ref(int64_t m, int64_t n, int64_t k, const float * a, const float * bt, float * c, int64_t ldc) {
    for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
            float sum = 0.0f;
            for (int64_t p = 0; p < k; ++p) sum = std::fma(a[i * k + p], bt[p * n + j], sum);
            c[i * ldc + j] = sum;
        }
    }
}

void sgemm(Isa isa, int64_t m, int64_t n, int64_t k, const float * a, const float * bt, float * c, int64_t ldc) {
    if (static_cast<int>(isa) > static_cast<int>(best_supported_isa())) {
        throw std::invalid_argument(std::string("sgemm: this CPU cannot run the ") + isa_name(isa) + " tier");
    }
    switch (isa) {
        case Isa::scalar: return sgemm_blocked<4, 64>(m, n, k, a, bt, c, ldc);
        case Isa::avx2: return sgemm_avx2(m, n, k, a, bt, c, ldc);
        case Isa::avx512bw:
        case Isa::avx512vpopcntdq: return sgemm_avx512(m, n, k, a, bt, c, ldc);
    }
}

void sgemm(int64_t m, int64_t n, int64_t k, const float * a, const float * bt, float * c, int64_t ldc) {
    static const Isa isa = selected_isa();
    sgemm(isa, m, n, k, a, bt, c, ldc);
}

void f32_plane_gemm_ref(int64_t m, int64_t n, int64_t k, const float * a, PlaneBits w, float * c, int64_t ldc) {
    const int64_t kw = b1_words(k);
    for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
            float sum = 0.0f;
            for (int64_t p = 0; p < k; ++p) {
                const uint64_t bit = uint64_t{1} << (p % 64);
                if (w.mask && !(w.mask[j * kw + p / 64] & bit)) continue;
                const bool negative = w.sign && (w.sign[j * kw + p / 64] & bit);
                sum += negative ? -a[i * k + p] : a[i * k + p];
            }
            c[i * ldc + j] = sum;
        }
    }
}

}  // namespace bitvit::runtime
