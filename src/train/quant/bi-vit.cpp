#include "train/quant/bi-vit.h"

#include <cmath>

#include "train/quant/binary.h"

namespace bitvit::quant {

using torch::Tensor;

Tensor actbi(const Tensor & x, const Tensor & alpha, const Tensor & zero_point) {
    const double g = 1.0 / std::sqrt(static_cast<double>(x.numel()));
    const Tensor a = grad_scale(alpha, g);
    const Tensor z = grad_scale(round_pass(zero_point), g);
    return clamp_snap_scale(x, a, z, -1.0, 1.0, Snap::sign);
}

namespace {

class ActBiQuantizer : public QuantizerImpl {
  public:
    ActBiQuantizer(const spec::QuantizerRow & row, const SiteInfo & site) : QuantizerImpl(row), site_(site) {
        alpha = register_parameter("alpha", torch::ones({site.channels}));
        zero_point = register_parameter("zero_point", torch::zeros({site.channels}));
    }
    // Bi-ViT's first-batch init: α = 2·mean|x| in every channel; z = 0.1·(min x + α) (its
    // 0.9·z + 0.1·(…) update from z = 0).
    void init_from(const Tensor & x) override {
        const double a = 2.0 * x.abs().mean().item<double>();
        alpha.fill_(a);
        zero_point.fill_(0.1 * (x.min().item<double>() + a));
    }
    Tensor quantize(const Tensor & x) override {
        return actbi(x, per_channel(alpha, site_, x), per_channel(zero_point, site_, x));
    }
    Deployed deployed() const override { return {{{"alpha", alpha.detach()}, {"zero_point", zero_point.detach().round()}}, {}}; }
    // Codes ±1 − round(z) times α: one α per head at a per-head site (it factors out of q·kᵀ and
    // probs·v); at a token site only a single α factors out of the linear's sum.
    Tensor code_scale(const Tensor &) const override {
        if (site_.kind != SiteKind::token_activation || alpha.numel() == 1) return alpha.detach();
        return {};
    }
    Tensor alpha, zero_point;

  private:
    SiteInfo site_;
};

// Bi-ViT's LinearBi (its Swin patch merging, docs/methods.md §9): ActBi on a weight without a zero
// point, one learnable α per output row: α_row·sign(clamp(W/α_row, −1, 1)), α grad-scaled by 1/√n.
class LinearBiQuantizer : public QuantizerImpl {
  public:
    LinearBiQuantizer(const spec::QuantizerRow & row, const SiteInfo & site) : QuantizerImpl(row) {
        alpha = register_parameter("alpha", torch::ones({site.channels}));
    }
    // As ActBi: α = 2·mean|W| over the whole weight, in every row.
    void init_from(const Tensor & w) override { alpha.fill_(2.0 * w.abs().mean().item<double>()); }
    Tensor quantize(const Tensor & w) override {
        std::vector<int64_t> shape(static_cast<size_t>(w.dim()), 1);
        shape[0] = w.size(0);
        const Tensor a = grad_scale(alpha, 1.0 / std::sqrt(static_cast<double>(w.numel()))).view(shape);
        return sign_identity(torch::clamp(w / a, -1, 1)) * a;
    }
    Tensor code_scale(const Tensor &) const override { return alpha.detach(); }  // codes ±1 per row
    Tensor alpha;
};

}  // namespace

SiteTransform make_bi_vit(const spec::QuantizerRow & row, const Options &, const SiteInfo & site) {
    if (row.id == spec::Quantizer::linear_bi) return std::make_shared<LinearBiQuantizer>(row, site);
    return std::make_shared<ActBiQuantizer>(row, site);
}

}  // namespace bitvit::quant
