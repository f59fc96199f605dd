// What a model is, independent of how it runs: the DeiT and Swin architectures and the block variants that
// quantization methods need, shared by training (src/train, LibTorch) and the runtime (src/runtime,
// no LibTorch) so the two cannot drift apart. The JSON form is the packed file's "architecture"
// metadata (docs/format.md); reading it validates every field, because the file may be hostile.
#pragma once

#include <algorithm>
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace bitvit::spec {

// Structural variants of the transformer block. All defaults: timm's DeiT block.
struct BlockVariant {
    bool qk_norm = false;          // LayerNorm(head_dim) on q and k before their sites (Bi-ViT, Q-ViT's IRM)
    bool softmax = true;           // false: the probs site gets the scaled scores themselves (BiBERT)
    bool qkv_shift = false;        // learnable [H, 1, d] shifts added to q, k, v before their sites (GSB)
    bool attn_bias = false;        // learnable [H, N, N] added to the attention probabilities (GSB)
    double mlp_clip = 0.0;         // clamp the MLP hidden activation to ±mlp_clip; 0 = off (Bi-ViT, GSB: 10)
    std::string mlp_act = "gelu";  // gelu | relu (BiT: ReLU keeps fc2's input non-negative) | rprelu (ReActNet)
    // false: qkv, proj, fc1 and fc2 add no bias (Bi-ViT: its BiLinearBiReal creates one and never adds it).
    bool linear_bias = true;

    bool operator==(const BlockVariant & o) const;
    bool operator!=(const BlockVariant & o) const { return !(*this == o); }
    // Throws std::invalid_argument naming the field: an unknown mlp_act, a negative or non-finite mlp_clip.
    void validate() const;
};

// The MLP activations a block may use.
const std::vector<std::string> & mlp_activations();

struct DeitConfig {
    std::string name;          // registry name, e.g. "deit_tiny_patch16_224"
    int64_t img_size = 224;    // square input
    int64_t patch_size = 16;
    int64_t in_chans = 3;
    int64_t num_classes = 1000;
    int64_t embed_dim = 192;
    int64_t depth = 12;
    int64_t num_heads = 3;
    double mlp_ratio = 4.0;
    bool qkv_bias = true;
    double drop_path = 0.0;    // training only: stochastic depth rate of the last block, linear from 0
    bool distilled = false;    // adds dist_token and head_dist (DeiT distillation)
    BlockVariant variant;      // structural options of every block (quantization methods)

    int64_t grid() const { return img_size / patch_size; }
    int64_t num_patches() const { return grid() * grid(); }
    int64_t num_tokens() const { return num_patches() + (distilled ? 2 : 1); }
    int64_t head_dim() const { return embed_dim / num_heads; }
    int64_t hidden() const { return static_cast<int64_t>(static_cast<double>(embed_dim) * mlp_ratio); }
    // Throws std::invalid_argument naming the model and the offending field.
    void validate() const;
    // Learnable parameters of the full-precision model (what timm counts), in closed form, so a
    // model can be sized before anything is allocated.
    int64_t parameter_count() const;
};

// The registered architectures: deit_{tiny,small,base}_patch16_224 (timm's sizes, plus "_distilled"
// variants) and the small 28×28 configurations used for the experiments here. Throws
// std::invalid_argument listing the known names for an unknown one.
DeitConfig deit_config(const std::string & name);
std::vector<std::string> deit_config_names();

// When `config.name` is a registered architecture, its sizes (everything but num_classes, in_chans
// and the block variant, which data and method decide) must be the registry's: throws
// std::invalid_argument naming the field otherwise. Unregistered names are not checked.
void check_registered_sizes(const DeitConfig & config);

// Swin Transformer (Liu et al. 2021) with timm's structure: a patch embedding with LayerNorm, then
// stages of window-attention blocks, stage i ≥ 1 starting with a 2×2 patch merging that halves the
// resolution and doubles the width, then a LayerNorm, global average pooling and the classifier.
// Block j of a stage attends within M×M windows, shifted by M/2 when j is odd (docs/methods.md §9).
struct SwinConfig {
    std::string name;                          // registry name, e.g. "swin_tiny_patch4_window7_224"
    int64_t img_size = 224;                    // square input
    int64_t patch_size = 4;
    int64_t in_chans = 3;
    int64_t num_classes = 1000;
    int64_t embed_dim = 96;                    // width of stage 0; stage i has embed_dim · 2^i
    std::vector<int64_t> depths = {2, 2, 6, 2};       // blocks per stage
    std::vector<int64_t> num_heads = {3, 6, 12, 24};  // heads per stage
    int64_t window_size = 7;                   // M before clipping to a stage's resolution
    double mlp_ratio = 4.0;
    bool qkv_bias = true;
    double drop_path = 0.0;                    // training only: stochastic depth of the last block, linear from 0
    BlockVariant variant;                      // structural options of every block (quantization methods)

    int64_t num_stages() const { return static_cast<int64_t>(depths.size()); }
    int64_t stage_dim(int64_t stage) const { return embed_dim << stage; }
    // Tokens per side in a stage: img_size / patch_size halved at every merge.
    int64_t stage_resolution(int64_t stage) const { return (img_size / patch_size) >> stage; }
    // As timm: the window is clipped to the resolution, and a resolution that fits in one window has
    // no shift (the shift would only move tokens within the single window).
    int64_t stage_window(int64_t stage) const { return std::min(window_size, stage_resolution(stage)); }
    int64_t block_shift(int64_t stage, int64_t block) const {
        return block % 2 == 1 && stage_resolution(stage) > window_size ? window_size / 2 : 0;
    }
    int64_t stage_hidden(int64_t stage) const {
        return static_cast<int64_t>(static_cast<double>(stage_dim(stage)) * mlp_ratio);
    }
    int64_t total_depth() const;
    // Throws std::invalid_argument naming the model and the offending field.
    void validate() const;
    // Learnable parameters of the full-precision model (what timm counts), in closed form.
    int64_t parameter_count() const;
};

// swin_{tiny,small,base}_patch4_window7_224 (timm's sizes) and small configurations for 28×28
// single-channel images. Throws std::invalid_argument listing the known names for an unknown one.
SwinConfig swin_config(const std::string & name);
std::vector<std::string> swin_config_names();
// True for a registered Swin name (what a recipe's model.name selects the Swin family with).
bool is_swin_name(const std::string & name);

// The packed file's "architecture" object.
nlohmann::json architecture_json(const DeitConfig & config);
// A Swin's, with "family": "swin" (a DeiT's has no "family").
nlohmann::json architecture_json(const SwinConfig & config);
// Reads and validates it (ranges, divisibility, known activations); throws std::invalid_argument
// naming the field. A file of format version ≤ 2 has no linear_bias (it was always true).
DeitConfig architecture_from_json(const nlohmann::json & object);
// True when the object declares a family (only "swin" is valid; swin_architecture_from_json checks).
bool is_swin_architecture(const nlohmann::json & object);
// A Swin's architecture object, read and validated as architecture_from_json does a DeiT's.
SwinConfig swin_architecture_from_json(const nlohmann::json & object);
// As check_registered_sizes for a DeiT: a registered Swin name must carry the registry's sizes.
void check_registered_sizes(const SwinConfig & config);

}  // namespace bitvit::spec
