#include "layers.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "spec/windows.h"
#include "train/batched-matmul.h"
#include "train/quant/pointwise.h"

namespace bitvit {
namespace F = torch::nn::functional;

void trunc_normal_(torch::Tensor & t, double std) {
    torch::NoGradGuard no_grad;
    t.normal_(0.0, std);
    for (int attempt = 0; attempt < 100; ++attempt) {
        auto outside = t.abs() > 2.0 * std;
        if (!outside.any().item<bool>()) return;
        t.masked_scatter_(outside, torch::empty_like(t).normal_(0.0, std).masked_select(outside));
    }
    t.clamp_(-2.0 * std, 2.0 * std);
}

torch::Tensor drop_path(const torch::Tensor & x, double rate, bool training) {
    if (!training || rate <= 0.0) return x;
    const double keep = 1.0 - rate;
    std::vector<int64_t> shape(x.dim(), 1);
    shape[0] = x.size(0);
    auto mask = torch::empty(shape, x.options()).bernoulli_(keep);
    return x * mask / keep;
}

namespace {

std::string site_module_name(const std::string & site) {
    std::string name = site;
    std::replace(name.begin(), name.end(), '.', '_');
    return name + "_quantizer";
}

}  // namespace

SiteTable::SiteTable(torch::nn::Module & owner, std::vector<std::pair<std::string, SiteInfo>> sites)
    : owner_(owner) {
    for (auto & [name, info] : sites) {
        names_.push_back(name);
        info_.emplace(name, info);
    }
}

bool SiteTable::has(const std::string & site) const {
    return std::find(names_.begin(), names_.end(), site) != names_.end();
}

torch::Tensor SiteTable::apply(const std::string & site, const torch::Tensor & x) const {
    const auto it = installed_.find(site);
    return it == installed_.end() ? x : it->second->forward(x);
}

SiteTransform SiteTable::installed(const std::string & site) const {
    const auto it = installed_.find(site);
    return it == installed_.end() ? nullptr : it->second;
}

void SiteTable::install(const std::string & site, SiteTransform transform) {
    if (!has(site)) throw std::invalid_argument("no site '" + site + "' here");
    if (!transform) throw std::invalid_argument("null transform for site '" + site + "'");
    const std::string name = site_module_name(site);
    if (installed_.count(site)) {
        owner_.replace_module(name, transform);
    } else {
        owner_.register_module(name, transform);
    }
    installed_[site] = std::move(transform);
}

namespace {

// q / scale snapped to the integer codes it holds (the snap only removes division rounding; the
// gradient is that of q / scale, the scale being detached): one pass each way. The value is the
// codes bit for bit (design.md); + 0 keeps the sign of zero that round(c) + (c − c) gave.
struct CodesOf : torch::autograd::Function<CodesOf> {
    static torch::Tensor forward(torch::autograd::AutogradContext * ctx, const torch::Tensor & q, const torch::Tensor & scale) {
        ctx->save_for_backward({scale});
        return quant::pointwise([](float v, float s) { return quant::round_half_even(v / s) + 0.0f; }, q.detach(), scale);
    }
    static torch::autograd::variable_list backward(torch::autograd::AutogradContext * ctx, torch::autograd::variable_list grad) {
        const torch::Tensor scale = ctx->get_saved_variables()[0];
        return {quant::pointwise([](float g, float s) { return g / s; }, grad[0], scale), torch::Tensor()};
    }
};

// A zero scale (an all-zero row) has codes 0.
torch::Tensor codes_of(const torch::Tensor & q, const torch::Tensor & scale) {
    return CodesOf::apply(q, torch::where(scale == 0, torch::ones_like(scale), scale).detach());
}

}  // namespace

QLinearImpl::QLinearImpl(int64_t in_features, int64_t out_features, bool with_bias)
    : sites(*this, {{"weight", {SiteKind::weight, out_features}}, {"input", {SiteKind::token_activation, in_features}}}) {
    weight = register_parameter("weight", torch::empty({out_features, in_features}));
    trunc_normal_(weight, 0.02);
    if (with_bias) bias = register_parameter("bias", torch::zeros({out_features}));
}

// xq · wqᵀ + bias for the outputs xq [..., in] and wq [out, in] of the site transforms xt and wt
// (nullptr: none).
torch::Tensor codes_first_linear(const torch::Tensor & xq, const SiteTransform & xt, const torch::Tensor & wq,
                                 const SiteTransform & wt, const torch::Tensor & bias) {
    const torch::Tensor xs = xt ? xt->code_scale(xq) : torch::Tensor(), ws = wt ? wt->code_scale(wq) : torch::Tensor();
    if (!xs.defined() || !ws.defined()) return F::linear(xq, wq, bias);
    // Binary (or ternary) codes on both sides: Σ codes·codes is an exact integer, then × (α·s_row),
    // then + bias — the runtime's order. Dividing by the detached scales keeps every gradient as
    // F::linear(xq, wq) gives it. A zero scale (an all-zero row) has codes 0.
    const torch::Tensor out = F::linear(codes_of(xq, xs), codes_of(wq, ws.unsqueeze(1))) * (xs * ws);
    return bias.defined() ? out + bias : out;
}

torch::Tensor QLinearImpl::forward(const torch::Tensor & x) {
    return codes_first_linear(sites.apply("input", x), sites.installed("input"), sites.apply("weight", weight),
                              sites.installed("weight"), bias);
}

AttentionImpl::AttentionImpl(int64_t dim, int64_t heads, bool qkv_bias, const BlockVariant & v, int64_t num_tokens,
                             int64_t window)
    : num_heads(heads),
      variant(v),
      sites(*this, {{"q", {SiteKind::head_activation, heads}},
                    {"k", {SiteKind::head_activation, heads}},
                    {"v", {SiteKind::head_activation, heads}},
                    {"probs", {SiteKind::attention_map, heads}}}) {
    if (dim % heads != 0) {
        throw std::invalid_argument("embed_dim " + std::to_string(dim) + " is not divisible by num_heads " +
                                    std::to_string(heads));
    }
    scale = 1.0 / std::sqrt(static_cast<double>(dim / heads));
    qkv = register_module("qkv", QLinear(dim, 3 * dim, qkv_bias && v.linear_bias));
    proj = register_module("proj", QLinear(dim, dim, v.linear_bias));
    const int64_t head_dim = dim / heads;
    if (variant.qk_norm) {
        norm_q = register_module("norm_q", torch::nn::LayerNorm(torch::nn::LayerNormOptions({head_dim})));
        norm_k = register_module("norm_k", torch::nn::LayerNorm(torch::nn::LayerNormOptions({head_dim})));
    }
    if (variant.qkv_shift) {
        shift_q = register_parameter("shift_q", torch::zeros({heads, 1, head_dim}));
        shift_k = register_parameter("shift_k", torch::zeros({heads, 1, head_dim}));
        shift_v = register_parameter("shift_v", torch::zeros({heads, 1, head_dim}));
    }
    if (variant.attn_bias) attn_bias = register_parameter("attn_bias", torch::zeros({heads, num_tokens, num_tokens}));
    if (window > 0) {
        if (num_tokens != window * window) throw std::invalid_argument("window attention needs window² tokens");
        relative_position_bias_table = register_parameter("relative_position_bias_table", torch::empty({(2 * window - 1) * (2 * window - 1), heads}));
        trunc_normal_(relative_position_bias_table, 0.02);
        std::vector<int64_t> index = spec::swin_relative_position_index(window);  // [M², M²]
        relative_position_index = torch::from_blob(index.data(), {num_tokens, num_tokens}, torch::kLong).clone();
    }
}

torch::Tensor AttentionImpl::forward(const torch::Tensor & x, const torch::Tensor & mask) {
    const int64_t B = x.size(0), N = x.size(1), C = x.size(2);
    // [B, N, 3C] -> [3, B, H, N, d]
    // unbind, not three selects: its backward stacks the three gradients in one pass, where each
    // select's would fill a zero tensor of qkv's size and add them up in the permuted layout.
    const auto qkv_heads = qkv(x).reshape({B, N, 3, num_heads, C / num_heads}).permute({2, 0, 3, 1, 4}).unbind(0);
    auto q = qkv_heads[0], k = qkv_heads[1], v = qkv_heads[2];  // [B, H, N, d]
    if (variant.qk_norm) {
        q = norm_q(q);
        k = norm_k(k);
    }
    if (variant.qkv_shift) {
        q = q + shift_q;
        k = k + shift_k;
        v = v + shift_v;
    }
    if (capture) taps = BlockTaps{q, k, v, {}, {}, {}};
    q = sites.apply("q", q);
    k = sites.apply("k", k);
    v = sites.apply("v", v);
    auto scores = site_matmul(q, sites.installed("q"), k.transpose(-2, -1), sites.installed("k")) * scale;  // [B, H, N, N]
    if (relative_position_bias_table.defined()) {
        const auto index = relative_position_index.to(relative_position_bias_table.device()).flatten();
        const auto bias = relative_position_bias_table.index_select(0, index).view({N, N, num_heads}).permute({2, 0, 1});
        scores = scores + bias;  // [H, N, N] broadcast over the windows
    }
    if (mask.defined()) {
        const int64_t windows = mask.size(0);
        scores = (scores.view({B / windows, windows, num_heads, N, N}) + mask.unsqueeze(1)).view({B, num_heads, N, N});
    }
    auto probs = variant.softmax ? torch::softmax(scores, -1) : scores;
    if (variant.attn_bias) probs = probs + attn_bias;
    if (capture) {
        taps.scores = scores;
        taps.probs = probs;
    }
    probs = sites.apply("probs", probs);
    auto out = site_matmul(probs, sites.installed("probs"), v, sites.installed("v")).transpose(1, 2).reshape({B, N, C});
    return proj(out);
}

torch::Tensor site_matmul(const torch::Tensor & a, const SiteTransform & ta, const torch::Tensor & b, const SiteTransform & tb) {
    torch::Tensor as = ta ? ta->code_scale(a) : torch::Tensor(), bs = tb ? tb->code_scale(b) : torch::Tensor();
    if (!as.defined() || !bs.defined()) return batched_matmul(a, b);
    as = as.reshape({1, -1, 1, 1});  // [1, H or 1, 1, 1]
    bs = bs.reshape({1, -1, 1, 1});
    return batched_matmul(codes_of(a, as), codes_of(b, bs)) * (as * bs);
}

MlpImpl::MlpImpl(int64_t dim, int64_t hidden, const BlockVariant & v) : variant(v) {
    fc1 = register_module("fc1", QLinear(dim, hidden, v.linear_bias));
    fc2 = register_module("fc2", QLinear(hidden, dim, v.linear_bias));
    if (variant.mlp_act == "rprelu") {
        act_shift = register_parameter("act_shift", torch::zeros({hidden}));
        act_slope = register_parameter("act_slope", torch::full({hidden}, 0.25));  // nn.PReLU's initial slope
        act_bias = register_parameter("act_bias", torch::zeros({hidden}));
    }
}

torch::Tensor rprelu(const torch::Tensor & x, const torch::Tensor & shift, const torch::Tensor & slope,
                     const torch::Tensor & bias) {
    const torch::Tensor shifted = x + shift;
    return torch::where(shifted >= 0, shifted, shifted * slope) + bias;
}

torch::Tensor MlpImpl::forward(const torch::Tensor & x) {
    auto h = fc1(x);
    if (variant.mlp_act == "rprelu") {
        h = rprelu(h, act_shift, act_slope, act_bias);
    } else {
        h = variant.mlp_act == "relu" ? torch::relu(h) : F::gelu(h);
    }
    if (variant.mlp_clip > 0) h = h.clamp(-variant.mlp_clip, variant.mlp_clip);
    return fc2(h);
}

PatchEmbedImpl::PatchEmbedImpl(int64_t in_chans, int64_t embed_dim, int64_t patch_size, bool with_norm)
    : sites(*this, {{"proj.weight", {SiteKind::weight, embed_dim}},
                    {"proj.input", {SiteKind::token_activation, in_chans * patch_size * patch_size}}}) {
    proj = register_module(
        "proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_chans, embed_dim, patch_size).stride(patch_size)));
    if (with_norm) norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({embed_dim})));
}

torch::Tensor PatchEmbedImpl::forward(const torch::Tensor & images) {
    const auto x = embed(images);
    return norm ? norm(x) : x;
}

torch::Tensor PatchEmbedImpl::embed(const torch::Tensor & images) {
    const auto w = sites.apply("proj.weight", proj->weight);  // [D, C, p, p]
    const SiteTransform input = sites.installed("proj.input");
    if (!input) {
        const auto x = F::conv2d(images, w, F::Conv2dFuncOptions().bias(proj->bias).stride(proj->options.stride()));
        return x.flatten(2).transpose(1, 2);  // [B, D, h, w] -> [B, N, D]
    }
    // A quantized input quantizes each patch as a token: im2col in the conv weight's (channel, row,
    // column) order, [B, C, H, W] -> [B, N, C·p·p], then the linear product — the runtime's
    // computation (codes first when both sides are binary).
    const int64_t p = proj->options.kernel_size()->at(0);
    const auto patches = F::unfold(images, F::UnfoldFuncOptions({p, p}).stride({p, p})).transpose(1, 2);
    return codes_first_linear(input->forward(patches), input, w.flatten(1), sites.installed("proj.weight"), proj->bias);
}

void VisionModelImpl::set_capture(bool on) {
    for (const auto & attn : attention_layers()) {
        attn->capture = on;
        attn->taps = BlockTaps{};
    }
}

std::vector<BlockTaps> VisionModelImpl::taps() {
    std::vector<BlockTaps> out;
    for (const auto & attn : attention_layers()) out.push_back(attn->taps);
    return out;
}

void VisionModelImpl::add_block_tables(std::map<std::string, SiteTable *> & tables, const std::string & prefix,
                                       AttentionImpl & attn, MlpImpl & mlp) {
    tables[prefix + "attn."] = &attn.sites;
    tables[prefix + "attn.qkv."] = &attn.qkv->sites;
    tables[prefix + "attn.proj."] = &attn.proj->sites;
    tables[prefix + "mlp.fc1."] = &mlp.fc1->sites;
    tables[prefix + "mlp.fc2."] = &mlp.fc2->sites;
}

std::vector<std::string> VisionModelImpl::site_names() {
    std::vector<std::string> names;
    for (const auto & [prefix, table] : site_tables()) {
        for (const auto & site : table->names()) names.push_back(prefix + site);
    }
    return names;
}

std::pair<SiteTable *, std::string> VisionModelImpl::find_site(const std::string & site) {
    for (const auto & [prefix, table] : site_tables()) {
        if (site.compare(0, prefix.size(), prefix) == 0 && table->has(site.substr(prefix.size()))) {
            return {table, site.substr(prefix.size())};
        }
    }
    throw std::invalid_argument("unknown site '" + site + "' in " + site_example());
}

void VisionModelImpl::install(const std::string & site, SiteTransform transform) {
    auto [table, local] = find_site(site);
    table->install(local, std::move(transform));
}

SiteTransform VisionModelImpl::site_transform(const std::string & site) {
    auto [table, local] = find_site(site);
    return table->installed(local);
}

SiteInfo VisionModelImpl::site_info(const std::string & site) {
    auto [table, local] = find_site(site);
    return table->info(local);
}

}  // namespace bitvit
