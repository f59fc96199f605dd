#include "quantizers.h"

#include <cmath>
#include <functional>
#include <set>

#include "ste.h"

namespace bitvit::quant {

using torch::Tensor;

QuantizerImpl::QuantizerImpl() { initialized_ = register_buffer("initialized", torch::zeros({1})); }

Tensor QuantizerImpl::forward(const Tensor & x) {
    if (!initialized()) {
        torch::NoGradGuard no_grad;
        init_from(x.detach());
        initialized_.fill_(1.0f);
    }
    return quantize(x);
}

Precision precision_of(const SiteTransform & transform) {
    const auto quantizer = std::dynamic_pointer_cast<QuantizerImpl>(transform);
    return quantizer ? quantizer->precision() : Precision{};
}

Tensor per_channel(const Tensor & p, const SiteInfo & site, const Tensor & x) {
    switch (site.kind) {
        case SiteKind::weight: {
            std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
            shape[0] = p.size(0);
            return p.view(shape);
        }
        case SiteKind::token_activation: return p;
        case SiteKind::head_activation: return p.view({1, p.size(0), 1, 1});
    }
    return p;
}

namespace {

// [out, 1, …]: the shape of one value per output row of a weight.
std::vector<int64_t> per_channel_shape(const Tensor & w) {
    std::vector<int64_t> shape(static_cast<size_t>(w.dim()), 1);
    shape[0] = w.size(0);
    return shape;
}

// Per output row of a weight (over every other dimension), shaped to broadcast against it.
Tensor row_mean(const Tensor & w) { return w.flatten(1).mean(1).view(per_channel_shape(w)); }
Tensor row_mean_abs(const Tensor & w) { return w.abs().flatten(1).mean(1).view(per_channel_shape(w)); }

// The code scale of a weight whose rows are ±s_row (or 0): s_row = max |row|, shape [out].
Tensor row_code_scale(const Tensor & q) { return q.detach().abs().flatten(1).amax(1); }

class SignQuantizer : public QuantizerImpl {
  public:
    SignQuantizer(bool approx, bool weight) : approx_(approx), weight_(weight) {}
    Tensor quantize(const Tensor & x) override { return approx_ ? sign_approx(x) : sign_clipped(x); }
    Tensor code_scale(const Tensor & q) const override {
        return weight_ ? torch::ones({q.size(0)}, q.options()) : torch::ones({1}, q.options());
    }

  private:
    bool approx_, weight_;
};

// BiBERT Bool: attention scores (the probs site of a softmax-free block) to {0, 1}.
class BoolQuantizer : public QuantizerImpl {
  public:
    Tensor quantize(const Tensor & x) override { return bool_clipped(x); }
    Tensor code_scale(const Tensor & q) const override { return torch::ones({1}, q.options()); }
};

// ReActNet RSign: y = sign(x + b_c), b learnable per channel, initialised to 0.
class RSignQuantizer : public QuantizerImpl {
  public:
    explicit RSignQuantizer(const SiteInfo & site) : site_(site) {
        shift = register_parameter("shift", torch::zeros({site.channels}));
    }
    Tensor quantize(const Tensor & x) override { return sign_approx(x + per_channel(shift, site_, x)); }
    Tensor code_scale(const Tensor & q) const override { return torch::ones({1}, q.options()); }
    Deployed deployed() const override { return {{{"shift", shift.detach()}}, {}}; }
    Tensor shift;

  private:
    SiteInfo site_;
};

enum class WeightScheme { xnor, bwn, row_centred };

// Weight binarizers whose scale is computed from W every step (never learned).
class AnalyticWeightBinarizer : public QuantizerImpl {
  public:
    explicit AnalyticWeightBinarizer(WeightScheme scheme) : scheme_(scheme) {}
    Tensor quantize(const Tensor & w) override {
        switch (scheme_) {
            case WeightScheme::xnor: return row_mean_abs(w).detach() * sign_clipped(w);
            case WeightScheme::bwn: {
                // BiT/GSB BwnQuantizer: per-tensor scale, mean-centred, gradient passed straight to W.
                const Tensor binary = w.abs().mean() * sign_pm1(w - w.mean());
                return straight_through(binary, w);
            }
            case WeightScheme::row_centred: {
                const Tensor centred = w - row_mean(w);
                return row_mean_abs(w).detach() * sign_clipped(centred);
            }
        }
        return w;
    }
    Tensor code_scale(const Tensor & q) const override { return row_code_scale(q); }

  private:
    WeightScheme scheme_;
};

// BiViT parameterized weight scales: W_b = s ⊙ sign(W − row mean), s learnable per output row,
// initialised on first use to the row's mean |W| (of the un-centred W, as the reference code).
class PwsQuantizer : public QuantizerImpl {
  public:
    explicit PwsQuantizer(const SiteInfo & site) { scale = register_parameter("scale", torch::zeros({site.channels})); }
    void init_from(const Tensor & w) override { scale.copy_(w.abs().flatten(1).mean(1)); }
    Tensor quantize(const Tensor & w) override {
        return scale.view(per_channel_shape(w)) * sign_clipped(w - row_mean(w));
    }
    Tensor code_scale(const Tensor & q) const override { return row_code_scale(q); }
    Tensor scale;
};

// BiT elastic binarization with a learnable per-channel shift ("move") before the quantizer.
class ElasticQuantizer : public QuantizerImpl {
  public:
    ElasticQuantizer(const SiteInfo & site, bool is_signed, bool gsb_gradient)
        : site_(site), signed_(is_signed), gsb_(gsb_gradient) {
        shift = register_parameter("shift", torch::zeros({site.channels}));
        alpha = register_parameter("alpha", torch::ones({1}));
    }
    // BiT AlphaInit: 2·mean|x| (signed) or 4·mean|x| (unsigned) on the first batch.
    void init_from(const Tensor & x) override { alpha.fill_((signed_ ? 2.0 : 4.0) * x.abs().mean().item<double>()); }
    Tensor quantize(const Tensor & x) override {
        const Tensor shifted = x + per_channel(shift, site_, x);
        if (signed_) return elastic_sign(shifted, alpha, gsb_ ? ElasticGradient::gsb : ElasticGradient::bit);
        return elastic_unsigned(shifted, alpha);
    }
    Deployed deployed() const override { return {{{"shift", shift.detach()}, {"alpha", alpha.detach().clamp_min(1e-5)}}, {}}; }
    Tensor code_scale(const Tensor &) const override { return alpha.detach().clamp_min(1e-5); }
    Tensor shift, alpha;

  private:
    SiteInfo site_;
    bool signed_, gsb_;
};

// LSQ / LSQ+ with per-tensor or per-channel steps and an optional zero point (Q-ViT's ActQ/LinearQ).
class LsqQuantizer : public QuantizerImpl {
  public:
    LsqQuantizer(const SiteInfo & site, int64_t bits, bool is_signed, bool per_channel_step, bool zero_point)
        : site_(site), per_channel_(per_channel_step) {
        qn_ = is_signed ? -(int64_t{1} << (bits - 1)) : 0;
        qp_ = is_signed ? (int64_t{1} << (bits - 1)) - 1 : (int64_t{1} << bits) - 1;
        const int64_t n = per_channel_step ? site.channels : 1;
        step = register_parameter("step", torch::ones({n}));
        if (zero_point) this->zero_point = register_parameter("zero_point", torch::zeros({n}));
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
    Precision precision() const override { return {static_cast<int>(std::log2(static_cast<double>(qp_ - qn_ + 1)) + 0.5), 1}; }
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
    int64_t qn_, qp_;
};

class TwnQuantizer : public QuantizerImpl {
  public:
    explicit TwnQuantizer(bool per_row) : per_row_(per_row) {}
    Tensor quantize(const Tensor & w) override { return ternary_twn(w.flatten(1), per_row_).view(w.sizes()); }
    Precision precision() const override { return {2, 1}; }  // {−1, 0, +1} as two bit-planes
    Tensor code_scale(const Tensor & q) const override { return row_code_scale(q); }

  private:
    bool per_row_;
};

class SabQuantizer : public QuantizerImpl {
  public:
    explicit SabQuantizer(double beta) : beta_(beta) {}
    Tensor quantize(const Tensor & p) override { return softmax_aware_binarize(p, beta_); }
    Deployed deployed() const override { return {{}, {{"beta", beta_}}}; }

  private:
    double beta_;
};

// Bi-ViT ActBi: a 1-bit LSQ+ with learnable per-channel (per-head) scale α and zero point z:
// out = (sign(clamp(x/α + round(z), −1, 1)) − round(z))·α, levels α(−1 − z) and α(1 − z).
class BiVitActQuantizer : public QuantizerImpl {
  public:
    explicit BiVitActQuantizer(const SiteInfo & site) : site_(site) {
        alpha = register_parameter("alpha", torch::ones({site.channels}));
        zero_point = register_parameter("zero_point", torch::zeros({site.channels}));
    }
    void init_from(const Tensor & x) override {
        const double a = 2.0 * x.abs().mean().item<double>();
        alpha.fill_(a);
        zero_point.fill_(0.1 * (x.min().item<double>() + a));
    }
    Tensor quantize(const Tensor & x) override {
        const double g = 1.0 / std::sqrt(static_cast<double>(x.numel()));
        const Tensor a = grad_scale(per_channel(alpha, site_, x), g);
        const Tensor z = grad_scale(round_pass(per_channel(zero_point, site_, x)), g);
        return (sign_identity(torch::clamp(x / a + z, -1, 1)) - z) * a;
    }
    Deployed deployed() const override { return {{{"alpha", alpha.detach()}, {"zero_point", zero_point.detach().round()}}, {}}; }
    // Codes ±1 − round(z) times α: one α per head at a per-head site (it factors out of q·kᵀ and
    // probs·v); at a token site only a single α factors out of the linear's sum.
    Tensor code_scale(const Tensor &) const override {
        if (site_.kind == SiteKind::head_activation || alpha.numel() == 1) return alpha.detach();
        return {};
    }
    Tensor alpha, zero_point;

  private:
    SiteInfo site_;
};

// GSB: three group scales initialised from the first batch (§5.3). The stored α2, α3 are the plain
// band means (the reference code's subtracted values live only in a local variable; we keep parity).
class GsbQuantizer : public QuantizerImpl {
  public:
    explicit GsbQuantizer(bool attention) : attention_(attention) { alphas = register_parameter("alphas", torch::ones({3})); }
    void init_from(const Tensor & x) override {
        const Tensor m1 = attention_ ? x > 0.7 * x.max() : (x > 0.7 * x.max()) | (x < 0.7 * x.min());
        const Tensor m2 = attention_ ? x > 0.9 * x.max() : (x > 0.9 * x.max()) | (x < 0.9 * x.min());
        const Tensor a = x.abs();
        auto mean_over = [&](const Tensor & mask) {
            const double n = mask.sum().item<double>();
            return n > 0 ? (a * mask).sum().item<double>() / n : a.mean().item<double>();
        };
        const double factor = attention_ ? 4.0 : 2.0;
        alphas.copy_(torch::tensor({factor * mean_over(attention_ ? torch::ones_like(m1) : ~m1),
                                    factor * mean_over(m1 & ~m2), factor * mean_over(m2)}));
    }
    // Training keeps the reference's batch-wide max/min; evaluation takes them per sample (ste.h).
    Tensor quantize(const Tensor & x) override {
        return attention_ ? gsb_attention(x, alphas, !is_training()) : gsb_value(x, alphas, !is_training());
    }
    Precision precision() const override { return {1, 3}; }  // three superposed binary groups
    Deployed deployed() const override { return {{{"alphas", alphas.detach().clamp_min(1e-5)}}, {}}; }
    Tensor alphas;

  private:
    bool attention_;
};

// Reads the options a quantizer accepts, rejecting unknown ones and checking ranges.
class Options {
  public:
    Options(const QuantizerSpec & spec) : spec_(spec) {}
    double get(const std::string & key, double fallback, double lo, double hi) {
        known_.insert(key);
        const auto it = spec_.options.find(key);
        const double v = it == spec_.options.end() ? fallback : it->second;
        if (!(v >= lo && v <= hi)) {
            throw std::invalid_argument("quantizer '" + spec_.name + "': option " + key + " = " + std::to_string(v) +
                                        " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
        }
        return v;
    }
    bool flag(const std::string & key, bool fallback) { return get(key, fallback ? 1 : 0, 0, 1) != 0; }
    void finish() const {
        for (const auto & [key, value] : spec_.options) {
            if (!known_.count(key)) throw std::invalid_argument("quantizer '" + spec_.name + "' has no option '" + key + "'");
        }
    }

  private:
    const QuantizerSpec & spec_;
    std::set<std::string> known_;
};

const char * kind_name(SiteKind kind) {
    switch (kind) {
        case SiteKind::weight: return "weight";
        case SiteKind::token_activation: return "activation";
        case SiteKind::head_activation: return "per-head activation";
    }
    return "?";
}

using Factory = std::function<SiteTransform(Options &, const SiteInfo &)>;
struct Entry {
    const char * name;
    bool weights, activations;  // which site kinds it serves
    Factory make;
};

const std::vector<Entry> & registry() {
    static const std::vector<Entry> entries = {
        {"sign", true, true,
         [](Options &, const SiteInfo & s) { return std::make_shared<SignQuantizer>(false, s.kind == SiteKind::weight); }},
        {"sign_approx", true, true,
         [](Options &, const SiteInfo & s) { return std::make_shared<SignQuantizer>(true, s.kind == SiteKind::weight); }},
        {"bool", false, true, [](Options &, const SiteInfo &) { return std::make_shared<BoolQuantizer>(); }},
        {"rsign", false, true, [](Options &, const SiteInfo & s) { return std::make_shared<RSignQuantizer>(s); }},
        {"xnor", true, false, [](Options &, const SiteInfo &) { return std::make_shared<AnalyticWeightBinarizer>(WeightScheme::xnor); }},
        {"bwn", true, false, [](Options &, const SiteInfo &) { return std::make_shared<AnalyticWeightBinarizer>(WeightScheme::bwn); }},
        {"row_centred", true, false,
         [](Options &, const SiteInfo &) { return std::make_shared<AnalyticWeightBinarizer>(WeightScheme::row_centred); }},
        {"pws", true, false, [](Options &, const SiteInfo & s) { return std::make_shared<PwsQuantizer>(s); }},
        {"elastic_signed", false, true,
         [](Options & o, const SiteInfo & s) { return std::make_shared<ElasticQuantizer>(s, true, o.flag("gsb_gradient", false)); }},
        {"elastic_unsigned", false, true,
         [](Options &, const SiteInfo & s) { return std::make_shared<ElasticQuantizer>(s, false, false); }},
        {"lsq", true, true,
         [](Options & o, const SiteInfo & s) {
             const auto bits = static_cast<int64_t>(o.get("bits", 8, 2, 16));
             return std::make_shared<LsqQuantizer>(s, bits, o.flag("signed", true), o.flag("per_channel", false),
                                                   o.flag("zero_point", false));
         }},
        {"twn", true, false, [](Options & o, const SiteInfo &) { return std::make_shared<TwnQuantizer>(o.flag("per_row", false)); }},
        {"sab", false, true, [](Options & o, const SiteInfo &) { return std::make_shared<SabQuantizer>(o.get("beta", 0.25, 1e-6, 1)); }},
        {"bivit_act", false, true, [](Options &, const SiteInfo & s) { return std::make_shared<BiVitActQuantizer>(s); }},
        {"gsb_value", false, true, [](Options &, const SiteInfo &) { return std::make_shared<GsbQuantizer>(false); }},
        {"gsb_attention", false, true, [](Options &, const SiteInfo &) { return std::make_shared<GsbQuantizer>(true); }},
    };
    return entries;
}

}  // namespace

SiteTransform make_quantizer(const QuantizerSpec & spec, const SiteInfo & site) {
    for (const auto & e : registry()) {
        if (spec.name != e.name) continue;
        const bool is_weight = site.kind == SiteKind::weight;
        if ((is_weight && !e.weights) || (!is_weight && !e.activations)) {
            throw std::invalid_argument(std::string("quantizer '") + e.name + "' cannot quantize a " + kind_name(site.kind) + " site");
        }
        Options options(spec);
        SiteTransform q = e.make(options, site);
        options.finish();
        std::static_pointer_cast<QuantizerImpl>(q)->name_ = e.name;
        return q;
    }
    std::string known;
    for (const auto & n : quantizer_names()) known += (known.empty() ? "" : ", ") + n;
    throw std::invalid_argument("unknown quantizer '" + spec.name + "' (known: " + known + ")");
}

std::vector<std::string> quantizer_names() {
    std::vector<std::string> names;
    for (const auto & e : registry()) names.emplace_back(e.name);
    return names;
}

}  // namespace bitvit::quant
