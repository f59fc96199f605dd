// FP32 products: the layers every method keeps in full precision (patch embedding, head, FP sites)
// and binary weights against FP32 activations (W1A32, BiViT's MLP).
#pragma once

#include <cstdint>

#include "runtime/cpu-features.h"
#include "runtime/kernels/plane-gemm.h"

namespace bitvit::runtime {

// C[i][j] = Σ_k a[i][k]·bt[k][j]: A [m, k] row-major, B given transposed as bt [k, n] (row stride n),
// C row stride ldc. Each C entry is a chain of fused multiply-adds over k in increasing order.
void sgemm_ref(int64_t m, int64_t n, int64_t k, const float * a, const float * bt, float * c, int64_t ldc);
// The same sums (bit for bit), register-blocked, vectorised for the selected ISA tier (or `isa`,
// which the CPU must support: AVX-512BW and VPOPCNTDQ share the 512-bit float path).
void sgemm(int64_t m, int64_t n, int64_t k, const float * a, const float * bt, float * c, int64_t ldc);
void sgemm(Isa isa, int64_t m, int64_t n, int64_t k, const float * a, const float * bt, float * c, int64_t ldc);

// C[i][j] = Σ_k a[i][k]·w_j[k] for a binary plane w (n rows, plane-gemm.h): each value is added,
// subtracted or skipped as w's bits say — no multiplications, 1 bit of weight per value.
void f32_plane_gemm_ref(int64_t m, int64_t n, int64_t k, const float * a, PlaneBits w, float * c, int64_t ldc);
// The same sums, bit for bit for finite a, at the FP32 GEMM's speed: w comes transposed (wt: k rows
// of b1_words(n) words, canonical bits), its values (±1, or 0 outside its mask) are expanded to
// floats one row of k at a time, and the tiered sgemm multiplies — a fused multiply-add by ±1 or 0 is
// exactly the reference's add, subtract or skip (x86 has FMA: it beats a multiply-free sign select).
void f32_plane_gemm(Isa isa, int64_t m, int64_t n, int64_t k, const float * a, PlaneBits wt, float * c, int64_t ldc);

}  // namespace bitvit::runtime
