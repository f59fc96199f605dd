#include "ste.h"

#include <cmath>

namespace bitvit::quant {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

Tensor as_float(const Tensor & mask, const Tensor & like) { return mask.to(like.scalar_type()); }

// The max (or min) GSB thresholds are taken over: the whole tensor, or each sample's slice of it
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

struct SignClipped : torch::autograd::Function<SignClipped> {
    static Tensor forward(AutogradContext * ctx, const Tensor & x) {
        ctx->save_for_backward({x});
        return sign_pm1(x);
    }
    static variable_list backward(AutogradContext * ctx, variable_list grad) {
        const Tensor x = ctx->get_saved_variables()[0];
        return {grad[0] * as_float(x.abs() < 1, grad[0])};
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
        return {grad[0] * (2 - 2 * x.abs()) * as_float(x.abs() < 1, grad[0])};
    }
};

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
            dv = dv + g * inside;  // up to 3g: as the reference code (§5.3)
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
        const Tensor dp = g * inside + g * alphas[1] * m1 + g * alphas[2] * m2;  // as coded in GSB (§5.3)
        const Tensor d1 = ((above + inside * (torch::round(u) - u)) * g).sum() /
                          std::sqrt(static_cast<double>(p.numel()));
        const Tensor d2 = inv_sqrt_count(m1.sum()) * (m1 * g).sum();
        const Tensor d3 = inv_sqrt_count(m2.sum()) * (m2 * g).sum();
        return {dp, torch::stack({d1, d2, d3}), Tensor()};
    }
};

}  // namespace

Tensor sign_pm1(const Tensor & x) {
    return torch::where(x < 0, torch::full({}, -1.0, x.options()), torch::full({}, 1.0, x.options()));
}

Tensor sign_clipped(const Tensor & x) { return SignClipped::apply(x); }
Tensor sign_approx(const Tensor & x) { return SignApprox::apply(x); }
Tensor bool_clipped(const Tensor & x) {
    // Values 1{x > 0} (0 at x = 0, as BiBERT); gradient through clamp(x, −1, 1), BiBERT's detach form.
    const Tensor values = as_float(x > 0, x);
    const Tensor clipped = x.clamp(-1, 1);
    return straight_through(values, clipped);
}

Tensor straight_through(const Tensor & value, const Tensor & surrogate) {
    return value.detach() + (surrogate - surrogate.detach());
}
Tensor sign_identity(const Tensor & x) { return straight_through(sign_pm1(x), x); }

Tensor grad_scale(const Tensor & x, double scale) { return straight_through(x, x * scale); }
Tensor round_pass(const Tensor & x) { return straight_through(x.round(), x); }

Tensor lsq(const Tensor & x, const Tensor & step, const Tensor & zero_point, int64_t qn, int64_t qp) {
    const double g = 1.0 / std::sqrt(static_cast<double>(x.numel()) * static_cast<double>(qp));
    const Tensor s = grad_scale(step, g);
    if (!zero_point.defined()) return round_pass(torch::clamp(x / s, qn, qp)) * s;
    const Tensor z = grad_scale(round_pass(zero_point), g);
    return (round_pass(torch::clamp(x / s + z, qn, qp)) - z) * s;
}

Tensor elastic_sign(const Tensor & x, const Tensor & alpha, ElasticGradient gradient) {
    return ElasticSign::apply(x, alpha.clamp_min(1e-5), gradient == ElasticGradient::gsb);
}

Tensor elastic_unsigned(const Tensor & x, const Tensor & alpha) { return lsq(x, alpha.clamp_min(1e-5), Tensor(), 0, 1); }

Tensor ternary_twn(const Tensor & w, bool per_row) {
    TORCH_CHECK(w.dim() >= 1, "ternary_twn expects a weight tensor, got ", w.sizes());
    Tensor ternary;
    {
        torch::NoGradGuard no_grad;  // thresholds and scales are recomputed from W each step, not learned
        const Tensor a = w.abs();
        const Tensor delta = per_row ? 0.7 * a.mean(-1, true) : 0.7 * a.mean();
        const Tensor mask = as_float(a > delta, w);
        const Tensor kept = per_row ? (a * mask).sum(-1, true) : (a * mask).sum();
        const Tensor count = per_row ? mask.sum(-1, true) : mask.sum();
        ternary = kept / count.clamp_min(1) * sign_pm1(w) * mask;
    }
    return straight_through(ternary, w);
}

Tensor softmax_aware_binarize(const Tensor & probs, double beta) {
    const Tensor threshold = beta * std::get<0>(probs.detach().max(-1, true));
    const Tensor binary = as_float(probs.detach() >= threshold, probs);
    return straight_through(binary, probs);
}

Tensor gsb_value(const Tensor & v, const Tensor & alphas, bool per_sample) {
    TORCH_CHECK(alphas.numel() == 3, "gsb_value expects 3 group scales, got ", alphas.sizes());
    return GsbValue::apply(v, alphas, per_sample);
}

Tensor gsb_attention(const Tensor & probs, const Tensor & alphas, bool per_sample) {
    TORCH_CHECK(alphas.numel() == 3, "gsb_attention expects 3 group scales, got ", alphas.sizes());
    return GsbAttention::apply(probs, alphas, per_sample);
}

}  // namespace bitvit::quant
