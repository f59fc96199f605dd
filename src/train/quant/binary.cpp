#include "train/quant/binary.h"

#include <cmath>

#include "train/quant/pointwise.h"

namespace bitvit::quant {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

struct SignClipped : torch::autograd::Function<SignClipped> {
    static Tensor forward(AutogradContext * ctx, const Tensor & x) {
        ctx->save_for_backward({x});
        return sign_pm1(x);
    }
    static variable_list backward(AutogradContext * ctx, variable_list grad) {
        const Tensor x = ctx->get_saved_variables()[0];
        return {pointwise([](float g, float v) { return g * (std::abs(v) < 1 ? 1.0f : 0.0f); }, grad[0], x)};
    }
};

struct SignApprox : torch::autograd::Function<SignApprox> {
    static Tensor forward(AutogradContext * ctx, const Tensor & x) {
        ctx->save_for_backward({x});
        return sign_pm1(x);
    }
    static variable_list backward(AutogradContext * ctx, variable_list grad) {
        const Tensor x = ctx->get_saved_variables()[0];
        // d/dx of Bi-Real's piecewise polynomial F: 2 + 2x on [−1, 0), 2 − 2x on [0, 1), 0 elsewhere.
        return {pointwise([](float g, float v) { return g * (2.0f - 2.0f * std::abs(v)) * (std::abs(v) < 1 ? 1.0f : 0.0f); },
                          grad[0], x)};
    }
};

// sign, sign_approx: ±1 codes, no scale (one per row for a weight, so QLinear multiplies codes).
class SignQuantizer : public QuantizerImpl {
  public:
    SignQuantizer(const spec::QuantizerRow & row, bool weight) : QuantizerImpl(row), weight_(weight) {}
    Tensor quantize(const Tensor & x) override {
        return row().id == spec::Quantizer::sign_approx ? sign_approx(x) : sign_clipped(x);
    }
    Tensor code_scale(const Tensor & q) const override {
        return weight_ ? torch::ones({q.size(0)}, q.options()) : torch::ones({1}, q.options());
    }

  private:
    bool weight_;
};

class BoolQuantizer : public QuantizerImpl {
  public:
    using QuantizerImpl::QuantizerImpl;
    Tensor quantize(const Tensor & x) override { return bool_clipped(x); }
    Tensor code_scale(const Tensor & q) const override { return torch::ones({1}, q.options()); }
};

// ReActNet RSign: y = sign(x + b_c), b learnable per channel, initialised to 0, ApproxSign backward.
class RSignQuantizer : public QuantizerImpl {
  public:
    RSignQuantizer(const spec::QuantizerRow & row, const SiteInfo & site) : QuantizerImpl(row), site_(site) {
        shift = register_parameter("shift", torch::zeros({site.channels}));
    }
    Tensor quantize(const Tensor & x) override { return sign_approx(x + per_channel(shift, site_, x)); }
    Tensor code_scale(const Tensor & q) const override { return torch::ones({1}, q.options()); }
    Deployed deployed() const override { return {{{"shift", shift.detach()}}, {}}; }
    Tensor shift;

  private:
    SiteInfo site_;
};

// xnor and row_centred: a scale computed from W every step, never learned.
class AnalyticWeightBinarizer : public QuantizerImpl {
  public:
    using QuantizerImpl::QuantizerImpl;
    Tensor quantize(const Tensor & w) override {
        return row().id == spec::Quantizer::xnor ? xnor_weight(w) : row_centred_weight(w);
    }
    Tensor code_scale(const Tensor & q) const override { return row_code_scale(q); }
};

}  // namespace

Tensor sign_clipped(const Tensor & x) { return SignClipped::apply(x); }
Tensor sign_approx(const Tensor & x) { return SignApprox::apply(x); }
Tensor sign_identity(const Tensor & x) { return straight_through(sign_pm1(x), x); }

Tensor bool_clipped(const Tensor & x) {
    // Values 1{x > 0} (0 at x = 0, as BiBERT); gradient through clamp(x, −1, 1), BiBERT's detach form.
    return straight_through(as_float(x > 0, x), x.clamp(-1, 1));
}

Tensor xnor_weight(const Tensor & w) { return straight_through(row_mean_abs(w) * sign_pm1(w), w.clamp(-1, 1)); }

Tensor row_centred_weight(const Tensor & w) {
    const Tensor centred = w - row_mean(w);
    return straight_through(row_mean_abs(w) * sign_pm1(centred), centred.clamp(-1, 1));
}

SiteTransform make_binary(const spec::QuantizerRow & row, const Options &, const SiteInfo & site) {
    switch (row.id) {
        case spec::Quantizer::sign:
        case spec::Quantizer::sign_approx: return std::make_shared<SignQuantizer>(row, site.kind == SiteKind::weight);
        case spec::Quantizer::bool_: return std::make_shared<BoolQuantizer>(row);
        case spec::Quantizer::rsign: return std::make_shared<RSignQuantizer>(row, site);
        default: return std::make_shared<AnalyticWeightBinarizer>(row);
    }
}

}  // namespace bitvit::quant
