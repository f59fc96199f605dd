#include "deit.h"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

namespace bitvit {
namespace F = torch::nn::functional;

BlockImpl::BlockImpl(int64_t dim, int64_t heads, double mlp_ratio, bool qkv_bias, double drop_path_rate,
                     const BlockVariant & variant, int64_t num_tokens)
    : drop_path(drop_path_rate) {
    // timm's DeiT uses LayerNorm eps 1e-6.
    norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-6)));
    attn = register_module("attn", Attention(dim, heads, qkv_bias, variant, num_tokens));
    norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-6)));
    mlp = register_module("mlp", Mlp(dim, static_cast<int64_t>(dim * mlp_ratio), variant));
}

torch::Tensor BlockImpl::forward(const torch::Tensor & x) {
    auto h = x + bitvit::drop_path(attn(norm1(x)), drop_path, is_training());
    return h + bitvit::drop_path(mlp(norm2(h)), drop_path, is_training());
}

DeitImpl::DeitImpl(const DeitConfig & config) : config_(config) {
    config_.validate();
    const int64_t D = config_.embed_dim;
    patch_embed = register_module("patch_embed", PatchEmbed(config_.in_chans, D, config_.patch_size));
    cls_token = register_parameter("cls_token", torch::empty({1, 1, D}));
    trunc_normal_(cls_token, 0.02);
    if (config_.distilled) {
        dist_token = register_parameter("dist_token", torch::empty({1, 1, D}));
        trunc_normal_(dist_token, 0.02);
    }
    pos_embed = register_parameter("pos_embed", torch::empty({1, config_.num_tokens(), D}));
    trunc_normal_(pos_embed, 0.02);
    blocks = register_module("blocks", torch::nn::ModuleList());
    for (int64_t i = 0; i < config_.depth; ++i) {
        // Stochastic depth grows linearly with depth, as in timm.
        const double rate = config_.depth > 1 ? config_.drop_path * i / (config_.depth - 1) : config_.drop_path;
        blocks->push_back(
            Block(D, config_.num_heads, config_.mlp_ratio, config_.qkv_bias, rate, config_.variant, config_.num_tokens()));
    }
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({D}).eps(1e-6)));
    head = register_module("head", QLinear(D, config_.num_classes, true));
    if (config_.distilled) head_dist = register_module("head_dist", QLinear(D, config_.num_classes, true));
}

torch::Tensor DeitImpl::forward_features(const torch::Tensor & images) {
    TORCH_CHECK(images.dim() == 4 && images.size(1) == config_.in_chans && images.size(2) == config_.img_size &&
                    images.size(3) == config_.img_size,
                "model '", config_.name, "' expects images [B, ", config_.in_chans, ", ", config_.img_size, ", ",
                config_.img_size, "], got ", images.sizes());
    auto x = patch_embed(images);  // [B, N, D]
    const int64_t B = x.size(0);
    std::vector<torch::Tensor> tokens = {cls_token.expand({B, -1, -1})};
    if (config_.distilled) tokens.push_back(dist_token.expand({B, -1, -1}));
    tokens.push_back(x);
    x = torch::cat(tokens, 1) + pos_embed;  // [B, N + 1 (+1), D]
    for (const auto & module : *blocks) {
        auto block = module->as<Block>();
        x = block->forward(x);
        if (block->attn->capture) block->attn->taps.hidden = x;
    }
    return norm(x);
}

ModelOutput DeitImpl::forward_heads(const torch::Tensor & images) {
    auto x = forward_features(images);
    ModelOutput out;
    out.logits = head(x.select(1, 0));
    if (config_.distilled) out.dist_logits = head_dist(x.select(1, 1));
    return out;
}

torch::Tensor DeitImpl::forward(const torch::Tensor & images) {
    auto out = forward_heads(images);
    return config_.distilled ? (out.logits + out.dist_logits) / 2 : out.logits;
}

std::vector<std::shared_ptr<AttentionImpl>> DeitImpl::attention_layers() {
    std::vector<std::shared_ptr<AttentionImpl>> layers;
    for (const auto & module : *blocks) layers.push_back(module->as<Block>()->attn.ptr());
    return layers;
}

std::map<std::string, SiteTable *> DeitImpl::site_tables() {
    std::map<std::string, SiteTable *> tables;
    tables["patch_embed."] = &patch_embed->sites;
    for (size_t i = 0; i < blocks->size(); ++i) {
        auto block = blocks[i]->as<Block>();
        add_block_tables(tables, "blocks." + std::to_string(i) + ".", *block->attn, *block->mlp);
    }
    tables["head."] = &head->sites;
    if (config_.distilled) tables["head_dist."] = &head_dist->sites;
    return tables;
}

std::string DeitImpl::architecture_json() const { return spec::architecture_json(config_).dump(); }

std::string DeitImpl::describe() const {
    const DeitConfig & c = config_;
    char text[320];
    std::snprintf(text, sizeof text,
                  "input: %lld×%lld×%lld, patch %lld -> %lld tokens (%s)\n"
                  "embed_dim %lld, depth %lld, heads %lld, mlp_ratio %.1f, classes %lld, drop_path %.2f\n",
                  static_cast<long long>(c.in_chans), static_cast<long long>(c.img_size), static_cast<long long>(c.img_size),
                  static_cast<long long>(c.patch_size), static_cast<long long>(c.num_tokens()),
                  c.distilled ? "cls + dist + patches" : "cls + patches", static_cast<long long>(c.embed_dim),
                  static_cast<long long>(c.depth), static_cast<long long>(c.num_heads), c.mlp_ratio,
                  static_cast<long long>(c.num_classes), c.drop_path);
    return text;
}

std::string DeitImpl::site_example() const {
    return "model '" + config_.name +
           "' (sites look like blocks.0.attn.qkv.weight, blocks.0.attn.probs, blocks.0.mlp.fc2.input, "
           "patch_embed.proj.weight, head.weight)";
}

bool is_method_tensor(const std::string & name) {
    for (const char * marker :
         {"_quantizer.", ".norm_q.", ".norm_k.", ".shift_q", ".shift_k", ".shift_v", ".attn_bias", ".mlp.act_"}) {
        if (name.find(marker) != std::string::npos) return true;
    }
    return false;
}

int64_t count_parameters(torch::nn::Module & module) {
    int64_t n = 0;
    for (const auto & p : module.parameters()) n += p.numel();
    return n;
}

}  // namespace bitvit
