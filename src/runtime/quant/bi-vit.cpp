// Bi-ViT's ActBi encoder (docs/methods.md §6): (±1 − z)·α with the ±1 plane of x/α + z, one α and z
// per head (or per column at a token site, where it cannot leave the product: decoded to floats).
#include "runtime/quant/encode-util.h"

namespace bitvit::runtime::quant {

Operand encode_bi_vit(const ActQuantizer & q, const float * x, int64_t rows, int64_t k, int64_t ld, SiteScope scope,
                      int64_t head) {
    const ParamView alpha = param_view(q, "alpha", scope, head), zero = param_view(q, "zero_point", scope, head);
    auto negative = [&](int64_t, int64_t j, float v) { return v / alpha[j] + zero[j] < 0.0f; };
    if (alpha.per_column) {
        Operand f = f32_operand(rows, k);
        for (int64_t r = 0; r < rows; ++r) {
            for (int64_t j = 0; j < k; ++j) {
                const float bit = negative(r, j, x[r * ld + j]) ? -1.0f : 1.0f;
                f.values[r * k + j] = (bit - zero[j]) * alpha[j];
            }
        }
        return f;
    }
    Operand op = plane_operand(rows, k);
    add_plane(op, pack_bits(x, rows, k, ld, negative), {}, alpha[0]);
    op.offset.assign(static_cast<size_t>(rows), -zero[0] * alpha[0]);
    return op;
}

}  // namespace bitvit::runtime::quant
