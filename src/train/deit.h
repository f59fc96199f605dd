// DeiT / ViT with timm's structure and parameter names, built from layers whose quantization sites
// are named, so a quantizer can be installed at any site without touching the model code.
//
// Parameter names (match timm's deit_* checkpoints):
//   patch_embed.proj.{weight,bias}, cls_token, [dist_token], pos_embed,
//   blocks.{i}.norm1, blocks.{i}.attn.qkv, blocks.{i}.attn.proj, blocks.{i}.norm2,
//   blocks.{i}.mlp.fc1, blocks.{i}.mlp.fc2, norm, head, [head_dist]
//
// Sites (per block i, prefixed "blocks.{i}."):
//   attn.qkv.weight attn.qkv.input attn.q attn.k attn.v attn.probs attn.proj.weight attn.proj.input
//   mlp.fc1.weight mlp.fc1.input mlp.fc2.weight mlp.fc2.input
// and patch_embed.proj.weight, patch_embed.proj.input (each C·p·p patch, as a token), head.weight,
// head.input (head_dist.* when distilled).
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "layers.h"

namespace bitvit {

// Pre-norm transformer block with per-sample stochastic depth (drop-path) on both residual branches.
class BlockImpl : public torch::nn::Module {
  public:
    BlockImpl(int64_t dim, int64_t num_heads, double mlp_ratio, bool qkv_bias, double drop_path,
              const BlockVariant & variant, int64_t num_tokens);
    torch::Tensor forward(const torch::Tensor & x);
    torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
    Attention attn{nullptr};
    Mlp mlp{nullptr};
    double drop_path;
};
TORCH_MODULE(Block);

using spec::DeitConfig;
using spec::deit_config;
using spec::deit_config_names;


class DeitImpl : public VisionModelImpl {
  public:
    explicit DeitImpl(const DeitConfig & config);

    // Both heads' logits. At eval time use forward(), which averages them as DeiT does.
    ModelOutput forward_heads(const torch::Tensor & images) override;  // images [B, C, H, W]
    // Eval logits: the class head, or (cls + dist) / 2 for a distilled model.
    torch::Tensor forward(const torch::Tensor & images) override;
    // Final-norm token features [B, N, D].
    torch::Tensor forward_features(const torch::Tensor & images);

    const DeitConfig & config() const { return config_; }
    const std::string & name() const override { return config_.name; }
    std::string describe() const override;
    std::string architecture_json() const override;

    PatchEmbed patch_embed{nullptr};
    torch::Tensor cls_token, dist_token, pos_embed;
    torch::nn::ModuleList blocks{nullptr};
    torch::nn::LayerNorm norm{nullptr};
    QLinear head{nullptr}, head_dist{nullptr};

  private:
    std::map<std::string, SiteTable *> site_tables() override;
    std::vector<std::shared_ptr<AttentionImpl>> attention_layers() override;
    std::string site_example() const override;
    DeitConfig config_;
};
TORCH_MODULE(Deit);

// True for tensors that quantizers or block variants add (quantizer state, norm_q/norm_k, q/k/v
// shifts, attention bias): a model may lack them and still be the same architecture, so weight
// transfer between stages initialises them instead of failing.
bool is_method_tensor(const std::string & name);

// Parameter count and FP32 size of a model.
int64_t count_parameters(torch::nn::Module & module);

}  // namespace bitvit
