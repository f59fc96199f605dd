#include "train/quant/common.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <tuple>

#include "train/quant/pointwise.h"

namespace bitvit::quant {

using torch::Tensor;

Tensor sign_pm1(const Tensor & x) {
    return pointwise([](float v) { return sign_pm1_of(v); }, x.detach());
}

namespace {
// Forward: `value` (+ 0, which turns −0 into +0 as value.detach() + (s − s.detach()) does).
// Backward: the gradient straight to `surrogate`, summed to its shape if it broadcast.
struct StraightThrough : torch::autograd::Function<StraightThrough> {
    static Tensor forward(torch::autograd::AutogradContext * ctx, const Tensor & value, const Tensor & surrogate) {
        ctx->saved_data["shape"] = surrogate.sizes().vec();
        return pointwise([](float v, float) { return v + 0.0f; }, value.detach(), surrogate.detach());
    }
    static torch::autograd::variable_list backward(torch::autograd::AutogradContext * ctx, torch::autograd::variable_list grad) {
        return {Tensor(), at::sum_to(grad[0], ctx->saved_data["shape"].toIntVector())};
    }
};
}  // namespace

Tensor straight_through(const Tensor & value, const Tensor & surrogate) {
    return StraightThrough::apply(value, surrogate);
}

namespace {
float snapped(float c, Snap snap) { return snap == Snap::round ? round_half_even(c) : sign_pm1_of(c); }

struct ClampSnapScale : torch::autograd::Function<ClampSnapScale> {
    // !has_z: no zero point, z is a placeholder (x / s and q·s exactly, no + 0 or − 0 to change the
    // sign of a zero).
    static Tensor forward(torch::autograd::AutogradContext * ctx, const Tensor & x, const Tensor & s, const Tensor & z,
                          bool has_z, double lo, double hi, Snap snap) {
        const Tensor zero = z.detach();
        ctx->save_for_backward({x, s, zero});
        ctx->saved_data["lo"] = lo;
        ctx->saved_data["hi"] = hi;
        ctx->saved_data["round"] = snap == Snap::round;
        ctx->saved_data["has_z"] = has_z;
        const float l = static_cast<float>(lo), h = static_cast<float>(hi);
        return pointwise([=](float v, float sv, float zv) {
            const float c = std::min(std::max(has_z ? v / sv + zv : v / sv, l), h);
            return (has_z ? snapped(c, snap) - zv : snapped(c, snap)) * sv;
        }, x.detach(), s.detach(), zero);
    }
    static torch::autograd::variable_list backward(torch::autograd::AutogradContext * ctx, torch::autograd::variable_list grad) {
        const auto saved = ctx->get_saved_variables();
        const Tensor & x = saved[0], & s = saved[1], & z = saved[2];
        const float l = static_cast<float>(ctx->saved_data["lo"].toDouble()), h = static_cast<float>(ctx->saved_data["hi"].toDouble());
        const Snap snap = ctx->saved_data["round"].toBool() ? Snap::round : Snap::sign;
        const bool has_z = ctx->saved_data["has_z"].toBool();
        // The chain's own operations: grad of the product, masked by the clamp, through the division.
        auto [gx, gs, gz] = pointwise_outputs<3>([=](float g, float v, float sv, float zv) {
            const float u = has_z ? v / sv + zv : v / sv;
            const float gq = g * sv;                           // d/dq of (q − z)·s
            const float gu = (u >= l && u <= h) ? gq : 0.0f;   // the clamp's pass-through
            const float q = snapped(std::min(std::max(u, l), h), snap);
            return std::make_tuple(gu / sv,                                          // d/dx of x / s
                                   g * (has_z ? q - zv : q) + -gu * ((v / sv) / sv),  // both uses of s
                                   -gq + gu);                                        // both uses of z
        }, grad[0], x, s, z);
        return {gx, at::sum_to(gs, s.sizes()), has_z ? at::sum_to(gz, z.sizes()) : Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
    }
};
}  // namespace

Tensor clamp_snap_scale(const Tensor & x, const Tensor & s, const Tensor & z, double lo, double hi, Snap snap) {
    // Function::apply takes no undefined tensors: a 0 stands in for a missing zero point.
    return ClampSnapScale::apply(x, s, z.defined() ? z : torch::zeros({}, x.options()), z.defined(), lo, hi, snap);
}

Tensor grad_scale(const Tensor & x, double scale) { return straight_through(x, x * scale); }
Tensor round_pass(const Tensor & x) { return straight_through(x.round(), x); }

Tensor as_float(const Tensor & mask, const Tensor & like) { return mask.to(like.scalar_type()); }

namespace {
std::vector<int64_t> per_row_shape(const Tensor & w) {
    std::vector<int64_t> shape(static_cast<size_t>(w.dim()), 1);
    shape[0] = w.size(0);
    return shape;
}
}  // namespace

Tensor row_mean(const Tensor & w) { return w.flatten(1).mean(1).view(per_row_shape(w)); }
Tensor row_mean_abs(const Tensor & w) { return w.abs().flatten(1).mean(1).view(per_row_shape(w)); }
Tensor row_code_scale(const Tensor & q) { return q.detach().abs().flatten(1).amax(1); }

Tensor per_channel(const Tensor & p, const SiteInfo & site, const Tensor & x) {
    switch (site.kind) {
        case SiteKind::weight: {
            std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
            shape[0] = p.size(0);
            return p.view(shape);
        }
        case SiteKind::token_activation: return p;
        case SiteKind::head_activation:
        case SiteKind::attention_map: return p.view({1, p.size(0), 1, 1});
    }
    return p;
}

Options::Options(const spec::QuantizerRow & row, const std::map<std::string, double> & given) {
    const std::string who = std::string("quantizer '") + row.name + "'";
    for (const auto & o : row.options) values_[o.name] = o.fallback;
    for (const auto & [key, value] : given) {
        const spec::OptionSpec * spec = nullptr;
        for (const auto & o : row.options) spec = key == o.name ? &o : spec;
        if (!spec) {
            std::string known;
            for (const auto & o : row.options) known += (known.empty() ? "" : ", ") + std::string(o.name);
            throw std::invalid_argument(who + " has no option '" + key + "' (" + (known.empty() ? "it takes none" : "options: " + known) + ")");
        }
        if (!(value >= spec->lo && value <= spec->hi) || (spec->integer && value != std::floor(value))) {
            char range[96];
            std::snprintf(range, sizeof range, "%s in [%g, %g]", spec->integer ? "an integer" : "a number", spec->lo, spec->hi);
            throw std::invalid_argument(who + ": option " + key + " = " + std::to_string(value) + " must be " + range);
        }
        values_[key] = value;
    }
}

double Options::get(const std::string & key) const {
    const auto it = values_.find(key);
    if (it == values_.end()) throw std::logic_error("quantizer option '" + key + "' is not in the table");
    return it->second;
}

QuantizerImpl::QuantizerImpl(const spec::QuantizerRow & row) : row_(&row) {
    initialized_ = register_buffer("initialized", torch::zeros({1}));
}

Tensor QuantizerImpl::forward(const Tensor & x) {
    if (!initialized()) {
        torch::NoGradGuard no_grad;
        init_from(x.detach());
        initialized_.fill_(1.0f);
    }
    return quantize(x);
}

}  // namespace bitvit::quant
