// The softmax, GELU and LayerNorm bodies, compiled once per ISA tier (activations.cpp for the baseline,
// activations-avx2.cpp and activations-avx512.cpp with their flags): plain loops the compiler
// vectorises with the tier's registers. Every operation is written out (std::fma for each fused step,
// nothing else contracted: -ffp-contract=off), so every tier gives the reference's bits
// (activations.h). Softmax's exponentials are one loop of their own, and its sum another over 16
// lanes: the shapes GCC vectorises.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace bitvit::runtime {

// e^x by Cephes' expf: x = n·ln 2 + r (n = round(x·log2 e), ln 2 split in two for an exact-enough
// r, |r| ≤ ln2/2), e^r ≈ 1 + r + r²·P(r) with a degree-5 P, times 2^n built in the exponent bits.
// 0 below −87.336…, where e^x is subnormal (softmax's e^(s − max s) only needs x ≤ 0).
inline float fixed_exp(float x) {
    const float kLowest = -87.3365478515625f;  // ln(2^-126), rounded down to a float
    const bool underflow = !(x >= kLowest);     // also NaN
    const float xc = underflow ? kLowest : std::min(x, 0.0f);
    const float n = std::floor(std::fma(xc, 1.44269504088896341f, 0.5f));
    float r = std::fma(n, -0.693359375f, xc);
    r = std::fma(n, 2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = std::fma(p, r, 1.3981999507e-3f);
    p = std::fma(p, r, 8.3334519073e-3f);
    p = std::fma(p, r, 4.1665795894e-2f);
    p = std::fma(p, r, 1.6666665459e-1f);
    p = std::fma(p, r, 5.0000001201e-1f);
    const float y = std::fma(p, r * r, r) + 1.0f;
    const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n, n in [−126, 0]
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return underflow ? 0.0f : y * scale;
}

// Σ f(x_i) over 16 lanes (lane l takes i ≡ l mod 16) combined pairwise in a fixed order (8 + 8,
// 4 + 4, 2 + 2, 1 + 1): blocks of 16 the compiler keeps in one or two vector registers, then the
// tail, and a 4-step combination instead of a chain of 15 dependent additions.
template <class F>
inline float lane_sum16(const float * x, int64_t n, F f) {
    float lanes[16] = {};
    int64_t i0 = 0;
    for (; i0 + 16 <= n; i0 += 16) {
        for (int l = 0; l < 16; ++l) lanes[l] += f(x[i0 + l]);
    }
    for (int l = 0; i0 + l < n; ++l) lanes[l] += f(x[i0 + l]);
    for (int width = 8; width >= 1; width /= 2) {
        for (int l = 0; l < width; ++l) lanes[l] += lanes[l + width];
    }
    return lanes[0];
}

// One row of n ≥ 1 finite values in place: e^(x − max x), summed in 16 fixed lanes (lane l takes
// j ≡ l mod 16) combined pairwise in a fixed order, then each divided by the sum.
inline void softmax_row(float * x, int64_t n) {
    float mx = x[0];
    for (int64_t j = 1; j < n; ++j) mx = std::max(mx, x[j]);  // exact in any order
    for (int64_t j = 0; j < n; ++j) x[j] = fixed_exp(x[j] - mx);
    const float sum = lane_sum16(x, n, [](float v) { return v; });
    for (int64_t j = 0; j < n; ++j) x[j] /= sum;
}

inline void softmax_rows_body(float * x, int64_t rows, int64_t n, int64_t ld) {
    for (int64_t r = 0; r < rows; ++r) softmax_row(x + r * ld, n);
}

// erf(x) by Abramowitz & Stegun 7.1.26, odd-extended: 1 − t·(a1 + t·(a2 + t·(a3 + t·(a4 + t·a5))))·e^(−x²)
// with t = 1/(1 + p·|x|); absolute error ≤ 1.5e-7.
inline float fixed_erf(float x) {
    const float ax = std::fabs(x);
    const float t = 1.0f / std::fma(0.3275911f, ax, 1.0f);
    float poly = 1.061405429f;
    poly = std::fma(poly, t, -1.453152027f);
    poly = std::fma(poly, t, 1.421413741f);
    poly = std::fma(poly, t, -0.284496736f);
    poly = std::fma(poly, t, 0.254829592f);
    const float y = std::fma(-(t * poly), fixed_exp(-(ax * ax)), 1.0f);
    return std::copysign(y, x);
}

// GELU(x) = x/2·(1 + erf(x/√2)), the exact (erf) form.
inline float fixed_gelu(float x) { return 0.5f * x * (1.0f + fixed_erf(x * 0.707106781186547524f)); }

inline void gelu_body(float * x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] = fixed_gelu(x[i]);
}

inline void layer_norm_rows_body(const float * x, int64_t rows, int64_t dim, const float * weight, const float * bias,
                                 float eps, float * out) {
    for (int64_t r = 0; r < rows; ++r) {
        const float * row = x + r * dim;
        float * y = out + r * dim;
        const float mean = lane_sum16(row, dim, [](float v) { return v; }) / static_cast<float>(dim);
        const float var = lane_sum16(row, dim, [mean](float v) { return (v - mean) * (v - mean); }) / static_cast<float>(dim);
        const float inv = 1.0f / std::sqrt(var + eps);
        for (int64_t i = 0; i < dim; ++i) y[i] = (row[i] - mean) * inv * weight[i] + bias[i];
    }
}

// The tiers' entry points (defined in their own translation units).
void softmax_rows_avx2(float * x, int64_t rows, int64_t n, int64_t ld);
void softmax_rows_avx512(float * x, int64_t rows, int64_t n, int64_t ld);
void gelu_avx2(float * x, int64_t n);
void gelu_avx512(float * x, int64_t n);
void layer_norm_rows_avx2(const float * x, int64_t rows, int64_t dim, const float * weight, const float * bias, float eps,
                          float * out);
void layer_norm_rows_avx512(const float * x, int64_t rows, int64_t dim, const float * weight, const float * bias,
                            float eps, float * out);

}  // namespace bitvit::runtime
