#include "train/quant/tervit.h"

namespace bitvit::quant {

using torch::Tensor;

Tensor ternary_twn(const Tensor & w, bool per_row) {
    TORCH_CHECK(w.dim() >= 1, "ternary_twn expects a weight tensor, got ", w.sizes());
    Tensor ternary;
    {
        torch::NoGradGuard no_grad;
        const Tensor a = w.abs();
        const Tensor delta = per_row ? 0.7 * a.mean(-1, true) : 0.7 * a.mean();
        const Tensor mask = as_float(a > delta, w);
        const Tensor kept = per_row ? (a * mask).sum(-1, true) : (a * mask).sum();
        const Tensor count = per_row ? mask.sum(-1, true) : mask.sum();
        ternary = kept / count.clamp_min(1) * sign_pm1(w) * mask;
    }
    return straight_through(ternary, w);
}

namespace {

class TwnQuantizer : public QuantizerImpl {
  public:
    TwnQuantizer(const spec::QuantizerRow & row, bool per_row) : QuantizerImpl(row), per_row_(per_row) {}
    Tensor quantize(const Tensor & w) override { return ternary_twn(w.flatten(1), per_row_).view(w.sizes()); }
    Tensor code_scale(const Tensor & q) const override { return row_code_scale(q); }

  private:
    bool per_row_;
};

}  // namespace

SiteTransform make_tervit(const spec::QuantizerRow & row, const Options & options, const SiteInfo &) {
    return std::make_shared<TwnQuantizer>(row, options.flag("per_row"));
}

}  // namespace bitvit::quant
