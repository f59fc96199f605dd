// The blocked FP32 GEMM body, compiled once per ISA tier (float-gemm.cpp for the baseline,
// float-gemm-avx2.cpp and float-gemm-avx512.cpp with their flags): the compiler vectorises the
// contiguous column loop with the tier's registers. Contraction to FMA is off (-ffp-contract=off),
// and every C entry sums over k in increasing order, so all tiers give the reference's bits.
#pragma once

#include <algorithm>
#include <cstdint>

namespace bitvit::runtime {

// C[i][j] = Σ_k a[i][k]·bt[k][j], a [m, k], bt [k, n], C row stride ldc.
template <int64_t kRows, int64_t kCols>
inline void sgemm_blocked(int64_t m, int64_t n, int64_t k, const float * a, const float * bt, float * c, int64_t ldc) {
    // A kRows × kCols block of C stays in registers/L1 while k streams through.
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

// The tiers' entry points (defined in their own translation units).
void sgemm_avx2(int64_t m, int64_t n, int64_t k, const float * a, const float * bt, float * c, int64_t ldc);
void sgemm_avx512(int64_t m, int64_t n, int64_t k, const float * a, const float * bt, float * c, int64_t ldc);

}  // namespace bitvit::runtime
