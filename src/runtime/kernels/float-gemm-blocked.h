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

// A block of `rows` ≤ kRows rows and kCols columns with the row count made a constant as well, so an
// edge block's accumulators stay in registers like the full block's (a Swin merge at 7×7 tokens is
// 49 rows: one in six blocks is an edge).
template <int64_t kRows, int64_t kCols>
inline void sgemm_rows(int64_t rows, int64_t n, int64_t k, const float * a, const float * bt, float * c, int64_t ldc) {
    if constexpr (kRows > 1) {
        if (rows < kRows) return sgemm_rows<kRows - 1, kCols>(rows, n, k, a, bt, c, ldc);
    }
    sgemm_block<kRows, kCols, true>(kRows, kCols, n, k, a, bt, c, ldc);
}

// C[i][j] = Σ_k a[i][k]·bt[k][j], a [m, k], bt [k, n], C row stride ldc.
template <int64_t kRows, int64_t kCols>
inline void sgemm_blocked(int64_t m, int64_t n, int64_t k, const float * a, const float * bt, float * c, int64_t ldc) {
    // A kRows × kCols block of C stays in registers while k streams through. The last columns take
    // constant widths kCols/2 and kCols/4 where they fill them; only a narrower rest is generic.
    constexpr int64_t kHalf = kCols / 2, kQuarter = kCols / 4;
    for (int64_t i0 = 0; i0 < m; i0 += kRows) {
        const int64_t rows = std::min(kRows, m - i0);
        const float * a_block = a + i0 * k;
        float * c_rows = c + i0 * ldc;
        int64_t j0 = 0;
        for (; j0 + kCols <= n; j0 += kCols) sgemm_rows<kRows, kCols>(rows, n, k, a_block, bt + j0, c_rows + j0, ldc);
        if (j0 + kHalf <= n) {
            sgemm_rows<kRows, kHalf>(rows, n, k, a_block, bt + j0, c_rows + j0, ldc);
            j0 += kHalf;
        }
        if (j0 + kQuarter <= n) {
            sgemm_rows<kRows, kQuarter>(rows, n, k, a_block, bt + j0, c_rows + j0, ldc);
            j0 += kQuarter;
        }
        if (j0 < n) sgemm_block<kRows, kCols, false>(rows, n - j0, n, k, a_block, bt + j0, c_rows + j0, ldc);
    }
}

// The tiers' entry points (defined in their own translation units).
void sgemm_avx2(int64_t m, int64_t n, int64_t k, const float * a, const float * bt, float * c, int64_t ldc);
void sgemm_avx512(int64_t m, int64_t n, int64_t k, const float * a, const float * bt, float * c, int64_t ldc);

}  // namespace bitvit::runtime
