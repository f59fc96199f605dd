// The deployed form of the activation quantizers (src/train/quant/): each turns FP32 activations
// into an Operand (runtime/operand.h) with the values the trained model's forward pass gives,
// computed with the same float operations in the same order so thresholds fall the same way. Which
// quantizer, its parameters and options come from the quantizer table (src/spec/quantizers.h),
// looked up once when a model loads; encode() dispatches on the table row's family to that family's
// file here (binary.cpp, bit.cpp, lsq.cpp, bivit.cpp, bi-vit.cpp, gsb.cpp).
//
//   quantizer          parameters (per channel: [C] at token sites, [H] at per-head sites)   operand
//   sign, sign_approx  —                                                       ±1 plane
//   rsign              shift                                                   ±1 plane of x + shift
//   elastic_signed     shift, alpha [1]                                        α·(±1 plane of x + shift)
//   elastic_unsigned   shift, alpha [1]                                        α·{0,1}: round(clamp((x+shift)/α, 0, 1))
//   bool               —                                                       {0,1}: x > 0
//   sab                option beta                                             {0,1}: p ≥ β·max of its row
//   lsq                step, [zero_point] (rounded); options qn, qp            int8 codes (f32 if they do not fit)
//   actbi              alpha, zero_point (rounded)                             α·(±1 plane of x/α + z) − α·z
//   gsb_value          alphas [3]; the sample's max and min of v               three planes (GSB groups)
//   gsb_attention      alphas [3]; the sample's max of the attention map      three {0,1} planes
#pragma once

#include <map>
#include <string>
#include <vector>

#include "runtime/operand.h"
#include "spec/quantizers.h"

namespace bitvit::runtime {

enum class SiteScope {
    token,     // a [tokens, C] activation entering a linear layer: channel = column
    per_head,  // one head's [rows, cols] slice of q, k, v or the attention map: channel = the head
};

struct ActQuantizer {
    const spec::QuantizerRow * row = nullptr;         // nullptr: full precision (f32 operand)
    std::map<std::string, std::vector<float>> params;  // effective values, as exported
    std::map<std::string, double> options;

    // The quantizer the table calls `name` ("" = full precision). Throws std::invalid_argument for a
    // name the table lacks (naming the known ones) or a weight-only quantizer.
    static ActQuantizer named(const std::string & name, std::map<std::string, std::vector<float>> params = {},
                              std::map<std::string, double> options = {});

    bool is(spec::Quantizer id) const { return row && row->id == id; }
    const char * name() const { return row ? row->name : ""; }
    // Whether the output depends on the input's sign alone (sign(0) = +1, sign(−0) = +1).
    bool sign_only() const { return is(spec::Quantizer::sign) || is(spec::Quantizer::sign_approx); }

    // Whether encode() needs the max / min over the whole sample's tensor at this site (GSB).
    bool needs_range() const { return row && row->family == spec::Family::gsb; }

    // Whether encode() at token scope gives int8 codes (LSQ with one step and zero point for the
    // tensor, codes within [−128, 127]): a linear layer then keeps an int8 form of its weight.
    bool encodes_int8() const;

    // What encode() gives at token scope — the operand a linear layer's weight meets, so that the
    // weight is prepared for it once at load (prepare_weight): floats for full precision and for
    // per-column scales that cannot leave the product (LSQ beyond encodes_int8(), ActBi with one α
    // per channel, as on Bi-ViT's Swin patch merging), int8 codes, or bit planes.
    LayerInputs token_operand() const;

    // Encodes x [rows, k] (row stride ld). `head` selects per-head parameters (per_head scope);
    // at token scope parameters index the k columns. range_max/min: see needs_range().
    Operand encode(const float * x, int64_t rows, int64_t k, int64_t ld, SiteScope scope, int64_t head,
                   float range_max = 0.0f, float range_min = 0.0f) const;

    // SAB straight from the scaled scores s of one head ([rows, k]) instead of softmax(s): p_j ≥ β·max p
    // ⇔ exp(s_j − max s) ≥ β ⇔ s_j − max s ≥ ln β, which skips every exp and division. The two forms
    // differ only within an ulp or two of the threshold, a tie that binary q·kᵀ scores (multiples of
    // d^-½·2) do not produce. Only for quantizer "sab".
    Operand encode_sab_from_scores(const float * scores, int64_t rows, int64_t k, int64_t ld) const;

    // The operand a sign quantizer (sign, sign_approx) makes of values whose sign bits are already
    // packed — canonical rows × k bits (a product's SignOut): the ±1 plane encode() would give.
    Operand encode_sign_bits(const uint64_t * bits, int64_t rows, int64_t k) const;

    // Checks the quantizer against its site (the table: it serves `site_class`) and its parameters
    // against the table's deployed parameters: the tensors it needs with `channels` values (or 1
    // where a scalar is expected), finite, positive or integer as the table says, options present
    // and in range, nothing else. Throws std::invalid_argument naming `site`.
    void validate(const std::string & site, spec::SiteClass site_class, int64_t channels) const;
};

}  // namespace bitvit::runtime
