// BiT's elastic activation encoders (docs/methods.md §2): α·sign(x + shift) and
// α·round(clamp((x + shift)/α, 0, 1)).
#include "runtime/quant/encode-util.h"

namespace bitvit::runtime::quant {

Operand encode_bit(const ActQuantizer & q, const float * x, int64_t rows, int64_t k, int64_t ld, SiteScope scope,
                   int64_t head) {
    Operand op = plane_operand(rows, k);
    const ParamView shift = param_view(q, "shift", scope, head);
    const float alpha = q.params.at("alpha")[0];
    if (q.is(spec::Quantizer::elastic_signed)) {
        add_plane(op, pack_compare<Cmp::lt>(x, rows, k, ld, &shift, {0.0f}), {}, alpha);
    } else {
        // round(clamp(u, 0, 1)) with ties to even is 1 exactly when u > 0.5.
        add_plane(op, {}, pack_bits(x, rows, k, ld, [&](int64_t, int64_t j, float v) { return (v + shift[j]) / alpha > 0.5f; }),
                  alpha);
    }
    return op;
}

}  // namespace bitvit::runtime::quant
