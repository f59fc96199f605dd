#include "train/quant/lsq.h"

#include <cmath>

namespace bitvit::quant {

using torch::Tensor;

Tensor lsq(const Tensor & x, const Tensor & step, const Tensor & zero_point, int64_t qn, int64_t qp) {
    const double g = 1.0 / std::sqrt(static_cast<double>(x.numel()) * static_cast<double>(qp));
    const Tensor s = grad_scale(step, g);
    const Tensor z = zero_point.defined() ? grad_scale(round_pass(zero_point), g) : Tensor();
    return clamp_snap_scale(x, s, z, static_cast<double>(qn), static_cast<double>(qp), Snap::round);
}

namespace {

// Per-tensor or per-channel steps and an optional zero point (Q-ViT's ActQ / LinearQ).
class LsqQuantizer : public QuantizerImpl {
  public:
    LsqQuantizer(const spec::QuantizerRow & row, const Options & o, const SiteInfo & site)
        : QuantizerImpl(row), site_(site), per_channel_(o.flag("per_channel")), bits_(static_cast<int>(o.get("bits"))) {
        qn_ = o.flag("signed") ? -(int64_t{1} << (bits_ - 1)) : 0;
        qp_ = o.flag("signed") ? (int64_t{1} << (bits_ - 1)) - 1 : (int64_t{1} << bits_) - 1;
        const int64_t n = per_channel_ ? site.channels : 1;
        step = register_parameter("step", torch::ones({n}));
        if (o.flag("zero_point")) zero_point = register_parameter("zero_point", torch::zeros({n}));
    }
    // LSQ init: s = 2·mean|x|/sqrt(Qp), the same scalar in every channel (as Q-ViT); LSQ+ zero point
    // z = 0.1·(min x − s·Qn) (its 0.9·z + 0.1·(…) update from z = 0).
    void init_from(const Tensor & x) override {
        const double s = 2.0 * x.abs().mean().item<double>() / std::sqrt(static_cast<double>(qp_));
        step.fill_(std::max(s, 1e-8));
        if (zero_point.defined()) zero_point.fill_(0.1 * (x.min().item<double>() - s * qn_));
    }
    Tensor quantize(const Tensor & x) override {
        const Tensor s = per_channel_ ? per_channel(step, site_, x) : step;
        Tensor z;
        if (zero_point.defined()) z = per_channel_ ? per_channel(zero_point, site_, x) : zero_point;
        return lsq(x, s.abs().clamp_min(1e-8), z, qn_, qp_);
    }
    Precision precision() const override { return {bits_, 1}; }
    Deployed deployed() const override {
        Deployed d{{{"step", step.detach().abs().clamp_min(1e-8)}},
                   {{"qn", static_cast<double>(qn_)}, {"qp", static_cast<double>(qp_)}}};
        if (zero_point.defined()) d.tensors["zero_point"] = zero_point.detach().round();
        return d;
    }
    Tensor step, zero_point;

  private:
    SiteInfo site_;
    bool per_channel_;
    int bits_;
    int64_t qn_, qp_;
};

}  // namespace

SiteTransform make_lsq(const spec::QuantizerRow & row, const Options & options, const SiteInfo & site) {
    return std::make_shared<LsqQuantizer>(row, options, site);
}

}  // namespace bitvit::quant
