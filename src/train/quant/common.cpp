#include "train/quant/common.h"

#include <cmath>
#include <stdexcept>

namespace bitvit::quant {

using torch::Tensor;

Tensor sign_pm1(const Tensor & x) {
    return torch::where(x < 0, torch::full({}, -1.0, x.options()), torch::full({}, 1.0, x.options()));
}

Tensor straight_through(const Tensor & value, const Tensor & surrogate) {
    return value.detach() + (surrogate - surrogate.detach());
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
