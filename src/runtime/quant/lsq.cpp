// LSQ's activation encoder (docs/methods.md §3): integer codes round(clamp(x/s + z, qn, qp)), as
// int8 codes with one step and zero point for the tensor, else decoded to floats.
#include "runtime/quant/encode-util.h"

namespace bitvit::runtime::quant {

namespace {

// Per-column steps or zero points, or codes beyond int8: the values (q − z)·s as floats.
Operand decoded(const float * x, int64_t rows, int64_t k, int64_t ld, float qn, float qp, const ParamView & step,
                const ParamView * zero) {
    Operand f = f32_operand(rows, k);
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t j = 0; j < k; ++j) {
            const float u = zero ? x[r * ld + j] / step[j] + (*zero)[j] : x[r * ld + j] / step[j];
            const float code = round_half_even(std::min(std::max(u, qn), qp));  // |u| ≤ 65536 once clamped (validated)
            f.values[r * k + j] = (code - (zero ? (*zero)[j] : 0.0f)) * step[j];
        }
    }
    return f;
}

}  // namespace

Operand encode_lsq(const ActQuantizer & q, const float * x, int64_t rows, int64_t k, int64_t ld, SiteScope scope,
                   int64_t head) {
    const auto qn = static_cast<float>(q.options.at("qn")), qp = static_cast<float>(q.options.at("qp"));
    const bool has_zero = q.params.count("zero_point") != 0;
    const ParamView step = param_view(q, "step", scope, head);
    const ParamView zero = has_zero ? param_view(q, "zero_point", scope, head) : ParamView{};
    if (step.per_column || zero.per_column || qn < -128 || qp > 127) return decoded(x, rows, k, ld, qn, qp, step, has_zero ? &zero : nullptr);
    Operand op;
    op.kind = Operand::Kind::int8;
    op.rows = rows;
    op.k = k;
    op.codes.resize(static_cast<size_t>(rows * k));
    // One step and zero point for the whole tensor: a loop the compiler vectorises.
    const float s = step[0], z = has_zero ? zero[0] : 0.0f;
    for (int64_t r = 0; r < rows; ++r) {
        const float * row = x + r * ld;
        int8_t * out = op.codes.data() + r * k;
        for (int64_t j = 0; j < k; ++j) {
            const float u = has_zero ? row[j] / s + z : row[j] / s;
            const float c = round_half_even(std::min(std::max(u, qn), qp));
            out[j] = static_cast<int8_t>(c == c ? c : 0.0f);  // NaN input: code 0, not UB
        }
    }
    op.scale.assign(static_cast<size_t>(rows), s);
    op.zero.assign(static_cast<size_t>(rows), static_cast<int32_t>(z));
    return op;
}

}  // namespace bitvit::runtime::quant
