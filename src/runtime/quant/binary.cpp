// The binary baselines' activation encoders (docs/methods.md §1): sign, sign_approx (the same
// forward), rsign (a learned shift first) and BiBERT's bool.
#include "runtime/kernels/bgemm.h"
#include "runtime/quant/encode-util.h"

namespace bitvit::runtime::quant {

Operand encode_binary(const ActQuantizer & q, const float * x, int64_t rows, int64_t k, int64_t ld, SiteScope scope,
                      int64_t head) {
    Operand op = plane_operand(rows, k);
    const std::vector<float> zero_threshold = {0.0f};
    if (q.sign_only()) {
        std::vector<uint64_t> bits(static_cast<size_t>(rows * b1_words(k)));
        pack_sign_rows(bgemm_kernel(), x, rows, k, ld, bits.data());
        add_plane(op, std::move(bits), {}, 1.0f);
    } else if (q.is(spec::Quantizer::rsign)) {
        const ParamView shift = param_view(q, "shift", scope, head);
        add_plane(op, pack_compare<Cmp::lt>(x, rows, k, ld, &shift, zero_threshold), {}, 1.0f);
    } else {  // bool: 1{x > 0}
        add_plane(op, {}, pack_compare<Cmp::gt>(x, rows, k, ld, nullptr, zero_threshold), 1.0f);
    }
    return op;
}

}  // namespace bitvit::runtime::quant
