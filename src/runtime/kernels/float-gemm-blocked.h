// The blocked FP32 GEMM body, compiled once per ISA tier (float-gemm.cpp for the baseline,
// float-gemm-avx2.cpp and float-gemm-avx512.cpp with their flags): the compiler vectorises the
// contiguous column loop with the tier's registers. Every C entry is a chain of fused multiply-adds
// over k in increasing order (std::fma: one rounding per step, VFMADD where the tier has FMA, the
// library's exact fmaf in the baseline build), and nothing else is contracted (-ffp-contract=off),
// so all tiers give the reference's bits.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace bitvit::runtime {

// One block of C: rows × cols sums over k, in increasing k. The full-size block is instantiated with
// constant bounds so its accumulators stay in registers; edge blocks pass their own sizes.
template <int64_t kRows, int64_t kCols, bool kFull>
inline void sgemm_block(int64_t rows, int64_t cols, int64_t n, int64_t k, const float * a, const float * bt,
                        float * c, int64_t ldc) {
    if constexpr (kFull) {
        rows = kRows;
        cols = kCols;
    }
    float acc[kRows][kCols] = {};
    for (int64_t p = 0; p < k; ++p) {
        const float * b_row = bt + p * n;
        for (int64_t r = 0; r < rows; ++r) {
            const float av = a[r * k + p];
            for (int64_t j = 0; j < cols; ++j) acc[r][j] = std::fma(av, b_row[j], acc[r][j]);
        }
    }
    for (int64_t r = 0; r < rows; ++r) std::copy(acc[r], acc[r] + cols, c + r * ldc);
}

// C[i][j] = Σ_k a[i][k]·bt[k][j], a [m, k], bt [k, n], C row stride ldc.
template <int64_t kRows, int64_t kCols>
inline void sgemm_blocked(int64_t m, int64_t n, int64_t k, const float * a, const float * bt, float * c, int64_t ldc) {
    // A kRows × kCols block of C stays in registers while k streams through.
    for (int64_t i0 = 0; i0 < m; i0 += kRows) {
        const int64_t rows = std::min(kRows, m - i0);
        for (int64_t j0 = 0; j0 < n; j0 += kCols) {
            const int64_t cols = std::min(kCols, n - j0);
            const float * a_block = a + i0 * k;
            float * c_block = c + i0 * ldc + j0;
            if (rows == kRows && cols == kCols) {
                sgemm_block<kRows, kCols, true>(rows, cols, n, k, a_block, bt + j0, c_block, ldc);
            } else {
                sgemm_block<kRows, kCols, false>(rows, cols, n, k, a_block, bt + j0, c_block, ldc);
            }
        }
    }
}

// The tiers' entry points (defined in their own translation units).
void sgemm_avx2(int64_t m, int64_t n, int64_t k, const float * a, const float * bt, float * c, int64_t ldc);
void sgemm_avx512(int64_t m, int64_t n, int64_t k, const float * a, const float * bt, float * c, int64_t ldc);

}  // namespace bitvit::runtime
