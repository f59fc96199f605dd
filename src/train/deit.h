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
#include <memory>
#include <string>
#include <vector>

#include "spec/architecture.h"

namespace bitvit {

// The architecture is torch-free, shared with the runtime (src/spec/architecture.h).
using spec::BlockVariant;

// A transform applied to the tensor at one site (weights, activations, attention probabilities).
// Quantizers derive from this; with nothing installed a site is the identity.
class SiteTransformImpl : public torch::nn::Module {
  public:
    virtual torch::Tensor forward(const torch::Tensor & x) = 0;
    // When this transform's output is scale · codes with small integer codes ({−1, 0, +1}, {0, 1},
    // or ActBi's ±1 − z) — one scale per output row for a weight, one for the whole tensor for an
    // activation, one per head (or one) for a per-head site — the scale, detached ([out], [H] or a
    // one-element tensor); undefined otherwise. QLinear and the attention products then multiply the
    // codes first (an exact integer product even in float) and apply the scales afterwards, as the
    // runtime does, so the two agree bit for bit where a later sign() meets a result of exactly 0
    // (with 50 tokens, a ±1 attention map times ±1 values sums to 0 often).
    virtual torch::Tensor code_scale(const torch::Tensor & quantized) const { return {}; }
};
using SiteTransform = std::shared_ptr<SiteTransformImpl>;

// What a quantizer needs to know about a site to size its parameters.
enum class SiteKind {
    weight,            // a [out, in] (or conv [out, in, kh, kw]) weight; channels = out
    token_activation,  // a [..., C] activation entering a linear; channels = C
    head_activation,   // a [B, H, N, d] per-head tensor (q, k, v); channels = H
    attention_map,     // the [B, H, N, N] attention probabilities (or scores); channels = H
};
struct SiteInfo {
    SiteKind kind;
    int64_t channels;
};

// Holds the transforms installed at the named sites of one module and registers each one as a
// submodule "<site>_quantizer" (dots replaced by '_'), so its parameters and first-batch state are
// trained, saved and loaded with the model.
class SiteTable {
  public:
    SiteTable(torch::nn::Module & owner, std::vector<std::pair<std::string, SiteInfo>> sites);
    // Applies the transform at `site`, or returns x unchanged when none is installed.
    torch::Tensor apply(const std::string & site, const torch::Tensor & x) const;
    void install(const std::string & site, SiteTransform transform);
    const std::vector<std::string> & names() const { return names_; }
    bool has(const std::string & site) const;
    const SiteInfo & info(const std::string & site) const { return info_.at(site); }
    // The transform installed at `site`, or nullptr.
    SiteTransform installed(const std::string & site) const;

  private:
    torch::nn::Module & owner_;
    std::vector<std::string> names_;
    std::map<std::string, SiteInfo> info_;
    std::map<std::string, SiteTransform> installed_;
};

// nn.Linear with two sites: "weight" (the [out, in] weight) and "input" (the [..., in] activation).
class QLinearImpl : public torch::nn::Module {
  public:
    QLinearImpl(int64_t in_features, int64_t out_features, bool bias = true);
    torch::Tensor forward(const torch::Tensor & x);  // [..., in] -> [..., out]
    SiteTable sites;
    torch::Tensor weight;  // [out, in]
    torch::Tensor bias;    // [out], undefined when bias = false
};
TORCH_MODULE(QLinear);

// Intermediate tensors of one block, kept for feature distillation when capture is on.
struct BlockTaps {
    torch::Tensor q, k, v;  // [B, H, N, d] before their sites (the full-precision values)
    torch::Tensor scores;   // [B, H, N, N] q·kᵀ·scale after the q/k sites (what the softmax sees)
    torch::Tensor probs;    // [B, H, N, N] attention map before the probs site
    torch::Tensor hidden;   // [B, N, D] block output
};

// a [B, H, N, K] · b [B, H, K, M], the outputs of per-head site transforms ta and tb (nullptr: none):
// on their codes when both have them (SiteTransformImpl::code_scale), else a plain matmul. Values
// and gradients are those of torch::matmul(a, b) but for float rounding; exact zeros stay exact.
torch::Tensor site_matmul(const torch::Tensor & a, const SiteTransform & ta, const torch::Tensor & b, const SiteTransform & tb);

// Multi-head self-attention with sites q, k, v ([B, H, N, d] after the split) and probs (the
// post-softmax [B, H, N, N] map), besides the qkv and proj linears' own sites. The variant adds
// LayerNorm on q/k (norm_q, norm_k), shifts on q/k/v (shift_q, shift_k, shift_v: [H, 1, d]),
// an additive attention bias (attn_bias: [H, N, N]) or skips the softmax.
class AttentionImpl : public torch::nn::Module {
  public:
    AttentionImpl(int64_t dim, int64_t num_heads, bool qkv_bias, const BlockVariant & variant, int64_t num_tokens);
    torch::Tensor forward(const torch::Tensor & x);  // [B, N, C] -> [B, N, C]
    int64_t num_heads;
    double scale;  // d^-0.5
    BlockVariant variant;
    QLinear qkv{nullptr}, proj{nullptr};
    torch::nn::LayerNorm norm_q{nullptr}, norm_k{nullptr};
    torch::Tensor shift_q, shift_k, shift_v, attn_bias;
    SiteTable sites;
    bool capture = false;
    BlockTaps taps;  // filled by forward() when capture is on
};
TORCH_MODULE(Attention);

// ReActNet's RPReLU, per channel c of the last dimension: y = PReLU_β(x + γ) + ζ, i.e.
// (x + γ_c) if x + γ_c ≥ 0 else β_c·(x + γ_c), then + ζ_c (docs/methods.md §1).
torch::Tensor rprelu(const torch::Tensor & x, const torch::Tensor & shift, const torch::Tensor & slope,
                     const torch::Tensor & bias);

// fc1 -> GELU (or ReLU, or RPReLU) -> [clip] -> fc2, hidden width = mlp_ratio * dim.
class MlpImpl : public torch::nn::Module {
  public:
    MlpImpl(int64_t dim, int64_t hidden, const BlockVariant & variant);
    torch::Tensor forward(const torch::Tensor & x);
    QLinear fc1{nullptr}, fc2{nullptr};
    torch::Tensor act_shift, act_slope, act_bias;  // [hidden] γ, β, ζ of RPReLU (mlp_act = "rprelu" only)
    BlockVariant variant;
};
TORCH_MODULE(Mlp);

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

struct DeitOutput {
    torch::Tensor logits;       // [B, classes] from the class token
    torch::Tensor dist_logits;  // [B, classes] from the distillation token (undefined if not distilled)
};

// Conv patchify: [B, C, H, W] -> [B, N, D], with sites "proj.weight" ([D, C, p, p]) and "proj.input"
// (the patches [B, N, C·p·p]; with a quantizer there, the patchify runs as im2col and a linear).
class PatchEmbedImpl : public torch::nn::Module {
  public:
    PatchEmbedImpl(int64_t in_chans, int64_t embed_dim, int64_t patch_size);
    torch::Tensor forward(const torch::Tensor & images);
    torch::nn::Conv2d proj{nullptr};
    SiteTable sites;
};
TORCH_MODULE(PatchEmbed);

class DeitImpl : public torch::nn::Module {
  public:
    explicit DeitImpl(const DeitConfig & config);

    // Both heads' logits. At eval time use forward(), which averages them as DeiT does.
    DeitOutput forward_heads(const torch::Tensor & images);  // images [B, C, H, W]
    // Eval logits: the class head, or (cls + dist) / 2 for a distilled model.
    torch::Tensor forward(const torch::Tensor & images);
    // Final-norm token features [B, N, D].
    torch::Tensor forward_features(const torch::Tensor & images);

    // With capture on, every forward keeps each block's BlockTaps (for feature distillation).
    void set_capture(bool on);
    std::vector<BlockTaps> taps();

    // Every site of the model by full name ("blocks.3.attn.q", ...).
    std::vector<std::string> site_names();
    // Installs a transform at a full site name; throws std::invalid_argument for an unknown site.
    void install(const std::string & site, SiteTransform transform);
    // The kind and channel count of a full site name; throws std::invalid_argument for an unknown site.
    SiteInfo site_info(const std::string & site);
    // The transform installed at a full site name (nullptr: full precision).
    SiteTransform site_transform(const std::string & site);

    const DeitConfig & config() const { return config_; }

    PatchEmbed patch_embed{nullptr};
    torch::Tensor cls_token, dist_token, pos_embed;
    torch::nn::ModuleList blocks{nullptr};
    torch::nn::LayerNorm norm{nullptr};
    QLinear head{nullptr}, head_dist{nullptr};

  private:
    std::map<std::string, SiteTable *> site_tables();
    // The table holding `site` and the site's name inside it; throws for an unknown site.
    std::pair<SiteTable *, std::string> find_site(const std::string & site);
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
