// The layers both architectures are built from (src/train/deit.h, src/train/swin.h): linears,
// attention and MLPs whose quantization sites are named, so a quantizer can be installed at any site
// without touching the model code, and the patch embedding.
//
// Sites of the layers (prefixed by the layer's path in the model):
//   QLinear: weight, input; Attention: q, k, v, probs (and its qkv/proj linears' own);
//   PatchEmbed: proj.weight, proj.input (each C·p·p patch, as a token).
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
//
// Window attention (Swin, window > 0: N = window² tokens per window) adds timm's learned relative
// position bias (relative_position_bias_table [(2M − 1)², H], indexed by the offset between two
// tokens of a window) to the scores, and the shifted windows' mask; both come before the softmax,
// so every site sees the map the full-precision model would.
class AttentionImpl : public torch::nn::Module {
  public:
    AttentionImpl(int64_t dim, int64_t num_heads, bool qkv_bias, const BlockVariant & variant, int64_t num_tokens,
                  int64_t window = 0);
    // x [B, N, C] -> [B, N, C]. mask [nW, N, N] (0 or −100, window attention only): the batch is
    // B/nW images of nW windows each, window w of every image gets mask[w].
    torch::Tensor forward(const torch::Tensor & x, const torch::Tensor & mask = {});
    int64_t num_heads;
    torch::Tensor relative_position_bias_table;  // [(2M − 1)², H], window attention only
    torch::Tensor relative_position_index;       // [M², M²] int64, rebuilt from M (not a parameter)
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

// Conv patchify: [B, C, H, W] -> [B, N, D], with sites "proj.weight" ([D, C, p, p]) and "proj.input"
// (the patches [B, N, C·p·p]; with a quantizer there, the patchify runs as im2col and a linear).
// With `norm` (Swin), a LayerNorm over the embedding follows (patch_embed.norm, eps 1e-5 as timm's).
class PatchEmbedImpl : public torch::nn::Module {
  public:
    PatchEmbedImpl(int64_t in_chans, int64_t embed_dim, int64_t patch_size, bool norm = false);
    torch::Tensor forward(const torch::Tensor & images);  // [B, C, H, W] -> [B, N, D], N = (H/p)·(W/p) row-major
    torch::nn::Conv2d proj{nullptr};
    torch::nn::LayerNorm norm{nullptr};
    SiteTable sites;

  private:
    torch::Tensor embed(const torch::Tensor & images);  // the projection alone
};
TORCH_MODULE(PatchEmbed);

// Both heads' logits of a model; only a distilled DeiT has the second.
struct ModelOutput {
    torch::Tensor logits;       // [B, classes] from the class token (DeiT) or the pooled features (Swin)
    torch::Tensor dist_logits;  // [B, classes] from the distillation token (undefined if not distilled)
};

// What the trainer, export and the accounting see of a model, DeiT or Swin: its logits, its sites
// by full name, and each attention layer's taps for feature distillation.
class VisionModelImpl : public torch::nn::Module {
  public:
    // Both heads' logits (training). images [B, C, H, W].
    virtual ModelOutput forward_heads(const torch::Tensor & images) = 0;
    // Eval logits [B, classes].
    virtual torch::Tensor forward(const torch::Tensor & images) = 0;

    // With capture on, every forward keeps each attention layer's BlockTaps, in block order.
    void set_capture(bool on);
    std::vector<BlockTaps> taps();

    // Every site of the model by full name ("blocks.3.attn.q", "layers.1.blocks.0.attn.probs", ...).
    std::vector<std::string> site_names();
    // Installs a transform at a full site name; throws std::invalid_argument for an unknown site.
    void install(const std::string & site, SiteTransform transform);
    // The kind and channel count of a full site name; throws std::invalid_argument for an unknown site.
    SiteInfo site_info(const std::string & site);
    // The transform installed at a full site name (nullptr: full precision).
    SiteTransform site_transform(const std::string & site);

    // The architecture's name ("deit_micro_patch4_28", "swin_tiny_patch4_window7_224", ...).
    virtual const std::string & name() const = 0;
    // What `bitvit info` prints about the architecture: input, sizes per stage, tokens.
    virtual std::string describe() const = 0;
    // The architecture as JSON text (spec::architecture_json).
    virtual std::string architecture_json() const = 0;

  protected:
    // The site tables by the path prefix of their module ("blocks.3.attn.qkv.").
    virtual std::map<std::string, SiteTable *> site_tables() = 0;
    // The tables of one transformer block under `prefix` ("blocks.3."): attn., attn.qkv., attn.proj.,
    // mlp.fc1., mlp.fc2.
    static void add_block_tables(std::map<std::string, SiteTable *> & tables, const std::string & prefix, AttentionImpl & attn,
                                 MlpImpl & mlp);
    virtual std::vector<std::shared_ptr<AttentionImpl>> attention_layers() = 0;
    // "model 'NAME' (sites look like ...)", for the error on an unknown site.
    virtual std::string site_example() const = 0;

  private:
    // The table holding `site` and the site's name inside it; throws for an unknown site.
    std::pair<SiteTable *, std::string> find_site(const std::string & site);
};
// The holder of either model (TORCH_MODULE would instantiate a constructor of the abstract class).
class VisionModel : public torch::nn::ModuleHolder<VisionModelImpl> {
  public:
    VisionModel(std::nullptr_t) : ModuleHolder(nullptr) {}
    VisionModel(std::shared_ptr<VisionModelImpl> model) : ModuleHolder(std::move(model)) {}
    // A Deit or Swin is a VisionModel (the same module, shared).
    template <class Impl, class = std::enable_if_t<std::is_base_of<VisionModelImpl, Impl>::value>>
    VisionModel(const torch::nn::ModuleHolder<Impl> & model) : ModuleHolder(std::static_pointer_cast<VisionModelImpl>(model.ptr())) {}
};

// Normal(0, std) truncated to ±2·std by resampling (timm's trunc_normal_ with std = .02).
void trunc_normal_(torch::Tensor & t, double std);

// Per-sample stochastic depth on x [B, ...]: zeroes a whole residual branch for a random subset of the
// batch and rescales the survivors by 1/keep, so the expectation is unchanged. Identity at eval time.
torch::Tensor drop_path(const torch::Tensor & x, double rate, bool training);

}  // namespace bitvit
