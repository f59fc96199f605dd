// Swin Transformer with timm's structure and parameter names (timm's current layout: patch merging at
// the start of stage i ≥ 1, classifier head.fc), built from the same layers as DeiT (layers.h), so
// every quantizer and block variant serves it unchanged. docs/methods.md §9 says what each method
// does on windows.
//
// Parameter names:
//   patch_embed.proj.{weight,bias}, patch_embed.norm,
//   layers.{i}.downsample.{norm, reduction.weight} (i ≥ 1),
//   layers.{i}.blocks.{j}.{norm1, attn.qkv, attn.relative_position_bias_table, attn.proj, norm2,
//   mlp.fc1, mlp.fc2}, norm, head.fc
// (the relative position index and the shifted windows' mask are rebuilt from the window size).
//
// Sites: patch_embed.proj.{weight,input}; per block, prefixed "layers.{i}.blocks.{j}.", the DeiT
// block's (attn.qkv.*, attn.q, attn.k, attn.v, attn.probs, attn.proj.*, mlp.fc1.*, mlp.fc2.*) on
// [B·nW, H, M², d] windows; layers.{i}.downsample.reduction.{weight,input} (the 4C merged input);
// head.fc.{weight,input}.
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "layers.h"

namespace bitvit {

using spec::SwinConfig;
using spec::swin_config;
using spec::swin_config_names;

// [B, H, W, C] -> [B, H/2, W/2, 2C]: each 2×2 neighbourhood concatenated as timm does — (row, col)
// offsets (0, 0), (1, 0), (0, 1), (1, 1) — then LayerNorm(4C) and the reduction (no bias).
class PatchMergingImpl : public torch::nn::Module {
  public:
    explicit PatchMergingImpl(int64_t dim);
    torch::Tensor forward(const torch::Tensor & x);
    torch::nn::LayerNorm norm{nullptr};
    QLinear reduction{nullptr};
};
TORCH_MODULE(PatchMerging);

// Pre-norm block on a [B, H, W, C] map: attention within M×M windows (cyclically shifted by `shift`
// tokens, with the mask that keeps the wrapped-around regions apart), then the MLP on every token.
// A resolution that is not a multiple of M is zero-padded after the norm, as timm does.
class SwinBlockImpl : public torch::nn::Module {
  public:
    SwinBlockImpl(int64_t dim, int64_t num_heads, int64_t resolution, int64_t window, int64_t shift,
                  double mlp_ratio, bool qkv_bias, double drop_path, const BlockVariant & variant);
    torch::Tensor forward(const torch::Tensor & x);
    torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
    Attention attn{nullptr};
    Mlp mlp{nullptr};
    int64_t window, shift;
    double drop_path;
    torch::Tensor attn_mask;  // [nW, M², M²] of 0 and −100 when shifted; undefined otherwise (not a parameter)
};
TORCH_MODULE(SwinBlock);

// [B, H, W, C] -> [B·nW, M², C] and back; H and W multiples of M, windows in row-major order.
torch::Tensor window_partition(const torch::Tensor & x, int64_t window);
torch::Tensor window_reverse(const torch::Tensor & windows, int64_t window, int64_t height, int64_t width);

// One stage: patch merging (stages i ≥ 1), then its blocks, shifted on odd j. `first_block` is the
// stage's first block's index over the whole model (stochastic depth grows linearly over all blocks).
class SwinStageImpl : public torch::nn::Module {
  public:
    SwinStageImpl(const SwinConfig & config, int64_t stage, int64_t first_block);
    torch::Tensor forward(const torch::Tensor & x);  // [B, H, W, C_in] -> [B, H', W', C]
    PatchMerging downsample{nullptr};
    torch::nn::ModuleList blocks{nullptr};
};
TORCH_MODULE(SwinStage);

// The classifier after global average pooling, under timm's name (head.fc).
class SwinHeadImpl : public torch::nn::Module {
  public:
    SwinHeadImpl(int64_t dim, int64_t num_classes);
    QLinear fc{nullptr};
};
TORCH_MODULE(SwinHead);

class SwinImpl : public VisionModelImpl {
  public:
    explicit SwinImpl(const SwinConfig & config);
    ModelOutput forward_heads(const torch::Tensor & images) override;  // dist_logits undefined
    torch::Tensor forward(const torch::Tensor & images) override;      // [B, C, H, W] -> [B, classes]
    // Final-norm feature map [B, h, w, D_last].
    torch::Tensor forward_features(const torch::Tensor & images);
    const SwinConfig & config() const { return config_; }
    const std::string & name() const override { return config_.name; }
    std::string describe() const override;
    std::string architecture_json() const override;

    PatchEmbed patch_embed{nullptr};
    torch::nn::ModuleList layers{nullptr};  // SwinStage
    torch::nn::LayerNorm norm{nullptr};
    SwinHead head{nullptr};

  private:
    std::map<std::string, SiteTable *> site_tables() override;
    std::vector<std::shared_ptr<AttentionImpl>> attention_layers() override;
    std::string site_example() const override;
    SwinConfig config_;
};
TORCH_MODULE(Swin);

// Microsoft's original Swin layout (and timm before 0.9) to timm's current one: patch merging
// "layers.{i}.downsample.*" at the end of stage i moves to the start of stage i + 1, the classifier
// "head.*" becomes "head.fc.*", and the buffers timm rebuilds (relative_position_index, attn_mask)
// are dropped. A state dict already in timm's layout is returned unchanged; `converted` tells which.
torch::OrderedDict<std::string, torch::Tensor> swin_to_timm_layout(const torch::OrderedDict<std::string, torch::Tensor> & sd,
                                                                   bool * converted = nullptr);

}  // namespace bitvit
