// The 512-bit vector operations shared by the AVX-512BW and AVX-512 VPOPCNTDQ binary-GEMM tiers
// (the tiers differ only in their popcount). Include only from translation units compiled with the
// AVX-512 flags.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace bitvit::runtime {

struct Avx512Ops {
    static constexpr int64_t kLanes = 8;
    using Vec = __m512i;
    static Vec zero() { return _mm512_setzero_si512(); }
    static Vec load(const uint64_t * p) { return _mm512_loadu_si512(p); }
    static Vec broadcast(uint64_t w) { return _mm512_set1_epi64(static_cast<long long>(w)); }
    static Vec xor_(Vec a, Vec b) { return _mm512_xor_si512(a, b); }
    static Vec and_(Vec a, Vec b) { return _mm512_and_si512(a, b); }
    static void store_result(int32_t * c, Vec counts, int64_t k, int64_t n) {
        const __m512i r = k < 0 ? counts : _mm512_sub_epi64(_mm512_set1_epi64(k), _mm512_slli_epi64(counts, 1));
        _mm256_mask_storeu_epi32(c, static_cast<__mmask8>((1u << n) - 1), _mm512_cvtepi64_epi32(r));
    }
    static void store_scaled(float * out, Vec counts0, Vec counts1, int64_t k, int64_t n, float row_scale,
                             const float * col_scale, const float * bias) {
        // Both accumulators' counts (≤ K, so int32: the low dword of each 64-bit lane) in one zmm
        // with a single two-source permute, then k − 2·count and the float epilogue on 16 lanes.
        const __mmask16 lanes = static_cast<__mmask16>((1u << n) - 1);
        const __m512i low_dwords = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        const __m512i counts = _mm512_permutex2var_epi32(counts0, low_dwords, counts1);
        const __m512 dot = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_set1_epi32(static_cast<int>(k)), _mm512_slli_epi32(counts, 1)));
        const __m512 scale = _mm512_mul_ps(_mm512_set1_ps(row_scale), _mm512_maskz_loadu_ps(lanes, col_scale));
        __m512 value = _mm512_mul_ps(scale, dot);
        if (bias) value = _mm512_add_ps(value, _mm512_maskz_loadu_ps(lanes, bias));
        _mm512_mask_storeu_ps(out, lanes, value);
    }
    static uint64_t negative_bits(const float * x, int64_t n) {
        // Ordered x < 0: false for −0 and NaN, which are +1 by the convention.
        uint64_t bits = 0;
        for (int64_t b = 0; b < n; b += 16) {
            const __mmask16 lanes = static_cast<__mmask16>(n - b >= 16 ? 0xFFFF : (1u << (n - b)) - 1);
            const __m512 v = _mm512_maskz_loadu_ps(lanes, x + b);
            bits |= static_cast<uint64_t>(_mm512_mask_cmp_ps_mask(lanes, v, _mm512_setzero_ps(), _CMP_LT_OQ)) << b;
        }
        return bits;
    }
};

}  // namespace bitvit::runtime
