// BiViT's softmax-aware attention binarization (docs/methods.md §5): 1{p ≥ β·max of its row}, from
// the probabilities or straight from the scores. (PWS weights deploy as ±1 planes with a per-row
// scale, like every binary weight: nothing here.)
#include <cmath>
#include <stdexcept>

#include "runtime/quant/encode-util.h"

namespace bitvit::runtime::quant {

Operand encode_bivit(const ActQuantizer & q, const float * x, int64_t rows, int64_t k, int64_t ld) {
    const auto beta = static_cast<float>(q.options.at("beta"));
    std::vector<float> threshold(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) threshold[r] = beta * row_max(x + r * ld, k);
    Operand op = plane_operand(rows, k);
    add_plane(op, {}, pack_compare<Cmp::ge>(x, rows, k, ld, nullptr, threshold), 1.0f);
    return op;
}

}  // namespace bitvit::runtime::quant

namespace bitvit::runtime {

Operand ActQuantizer::encode_sab_from_scores(const float * scores, int64_t rows, int64_t k, int64_t ld) const {
    if (!is(spec::Quantizer::sab)) throw std::invalid_argument(std::string("encode_sab_from_scores needs the sab quantizer, not '") + name() + "'");
    const auto log_beta = static_cast<float>(std::log(options.at("beta")));
    std::vector<float> threshold(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) threshold[r] = quant::row_max(scores + r * ld, k) + log_beta;
    Operand op = quant::plane_operand(rows, k);
    quant::add_plane(op, {}, quant::pack_compare<quant::Cmp::ge>(scores, rows, k, ld, nullptr, threshold), 1.0f);
    return op;
}

}  // namespace bitvit::runtime
