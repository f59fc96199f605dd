#include "train/quant/gsb.h"

#include <algorithm>
#include <cmath>
#include <tuple>

#include "train/quant/pointwise.h"

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

// Both functions run one pass forward and one backward (pointwise.h) with the reference's own
// float operations in its order; the band masks are recomputed in backward from the thresholds
// instead of being stored.
struct GsbValue : torch::autograd::Function<GsbValue> {
    static Tensor forward(AutogradContext * ctx, const Tensor & v, const Tensor & alphas_in, bool per_sample) {
        const Tensor alphas = alphas_in.clamp_min(1e-5);
        const Tensor vmax = group_extreme(v, per_sample, true), vmin = group_extreme(v, per_sample, false);
        const Tensor hi1 = 0.7 * vmax, lo1 = 0.7 * vmin, hi2 = 0.9 * vmax, lo2 = 0.9 * vmin;
        ctx->save_for_backward({v, alphas, hi1, lo1, hi2, lo2});
        return pointwise([](float x, float a0, float a1, float a2, float h1, float l1, float h2, float l2) {
            const float s = sign_pm1_of(x);
            const float m1 = (x > h1 || x < l1) ? 1.0f : 0.0f, m2 = (x > h2 || x < l2) ? 1.0f : 0.0f;
            return a0 * s + a1 * s * m1 + a2 * s * m2;
        }, v.detach(), alphas[0], alphas[1], alphas[2], hi1, lo1, hi2, lo2);
    }
    static variable_list backward(AutogradContext * ctx, variable_list grad) {
        const auto saved = ctx->get_saved_variables();
        const Tensor &v = saved[0], &alphas = saved[1];
        // Per element: dv (up to 3g, as the reference code), each band's (s·m − u·1{|u| ≤ 1})·g with
        // u = v·m/α, and the band masks (their sums are the band counts).
        auto [dv, e0, e1, e2, m1, m2] = pointwise_outputs<6>(
            [](float g, float x, float a0, float a1, float a2, float h1, float l1, float h2, float l2) {
                const float s = sign_pm1_of(x);
                const float m[3] = {1.0f, (x > h1 || x < l1) ? 1.0f : 0.0f, (x > h2 || x < l2) ? 1.0f : 0.0f};
                const float a[3] = {a0, a1, a2};
                float d = 0.0f, e[3];
                for (int i = 0; i < 3; ++i) {
                    const float u = x * m[i] / a[i];  // 0 outside the band
                    const float inside = std::abs(u) <= 1 ? 1.0f : 0.0f;
                    d = d + g * inside;
                    e[i] = (s * m[i] - u * inside) * g;
                }
                return std::make_tuple(d, e[0], e[1], e[2], m[1], m[2]);
            },
            grad[0], v, alphas[0], alphas[1], alphas[2], saved[2], saved[3], saved[4], saved[5]);
        const Tensor counts[3] = {torch::full({}, static_cast<double>(v.numel()), v.options()), m1.sum(), m2.sum()};
        const Tensor sums[3] = {e0.sum(), e1.sum(), e2.sum()};
        std::vector<Tensor> dalpha;
        for (int i = 0; i < 3; ++i) dalpha.push_back(inv_sqrt_count(counts[i]) * sums[i]);
        return {dv, torch::stack(dalpha), Tensor()};
    }
};

struct GsbAttention : torch::autograd::Function<GsbAttention> {
    static Tensor forward(AutogradContext * ctx, const Tensor & p, const Tensor & alphas_in, bool per_sample) {
        const Tensor alphas = alphas_in.clamp_min(1e-5);
        const Tensor pmax = group_extreme(p, per_sample, true);
        const Tensor hi1 = 0.7 * pmax, hi2 = 0.9 * pmax;
        ctx->save_for_backward({p, alphas, hi1, hi2});
        return pointwise([](float x, float a0, float a1, float a2, float h1, float h2) {
            const float m1 = x > h1 ? 1.0f : 0.0f, m2 = x > h2 ? 1.0f : 0.0f;
            return a0 * round_half_even(std::min(std::max(x / a0, 0.0f), 1.0f)) + a1 * m1 + a2 * m2;
        }, p.detach(), alphas[0], alphas[1], alphas[2], hi1, hi2);
    }
    static variable_list backward(AutogradContext * ctx, variable_list grad) {
        const auto saved = ctx->get_saved_variables();
        const Tensor &p = saved[0], &alphas = saved[1];
        // Per element: dp (as coded in GSB), α1's term, m1·g, m2·g and the masks.
        auto [dp, e1, g1, g2, m1, m2] = pointwise_outputs<6>(
            [](float g, float x, float a0, float a1, float a2, float h1, float h2) {
                const float m1 = x > h1 ? 1.0f : 0.0f, m2 = x > h2 ? 1.0f : 0.0f;
                const float u = x / a0;
                const float inside = (u >= 0 && u <= 1) ? 1.0f : 0.0f, above = u > 1 ? 1.0f : 0.0f;
                return std::make_tuple(g * inside + g * a1 * m1 + g * a2 * m2, (above + inside * (round_half_even(u) - u)) * g,
                                       m1 * g, m2 * g, m1, m2);
            },
            grad[0], p, alphas[0], alphas[1], alphas[2], saved[2], saved[3]);
        const Tensor d1 = e1.sum() / std::sqrt(static_cast<double>(p.numel()));
        const Tensor d2 = inv_sqrt_count(m1.sum()) * g1.sum();
        const Tensor d3 = inv_sqrt_count(m2.sum()) * g2.sum();
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
