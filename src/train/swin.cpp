#include "swin.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <regex>
#include <stdexcept>

#include "spec/windows.h"

namespace bitvit {
namespace F = torch::nn::functional;

torch::Tensor window_partition(const torch::Tensor & x, int64_t window) {
    const int64_t B = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
    return x.view({B, H / window, window, W / window, window, C}).permute({0, 1, 3, 2, 4, 5}).reshape({-1, window * window, C});
}

torch::Tensor window_reverse(const torch::Tensor & windows, int64_t window, int64_t height, int64_t width) {
    const int64_t C = windows.size(-1);
    return windows.view({-1, height / window, width / window, window, window, C})
        .permute({0, 1, 3, 2, 4, 5})
        .reshape({-1, height, width, C});
}

PatchMergingImpl::PatchMergingImpl(int64_t dim) {
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({4 * dim})));
    reduction = register_module("reduction", QLinear(4 * dim, 2 * dim, false));
}

torch::Tensor PatchMergingImpl::forward(const torch::Tensor & x) {
    const int64_t B = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
    // [B, H/2, 2 (row offset), W/2, 2 (col offset), C] -> [B, H/2, W/2, col, row, C] -> [..., 4C]:
    // channel block 2·col + row, timm's order.
    const auto merged = x.view({B, H / 2, 2, W / 2, 2, C}).permute({0, 1, 3, 4, 2, 5}).flatten(3);
    return reduction(norm(merged));
}

SwinBlockImpl::SwinBlockImpl(int64_t dim, int64_t heads, int64_t resolution, int64_t window_size, int64_t shift_size,
                             double mlp_ratio, bool qkv_bias, double drop_path_rate, const BlockVariant & variant)
    : window(window_size), shift(shift_size), drop_path(drop_path_rate) {
    norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
    attn = register_module("attn", Attention(dim, heads, qkv_bias, variant, window * window, window));
    norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
    mlp = register_module("mlp", Mlp(dim, static_cast<int64_t>(static_cast<double>(dim) * mlp_ratio), variant));
    if (shift > 0) {
        std::vector<float> mask = spec::swin_shift_mask(resolution, window, shift);  // [nW, M², M²]
        const int64_t T = window * window;
        attn_mask = torch::from_blob(mask.data(), {static_cast<int64_t>(mask.size()) / (T * T), T, T}).clone();
    }
}

torch::Tensor SwinBlockImpl::forward(const torch::Tensor & x) {
    const int64_t H = x.size(1), W = x.size(2);
    auto h = norm1(x);
    if (shift > 0) h = torch::roll(h, {-shift, -shift}, {1, 2});
    const int64_t pad_h = (window - H % window) % window, pad_w = (window - W % window) % window;
    if (pad_h > 0 || pad_w > 0) h = F::pad(h, F::PadFuncOptions({0, 0, 0, pad_w, 0, pad_h}));
    const auto mask = attn_mask.defined() ? attn_mask.to(x.device(), x.scalar_type()) : torch::Tensor();  // not a buffer: follows x
    auto a = attn(window_partition(h, window), mask);  // [B·nW, M², C]
    a = window_reverse(a, window, H + pad_h, W + pad_w).slice(1, 0, H).slice(2, 0, W);
    if (shift > 0) a = torch::roll(a, {shift, shift}, {1, 2});
    const auto y = x + bitvit::drop_path(a, drop_path, is_training());
    return y + bitvit::drop_path(mlp(norm2(y)), drop_path, is_training());
}

SwinStageImpl::SwinStageImpl(const SwinConfig & c, int64_t stage, int64_t first_block) {
    const int64_t D = c.stage_dim(stage), total = c.total_depth();
    if (stage > 0) downsample = register_module("downsample", PatchMerging(c.stage_dim(stage - 1)));
    blocks = register_module("blocks", torch::nn::ModuleList());
    for (int64_t j = 0; j < c.depths[stage]; ++j) {
        const int64_t k = first_block + j;
        const double rate = total > 1 ? c.drop_path * static_cast<double>(k) / static_cast<double>(total - 1) : c.drop_path;
        blocks->push_back(SwinBlock(D, c.num_heads[stage], c.stage_resolution(stage), c.stage_window(stage),
                                    c.block_shift(stage, j), c.mlp_ratio, c.qkv_bias, rate, c.variant));
    }
}

torch::Tensor SwinStageImpl::forward(const torch::Tensor & input) {
    auto x = downsample ? downsample(input) : input;
    for (const auto & module : *blocks) {
        auto block = module->as<SwinBlock>();
        x = block->forward(x);
        if (block->attn->capture) block->attn->taps.hidden = x.flatten(1, 2);  // [B, H·W, C]
    }
    return x;
}

SwinHeadImpl::SwinHeadImpl(int64_t dim, int64_t num_classes) {
    fc = register_module("fc", QLinear(dim, num_classes, true));
}

SwinImpl::SwinImpl(const SwinConfig & config) : config_(config) {
    config_.validate();
    patch_embed = register_module("patch_embed", PatchEmbed(config_.in_chans, config_.embed_dim, config_.patch_size, true));
    layers = register_module("layers", torch::nn::ModuleList());
    int64_t first_block = 0;
    for (int64_t i = 0; i < config_.num_stages(); ++i) {
        layers->push_back(SwinStage(config_, i, first_block));
        first_block += config_.depths[i];
    }
    const int64_t last = config_.stage_dim(config_.num_stages() - 1);
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({last})));
    head = register_module("head", SwinHead(last, config_.num_classes));
}

torch::Tensor SwinImpl::forward_features(const torch::Tensor & images) {
    const SwinConfig & c = config_;
    TORCH_CHECK(images.dim() == 4 && images.size(1) == c.in_chans && images.size(2) == c.img_size && images.size(3) == c.img_size,
                "model '", c.name, "' expects images [B, ", c.in_chans, ", ", c.img_size, ", ", c.img_size, "], got ",
                images.sizes());
    const int64_t r = c.stage_resolution(0);
    auto x = patch_embed(images).view({images.size(0), r, r, c.embed_dim});  // [B, r, r, D]
    for (const auto & stage : *layers) x = stage->as<SwinStage>()->forward(x);
    return norm(x);
}

ModelOutput SwinImpl::forward_heads(const torch::Tensor & images) {
    return {head->fc(forward_features(images).mean({1, 2})), {}};
}

torch::Tensor SwinImpl::forward(const torch::Tensor & images) { return forward_heads(images).logits; }

std::vector<std::shared_ptr<AttentionImpl>> SwinImpl::attention_layers() {
    std::vector<std::shared_ptr<AttentionImpl>> out;
    for (const auto & stage : *layers) {
        for (const auto & block : *stage->as<SwinStage>()->blocks) out.push_back(block->as<SwinBlock>()->attn.ptr());
    }
    return out;
}

std::map<std::string, SiteTable *> SwinImpl::site_tables() {
    std::map<std::string, SiteTable *> tables;
    tables["patch_embed."] = &patch_embed->sites;
    for (size_t i = 0; i < layers->size(); ++i) {
        auto stage = layers[i]->as<SwinStage>();
        const std::string layer = "layers." + std::to_string(i) + ".";
        if (stage->downsample) tables[layer + "downsample.reduction."] = &stage->downsample->reduction->sites;
        for (size_t j = 0; j < stage->blocks->size(); ++j) {
            auto block = stage->blocks[j]->as<SwinBlock>();
            add_block_tables(tables, layer + "blocks." + std::to_string(j) + ".", *block->attn, *block->mlp);
        }
    }
    tables["head.fc."] = &head->fc->sites;
    return tables;
}

std::string SwinImpl::architecture_json() const { return spec::architecture_json(config_).dump(); }

std::string SwinImpl::describe() const {
    const SwinConfig & c = config_;
    char line[200];
    std::snprintf(line, sizeof line, "input: %lld×%lld×%lld, patch %lld, window %lld\n", static_cast<long long>(c.in_chans),
                  static_cast<long long>(c.img_size), static_cast<long long>(c.img_size), static_cast<long long>(c.patch_size),
                  static_cast<long long>(c.window_size));
    std::string text = line;
    for (int64_t i = 0; i < c.num_stages(); ++i) {
        std::snprintf(line, sizeof line, "stage %lld: %lld×%lld tokens, width %lld, %lld blocks, %lld heads, %lld×%lld windows%s\n",
                      static_cast<long long>(i), static_cast<long long>(c.stage_resolution(i)),
                      static_cast<long long>(c.stage_resolution(i)), static_cast<long long>(c.stage_dim(i)),
                      static_cast<long long>(c.depths[i]), static_cast<long long>(c.num_heads[i]),
                      static_cast<long long>(c.stage_window(i)), static_cast<long long>(c.stage_window(i)),
                      c.block_shift(i, 1) > 0 ? " (odd blocks shifted)" : "");
        text += line;
    }
    std::snprintf(line, sizeof line, "mlp_ratio %.1f, classes %lld, drop_path %.2f\n", c.mlp_ratio,
                  static_cast<long long>(c.num_classes), c.drop_path);
    return text + line;
}

std::string SwinImpl::site_example() const {
    return "model '" + config_.name +
           "' (sites look like layers.0.blocks.1.attn.qkv.weight, layers.0.blocks.1.attn.probs, "
           "layers.1.downsample.reduction.input, patch_embed.proj.weight, head.fc.weight)";
}

torch::OrderedDict<std::string, torch::Tensor> swin_to_timm_layout(const torch::OrderedDict<std::string, torch::Tensor> & sd,
                                                                   bool * converted) {
    const bool original = sd.contains("head.weight") || sd.contains("layers.0.downsample.reduction.weight");
    if (converted) *converted = original;
    static const std::regex downsample(R"(^layers\.(\d+)\.downsample\.(.*)$)");
    torch::OrderedDict<std::string, torch::Tensor> out;
    for (const auto & item : sd) {
        std::string name = item.key();
        const std::string mask = "attn_mask";
        const bool rebuilt = name.find("relative_position_index") != std::string::npos ||
                             (name.size() >= mask.size() && name.compare(name.size() - mask.size(), mask.size(), mask) == 0);
        if (rebuilt) continue;  // timm recomputes them from the window size
        std::smatch m;
        if (original && std::regex_match(name, m, downsample)) {
            name = "layers." + std::to_string(std::stoll(m[1].str()) + 1) + ".downsample." + m[2].str();
        } else if (original && (name == "head.weight" || name == "head.bias")) {
            name = "head.fc." + name.substr(5);
        }
        out.insert(name, item.value());
    }
    return out;
}

}  // namespace bitvit
