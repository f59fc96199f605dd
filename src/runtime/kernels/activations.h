// The runtime's full-precision activations and LayerNorm, vectorised per ISA tier with identical bits
// on every tier: each evaluates one fixed formula in one fixed order (activations-body.h) instead of
// the C library's expf / erff.
//   softmax  softmax(x)_j = e^(x_j − max x) / Σ_i e^(x_i − max x), for full-precision attention maps
//            (FP, LSQ, TWN, TerViT, GSB, Bi-ViT); e^x within 2 ulp of std::exp. Against LibTorch's
//            softmax (its own vectorised exp, another summation order) maps differ by a few ulp.
//   GELU     x/2·(1 + erf(x/√2)), for MLPs whose fc2 input is not reduced to a sign (FP, LSQ, TWN,
//            TerViT, GSB, BiViT's W1A32 MLP); erf by Abramowitz & Stegun 7.1.26 (absolute error ≤
//            1.5e-7). Measured against LibTorch 1.13's CPU GELU on a 1e-4 grid: the same value bit for
//            bit on 91 % of [−10, 10] (glibc's erff: 69 %), and the same sign on all of [−30, −1],
//            where GELU underflows to −0 below x ≈ −5.5431 (glibc's erff: 5 sign differences).
//   LayerNorm (x − mean)·(var + eps)^-½·weight + bias per row; mean and variance summed like
//            softmax's denominator, in 16 fixed lanes (lane l takes i ≡ l mod 16) combined pairwise —
//            a sum the vector registers hold, not one serial chain of dependent additions.
#pragma once

#include <cstdint>

#include "runtime/cpu-features.h"

namespace bitvit::runtime {

// The formula on one value (the tiers' e^x), for tests.
float softmax_exp(float x);

// Reference: each of `rows` rows of n ≥ 1 finite values (row stride ld) replaced by its softmax —
// exponentials one at a time, the sum in 16 fixed lanes (lane l takes j ≡ l mod 16) added pairwise.
void softmax_rows_ref(float * x, int64_t rows, int64_t n, int64_t ld);
// The same bits, vectorised for the selected ISA tier (or `isa`, which the CPU must support).
void softmax_rows(float * x, int64_t rows, int64_t n, int64_t ld);
void softmax_rows(Isa isa, float * x, int64_t rows, int64_t n, int64_t ld);

// The GELU formula on one value, for tests.
float gelu_value(float x);
// Reference: x[i] = GELU(x[i]) for i < n, one at a time.
void gelu_ref(float * x, int64_t n);
// The same bits, vectorised for the selected ISA tier (or `isa`).
void gelu(float * x, int64_t n);
void gelu(Isa isa, float * x, int64_t n);

// Reference: out[r][i] = LayerNorm of row r of x (rows × dim, contiguous; out == x allowed), one
// value at a time.
void layer_norm_rows_ref(const float * x, int64_t rows, int64_t dim, const float * weight, const float * bias,
                         float eps, float * out);
// The same bits, vectorised for the selected ISA tier (or `isa`).
void layer_norm_rows(const float * x, int64_t rows, int64_t dim, const float * weight, const float * bias, float eps,
                     float * out);
void layer_norm_rows(Isa isa, const float * x, int64_t rows, int64_t dim, const float * weight, const float * bias,
                     float eps, float * out);

// GELU(x) < 0 exactly for x in (floor, 0): below the floor erf(x/√2) rounds to −1 and GELU gives −0
// (which binarizes to +1). Found once, by bisection down to adjacent floats.
float gelu_negative_floor();
// The sign GELU's output has, without computing it: −1 or +1 (sign(0) = sign(−0) = +1). Above the
// floor 1 + erf(x/√2) is in (0, 1], so GELU(x) < 0 exactly when 0.5·x < 0 (0.5·x only underflows
// to −0 for the smallest subnormals, and then so does GELU(x)).
inline float gelu_sign(float x, float floor) { return (x > floor) & (0.5f * x < 0.0f) ? -1.0f : 1.0f; }

}  // namespace bitvit::runtime
