#include "train/quant/bit.h"

#include <cmath>

#include "train/quant/lsq.h"

namespace bitvit::quant {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

struct ElasticSign : torch::autograd::Function<ElasticSign> {
    static Tensor forward(AutogradContext * ctx, const Tensor & x, const Tensor & alpha, bool gsb) {
        ctx->save_for_backward({x, alpha});
        ctx->saved_data["gsb"] = gsb;
        return alpha * sign_pm1(x);
    }
    static variable_list backward(AutogradContext * ctx, variable_list grad) {
        const auto saved = ctx->get_saved_variables();
        const Tensor & x = saved[0];
        const Tensor & alpha = saved[1];
        const Tensor & g = grad[0];
        const Tensor u = x / alpha;
        const Tensor inside = as_float(u.abs() <= 1, g);
        Tensor dalpha_terms = sign_pm1(x);
        if (ctx->saved_data["gsb"].toBool()) dalpha_terms = dalpha_terms - u * inside;
        const Tensor dalpha = (dalpha_terms * g).sum() / std::sqrt(static_cast<double>(x.numel()));
        return {g * inside, dalpha.reshape(alpha.sizes()), Tensor()};
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
