#include "train/quant/gsb.h"

#include <cmath>

namespace bitvit::quant {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

// The max (or min) GSB's thresholds are taken over: the whole tensor, or each sample's slice of it
// ([B, 1, …], broadcasting against the tensor).
Tensor group_extreme(const Tensor & x, bool per_sample, bool max) {
    if (!per_sample) return max ? x.max() : x.min();
    std::vector<int64_t> dims;
    for (int64_t d = 1; d < x.dim(); ++d) dims.push_back(d);
    return max ? x.amax(dims, true) : x.amin(dims, true);
}

// 1/sqrt(n), or 0 when n is 0 (an empty band contributes no gradient).
Tensor inv_sqrt_count(const Tensor & count) {
    return torch::where(count > 0, count.clamp_min(1).rsqrt(), torch::zeros_like(count));
}

struct GsbValue : torch::autograd::Function<GsbValue> {
    static Tensor forward(AutogradContext * ctx, const Tensor & v, const Tensor & alphas_in, bool per_sample) {
        const Tensor alphas = alphas_in.clamp_min(1e-5);
        const Tensor vmax = group_extreme(v, per_sample, true), vmin = group_extreme(v, per_sample, false);
        const Tensor m1 = as_float((v > 0.7 * vmax) | (v < 0.7 * vmin), v);
        const Tensor m2 = as_float((v > 0.9 * vmax) | (v < 0.9 * vmin), v);
        ctx->save_for_backward({v, alphas, m1, m2});
        const Tensor s = sign_pm1(v);
        return alphas[0] * s + alphas[1] * s * m1 + alphas[2] * s * m2;
    }
    static variable_list backward(AutogradContext * ctx, variable_list grad) {
        const auto saved = ctx->get_saved_variables();
        const Tensor &v = saved[0], &alphas = saved[1], &m1 = saved[2], &m2 = saved[3];
        const Tensor & g = grad[0];
        const Tensor s = sign_pm1(v);
        const Tensor masks[3] = {torch::ones_like(v), m1, m2};
        const Tensor counts[3] = {torch::full({}, static_cast<double>(v.numel()), v.options()), m1.sum(), m2.sum()};
        Tensor dv = torch::zeros_like(v);
        std::vector<Tensor> dalpha;
        for (int i = 0; i < 3; ++i) {
            const Tensor u = v * masks[i] / alphas[i];  // 0 outside the band
            const Tensor inside = as_float(u.abs() <= 1, g);
            dv = dv + g * inside;  // up to 3g, as the reference code
            dalpha.push_back(inv_sqrt_count(counts[i]) * ((s * masks[i] - u * inside) * g).sum());
        }
        return {dv, torch::stack(dalpha), Tensor()};
    }
};

struct GsbAttention : torch::autograd::Function<GsbAttention> {
    static Tensor forward(AutogradContext * ctx, const Tensor & p, const Tensor & alphas_in, bool per_sample) {
        const Tensor alphas = alphas_in.clamp_min(1e-5);
        const Tensor pmax = group_extreme(p, per_sample, true);
        const Tensor m1 = as_float(p > 0.7 * pmax, p);
        const Tensor m2 = as_float(p > 0.9 * pmax, p);
        ctx->save_for_backward({p, alphas, m1, m2});
        return alphas[0] * torch::round(torch::clamp(p / alphas[0], 0, 1)) + alphas[1] * m1 + alphas[2] * m2;
    }
    static variable_list backward(AutogradContext * ctx, variable_list grad) {
        const auto saved = ctx->get_saved_variables();
        const Tensor &p = saved[0], &alphas = saved[1], &m1 = saved[2], &m2 = saved[3];
        const Tensor & g = grad[0];
        const Tensor u = p / alphas[0];
        const Tensor inside = as_float((u >= 0) & (u <= 1), g);
        const Tensor above = as_float(u > 1, g);
        const Tensor dp = g * inside + g * alphas[1] * m1 + g * alphas[2] * m2;  // as coded in GSB
        const Tensor d1 = ((above + inside * (torch::round(u) - u)) * g).sum() / std::sqrt(static_cast<double>(p.numel()));
        const Tensor d2 = inv_sqrt_count(m1.sum()) * (m1 * g).sum();
        const Tensor d3 = inv_sqrt_count(m2.sum()) * (m2 * g).sum();
        return {dp, torch::stack({d1, d2, d3}), Tensor()};
    }
};

// Three group scales initialised from the first batch. Stored: the plain band means (2·mean|v| or
// 4·mean P over each band). The reference's first forward uses α2 − α1 and α3 − α2 instead, but
// only in a local variable; later forwards use the stored values. We use the stored values from the
// first forward on (docs/methods.md §7 says why).
class GsbQuantizer : public QuantizerImpl {
  public:
    explicit GsbQuantizer(const spec::QuantizerRow & row) : QuantizerImpl(row) {
        alphas = register_parameter("alphas", torch::ones({3}));
    }
    bool attention() const { return row().id == spec::Quantizer::gsb_attention; }
    void init_from(const Tensor & x) override {
        const Tensor m1 = attention() ? x > 0.7 * x.max() : (x > 0.7 * x.max()) | (x < 0.7 * x.min());
        const Tensor m2 = attention() ? x > 0.9 * x.max() : (x > 0.9 * x.max()) | (x < 0.9 * x.min());
        const Tensor a = x.abs();
        auto mean_over = [&](const Tensor & mask) {
            const double n = mask.sum().item<double>();
            return n > 0 ? (a * mask).sum().item<double>() / n : a.mean().item<double>();
        };
        const double factor = attention() ? 4.0 : 2.0;
        alphas.copy_(torch::tensor({factor * mean_over(attention() ? torch::ones_like(m1) : ~m1),
                                    factor * mean_over(m1 & ~m2), factor * mean_over(m2)}));
    }
    // Training keeps the reference's batch-wide max/min; evaluation takes them per sample.
    Tensor quantize(const Tensor & x) override {
        return attention() ? gsb_attention(x, alphas, !is_training()) : gsb_value(x, alphas, !is_training());
    }
    Deployed deployed() const override { return {{{"alphas", alphas.detach().clamp_min(1e-5)}}, {}}; }
    Tensor alphas;
};

}  // namespace

Tensor gsb_value(const Tensor & v, const Tensor & alphas, bool per_sample) {
    TORCH_CHECK(alphas.numel() == 3, "gsb_value expects 3 group scales, got ", alphas.sizes());
    return GsbValue::apply(v, alphas, per_sample);
}

Tensor gsb_attention(const Tensor & probs, const Tensor & alphas, bool per_sample) {
    TORCH_CHECK(alphas.numel() == 3, "gsb_attention expects 3 group scales, got ", alphas.sizes());
    return GsbAttention::apply(probs, alphas, per_sample);
}

SiteTransform make_gsb(const spec::QuantizerRow & row, const Options &, const SiteInfo &) {
    return std::make_shared<GsbQuantizer>(row);
}

}  // namespace bitvit::quant
