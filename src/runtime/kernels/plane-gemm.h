// Dot products of binary planes (operand.h): the general form behind every bit-wise product that is
// not plain XNOR (±1 × ±1, bgemm.h). A plane row is a pair of canonical bit vectors (sign s, mask m),
// either of which may be absent: no mask means every value is present, no sign means all +1. Then
//     Σ_j x_j·w_j = popcount(mx & mw) − 2·popcount(mx & mw & (sx ^ sw))
// which is AND–popcount for a {0, 1} plane against a ±1 plane (popcount(mx) − 2·popcount(mx & sw)),
// the product of SAB / Bool / GSB attention with binary values.
#pragma once

#include <cstdint>

namespace bitvit::runtime {

// Bit vectors of a plane, rows × words (words = b1_words(k)); a null pointer is an absent vector.
struct PlaneBits {
    const uint64_t * sign = nullptr;
    const uint64_t * mask = nullptr;
};

// Reference: C[i][j] = Σ_k x_i[k]·w_j[k] for i < m, j < n (C row stride ldc).
void plane_gemm_ref(int64_t m, int64_t n, int64_t k, PlaneBits x, PlaneBits w, int32_t * c, int64_t ldc);

// Σ_k of each row's values: popcount(m) − 2·popcount(s), for `rows` rows.
void plane_row_sums(int64_t rows, int64_t k, PlaneBits p, int32_t * sums);

}  // namespace bitvit::runtime
