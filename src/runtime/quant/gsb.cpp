// GSB's encoders (docs/methods.md §7): the value tensor as one ±1 plane and two ternary planes
// sharing its signs, the attention map as three {0,1} planes, the bands from the sample's max/min.
#include "runtime/quant/encode-util.h"

namespace bitvit::runtime::quant {

Operand encode_gsb(const ActQuantizer & q, const float * x, int64_t rows, int64_t k, int64_t ld, float range_max,
                   float range_min) {
    const std::vector<float> & a = q.params.at("alphas");
    Operand op = plane_operand(rows, k);
    if (q.is(spec::Quantizer::gsb_attention)) {
        const float t1 = 0.7f * range_max, t2 = 0.9f * range_max, a0 = a[0];
        add_plane(op, {}, pack_bits(x, rows, k, ld, [&](int64_t, int64_t, float v) { return v / a0 > 0.5f; }), a[0]);
        add_plane(op, {}, pack_bits(x, rows, k, ld, [&](int64_t, int64_t, float v) { return v > t1; }), a[1]);
        add_plane(op, {}, pack_bits(x, rows, k, ld, [&](int64_t, int64_t, float v) { return v > t2; }), a[2]);
        return op;
    }
    // v̂ = α1·s + α2·s·m1 + α3·s·m2.
    const float hi1 = 0.7f * range_max, lo1 = 0.7f * range_min, hi2 = 0.9f * range_max, lo2 = 0.9f * range_min;
    std::vector<uint64_t> sign = pack_bits(x, rows, k, ld, [](int64_t, int64_t, float v) { return v < 0.0f; });
    std::vector<uint64_t> band1 = pack_bits(x, rows, k, ld, [&](int64_t, int64_t, float v) { return v > hi1 || v < lo1; });
    std::vector<uint64_t> band2 = pack_bits(x, rows, k, ld, [&](int64_t, int64_t, float v) { return v > hi2 || v < lo2; });
    std::vector<uint64_t> sign1(sign.size()), sign2(sign.size());
    for (size_t i = 0; i < sign.size(); ++i) {
        sign1[i] = sign[i] & band1[i];
        sign2[i] = sign[i] & band2[i];
    }
    add_plane(op, std::move(sign), {}, a[0]);
    add_plane(op, std::move(sign1), std::move(band1), a[1]);
    add_plane(op, std::move(sign2), std::move(band2), a[2]);
    return op;
}

}  // namespace bitvit::runtime::quant
