// Integer products: LSQ 8-bit activations against 8-bit or ternary weights (TerViT), exact in int32.
#pragma once

#include <cstdint>

namespace bitvit::runtime {

// The largest k for which Σ_k a·b of int8 values cannot overflow int32: 128·128·k < 2^31.
constexpr int64_t kInt8GemmMaxK = 131071;

// C[i][j] = Σ_k a[i][k]·b[j][k] (A [m, k], B [n, k], int8, row-major); k ≤ kInt8GemmMaxK.
void int8_gemm_ref(int64_t m, int64_t n, int64_t k, const int8_t * a, const int8_t * b, int32_t * c, int64_t ldc);

}  // namespace bitvit::runtime
