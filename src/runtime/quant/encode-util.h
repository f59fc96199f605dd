// Helpers the runtime's activation encoders share (runtime/quant/*.cpp): parameter views, bit
// packing by predicate (scalar and 4-wide SSE2 compares, the same float operations either way),
// row maxima and operand construction. Internal to runtime/quant.
#pragma once

#include <emmintrin.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "runtime/quant/act-quantizer.h"

namespace bitvit::runtime::quant {

// A parameter as one call sees it: one value per column (token scope, [C]) or one value for the
// whole call (a per-head site's head, or a scalar parameter).
struct ParamView {
    const float * data = nullptr;
    bool per_column = false;
    float operator[](int64_t j) const { return per_column ? data[j] : data[0]; }
};
ParamView param_view(const ActQuantizer & q, const char * key, SiteScope scope, int64_t head);

// Round to nearest, ties to even (torch.round), for |u| < 2^22: adding and removing 1.5·2^23 leaves
// no fraction bits under the default rounding mode. std::nearbyint does the same but is a library
// call in the baseline x86-64 build (no SSE4.1 ROUNDSS), which kept LSQ encoding scalar.
inline float round_half_even(float u) {
    constexpr float kMagic = 12582912.0f;  // 1.5·2^23
    return (u + kMagic) - kMagic;
}

// rows × k bits, bit (r, j) = pred(r, j, x[r·ld + j]); each word is built in a register.
template <typename Pred>
std::vector<uint64_t> pack_bits(const float * x, int64_t rows, int64_t k, int64_t ld, Pred pred) {
    const int64_t kw = b1_words(k);
    std::vector<uint64_t> bits(static_cast<size_t>(rows * kw));
    for (int64_t r = 0; r < rows; ++r) {
        const float * row = x + r * ld;
        for (int64_t w = 0; w < kw; ++w) {
            const int64_t base = w * 64, n = std::min<int64_t>(64, k - base);
            uint64_t word = 0;
            for (int64_t b = 0; b < n; ++b) word |= static_cast<uint64_t>(pred(r, base + b, row[base + b])) << b;
            bits[static_cast<size_t>(r * kw + w)] = word;
        }
    }
    return bits;
}

enum class Cmp { lt, gt, ge };
// Bit (r, j) = cmp(x + shift[j], threshold[r]) (shift optional; threshold one value, or one per row),
// 4 floats per SSE2 compare (baseline x86-64). Same float operations as the scalar form, so the same bits.
template <Cmp C>
std::vector<uint64_t> pack_compare(const float * x, int64_t rows, int64_t k, int64_t ld, const ParamView * shift,
                                   const std::vector<float> & threshold) {
    const int64_t kw = b1_words(k);
    std::vector<uint64_t> bits(static_cast<size_t>(rows * kw));
    auto cmp_scalar = [](float v, float t) { return C == Cmp::lt ? v < t : C == Cmp::gt ? v > t : v >= t; };
    for (int64_t r = 0; r < rows; ++r) {
        const float * row = x + r * ld;
        const float t = threshold[threshold.size() == 1 ? 0 : r];
        const __m128 tv = _mm_set1_ps(t);
        for (int64_t w = 0; w < kw; ++w) {
            const int64_t base = w * 64, n = std::min<int64_t>(64, k - base);
            uint64_t word = 0;
            int64_t b = 0;
            for (; b + 4 <= n; b += 4) {
                __m128 v = _mm_loadu_ps(row + base + b);
                if (shift) v = _mm_add_ps(v, shift->per_column ? _mm_loadu_ps(shift->data + base + b) : _mm_set1_ps(shift->data[0]));
                const __m128 m = C == Cmp::lt ? _mm_cmplt_ps(v, tv) : C == Cmp::gt ? _mm_cmpgt_ps(v, tv) : _mm_cmpge_ps(v, tv);
                word |= static_cast<uint64_t>(_mm_movemask_ps(m)) << b;
            }
            for (; b < n; ++b) {
                const float v = shift ? row[base + b] + (*shift)[base + b] : row[base + b];
                word |= static_cast<uint64_t>(cmp_scalar(v, t)) << b;
            }
            bits[static_cast<size_t>(r * kw + w)] = word;
        }
    }
    return bits;
}

// max_j x[j] over n ≥ 1 finite values, four lanes at a time (max is exact in any order).
float row_max(const float * x, int64_t n);

Operand plane_operand(int64_t rows, int64_t k);
void add_plane(Operand & op, std::vector<uint64_t> sign, std::vector<uint64_t> mask, float scale);
Operand f32_operand(int64_t rows, int64_t k);

// The family encoders encode() dispatches to (one file each).
Operand encode_binary(const ActQuantizer & q, const float * x, int64_t rows, int64_t k, int64_t ld, SiteScope scope, int64_t head);
Operand encode_bit(const ActQuantizer & q, const float * x, int64_t rows, int64_t k, int64_t ld, SiteScope scope, int64_t head);
Operand encode_lsq(const ActQuantizer & q, const float * x, int64_t rows, int64_t k, int64_t ld, SiteScope scope, int64_t head);
Operand encode_bivit(const ActQuantizer & q, const float * x, int64_t rows, int64_t k, int64_t ld);
Operand encode_bi_vit(const ActQuantizer & q, const float * x, int64_t rows, int64_t k, int64_t ld, SiteScope scope, int64_t head);
Operand encode_gsb(const ActQuantizer & q, const float * x, int64_t rows, int64_t k, int64_t ld, float range_max, float range_min);

}  // namespace bitvit::runtime::quant
