#include "runtime/kernels/float-gemm.h"

#include <algorithm>

#include "runtime/kernels/bgemm.h"

namespace bitvit::runtime {

void sgemm_ref(int64_t m, int64_t n, int64_t k, const float * a, const float * bt, float * c, int64_t ldc) {
    for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
            float sum = 0.0f;
            for (int64_t p = 0; p < k; ++p) sum += a[i * k + p] * bt[p * n + j];
            c[i * ldc + j] = sum;
        }
    }
}

void sgemm(int64_t m, int64_t n, int64_t k, const float * a, const float * bt, float * c, int64_t ldc) {
    // A 4-row × 64-column block of C lives in registers/L1 while k streams through; the inner loop over
    // columns is contiguous in bt and C, so the compiler vectorises it without reordering any sum.
    constexpr int64_t kRows = 4, kCols = 64;
    for (int64_t i0 = 0; i0 < m; i0 += kRows) {
        const int64_t rows = std::min(kRows, m - i0);
        for (int64_t j0 = 0; j0 < n; j0 += kCols) {
            const int64_t cols = std::min(kCols, n - j0);
            float acc[kRows][kCols] = {};
            for (int64_t p = 0; p < k; ++p) {
                const float * b_row = bt + p * n + j0;
                for (int64_t r = 0; r < rows; ++r) {
                    const float av = a[(i0 + r) * k + p];
                    for (int64_t j = 0; j < cols; ++j) acc[r][j] += av * b_row[j];
                }
            }
            for (int64_t r = 0; r < rows; ++r) std::copy(acc[r], acc[r] + cols, c + (i0 + r) * ldc + j0);
        }
    }
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
