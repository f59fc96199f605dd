#include "train/quant/bit.h"

#include <cmath>
#include <tuple>

#include "train/quant/lsq.h"
#include "train/quant/pointwise.h"

namespace bitvit::quant {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

// One pass each way (pointwise.h), the reference's float operations in its order.
struct ElasticSign : torch::autograd::Function<ElasticSign> {
    static Tensor forward(AutogradContext * ctx, const Tensor & x, const Tensor & alpha, bool gsb) {
        ctx->save_for_backward({x, alpha});
        ctx->saved_data["gsb"] = gsb;
        return pointwise([](float v, float a) { return a * sign_pm1_of(v); }, x.detach(), alpha.detach());
    }
    static variable_list backward(AutogradContext * ctx, variable_list grad) {
        const auto saved = ctx->get_saved_variables();
        const Tensor & x = saved[0];
        const Tensor & alpha = saved[1];
        const bool gsb = ctx->saved_data["gsb"].toBool();
        // Per element: the input's gradient g·1{|x/α| ≤ 1} and α's term (sign − [gsb]·u·1{|u| ≤ 1})·g.
        auto [dx, dalpha_terms] = pointwise_outputs<2>([gsb](float g, float v, float a) {
            const float u = v / a;
            const float inside = std::abs(u) <= 1 ? 1.0f : 0.0f;
            const float sign = sign_pm1_of(v);
            return std::make_tuple(g * inside, (gsb ? sign - u * inside : sign) * g);
        }, grad[0], x, alpha);
        const Tensor dalpha = dalpha_terms.sum() / std::sqrt(static_cast<double>(x.numel()));
        return {dx, dalpha.reshape(alpha.sizes()), Tensor()};
    }
};

class BwnQuantizer : public QuantizerImpl {
  public:
    using QuantizerImpl::QuantizerImpl;
    Tensor quantize(const Tensor & w) override { return bwn_weight(w); }
    Tensor code_scale(const Tensor & q) const override { return row_code_scale(q); }
};

// Elastic binarization with a learnable per-channel shift ("move") before the quantizer.
class ElasticQuantizer : public QuantizerImpl {
  public:
    ElasticQuantizer(const spec::QuantizerRow & row, const SiteInfo & site, bool gsb_gradient)
        : QuantizerImpl(row), site_(site), gsb_(gsb_gradient) {
        shift = register_parameter("shift", torch::zeros({site.channels}));
        alpha = register_parameter("alpha", torch::ones({1}));
    }
    bool is_signed() const { return row().id == spec::Quantizer::elastic_signed; }
    // BiT's AlphaInit: 2·mean|x| (signed) or 4·mean|x| (unsigned) on the first batch.
    void init_from(const Tensor & x) override { alpha.fill_((is_signed() ? 2.0 : 4.0) * x.abs().mean().item<double>()); }
    Tensor quantize(const Tensor & x) override {
        const Tensor shifted = x + per_channel(shift, site_, x);
        if (is_signed()) return elastic_sign(shifted, alpha, gsb_ ? ElasticGradient::gsb : ElasticGradient::bit);
        return elastic_unsigned(shifted, alpha);
    }
    Deployed deployed() const override { return {{{"shift", shift.detach()}, {"alpha", alpha.detach().clamp_min(1e-5)}}, {}}; }
    Tensor code_scale(const Tensor &) const override { return alpha.detach().clamp_min(1e-5); }
    Tensor shift, alpha;

  private:
    SiteInfo site_;
    bool gsb_;
};

}  // namespace

Tensor bwn_weight(const Tensor & w) { return straight_through(w.abs().mean() * sign_pm1(w - w.mean()), w); }

Tensor elastic_sign(const Tensor & x, const Tensor & alpha, ElasticGradient gradient) {
    return ElasticSign::apply(x, alpha.clamp_min(1e-5), gradient == ElasticGradient::gsb);
}

Tensor elastic_unsigned(const Tensor & x, const Tensor & alpha) { return lsq(x, alpha.clamp_min(1e-5), Tensor(), 0, 1); }

SiteTransform make_bit(const spec::QuantizerRow & row, const Options & options, const SiteInfo & site) {
    if (row.id == spec::Quantizer::bwn) return std::make_shared<BwnQuantizer>(row);
    const bool gsb = row.id == spec::Quantizer::elastic_signed && options.flag("gsb_gradient");
    return std::make_shared<ElasticQuantizer>(row, site, gsb);
}

}  // namespace bitvit::quant
