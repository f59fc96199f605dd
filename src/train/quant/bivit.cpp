#include "train/quant/bivit.h"

#include "train/quant/binary.h"

namespace bitvit::quant {

using torch::Tensor;

Tensor softmax_aware_binarize(const Tensor & probs, double beta) {
    const Tensor threshold = beta * std::get<0>(probs.detach().max(-1, true));
    return straight_through(as_float(probs.detach() >= threshold, probs), probs);
}

namespace {

class SabQuantizer : public QuantizerImpl {
  public:
    SabQuantizer(const spec::QuantizerRow & row, double beta) : QuantizerImpl(row), beta_(beta) {}
    Tensor quantize(const Tensor & p) override { return softmax_aware_binarize(p, beta_); }
    Deployed deployed() const override { return {{}, {{"beta", beta_}}}; }

  private:
    double beta_;
};

// W_b = s ⊙ sign(W − row mean) with BiViT's BinaryQuantizer (clipped STE, s stays in the chain),
// s learnable per output row, initialised on first use to the row's mean |W| (of the un-centred W).
class PwsQuantizer : public QuantizerImpl {
  public:
    PwsQuantizer(const spec::QuantizerRow & row, const SiteInfo & site) : QuantizerImpl(row) {
        scale = register_parameter("scale", torch::zeros({site.channels}));
    }
    void init_from(const Tensor & w) override { scale.copy_(w.abs().flatten(1).mean(1)); }
    Tensor quantize(const Tensor & w) override {
        std::vector<int64_t> shape(static_cast<size_t>(w.dim()), 1);
        shape[0] = w.size(0);
        return scale.view(shape) * sign_clipped(w - row_mean(w));
    }
    Tensor code_scale(const Tensor & q) const override { return row_code_scale(q); }
    Tensor scale;
};

}  // namespace

SiteTransform make_bivit(const spec::QuantizerRow & row, const Options & options, const SiteInfo & site) {
    if (row.id == spec::Quantizer::sab) return std::make_shared<SabQuantizer>(row, options.get("beta"));
    return std::make_shared<PwsQuantizer>(row, site);
}

}  // namespace bitvit::quant
