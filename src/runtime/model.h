// A packed DeiT or Swin (docs/format.md) loaded for inference: no LibTorch, bit-wise products where the file
// holds bits. Loading validates everything against the architecture in the file's metadata — the
// file may be hostile — and repacks weights for this CPU's kernels.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "format/safetensors.h"
#include "runtime/quant/act-quantizer.h"
#include "runtime/operand.h"
#include "spec/architecture.h"

namespace bitvit::runtime {

// The newest packed format version this runtime reads (metadata "format_version"; it reads every
// version from 1 up): 1 stores every float tensor F32; 2 may also store the full-precision tensors
// and weight scales F16; 3 adds blocks without linear biases (architecture.linear_bias, docs/format.md);
// 4 adds Swin models (architecture.family = "swin").
constexpr int kPackedFormatVersion = 4;

using ModelConfig = spec::DeitConfig;  // the architecture, shared with training (src/spec)

struct LayerNorm {
    std::vector<float> weight, bias;  // [dim]
    float eps = 1e-6f;
    void forward(const float * x, int64_t rows, int64_t dim, float * out) const;  // rows × dim, in place allowed
};

// y = input_quantizer(x) · weightᵀ + bias: x [tokens, in] -> y [tokens, out], tokens split over
// `threads` threads.
struct Linear {
    Operand weight;            // rows = out, k = in
    std::vector<float> bias;   // [out] or empty
    ActQuantizer input;        // the "<layer>.input" site
    void forward(const float * x, int64_t tokens, float * y, int threads = 1) const;
    // forward(), its outputs handed straight to a sign quantizer: bits [tokens, b1_words(out)] set where
    // y < 0, or where GELU(y) < 0 with through_gelu (kernels/bgemm.h SignOut). A W1A1 product makes
    // them as its results leave the registers; any other product through its float outputs.
    void forward_signs(const float * x, int64_t tokens, uint64_t * bits, bool through_gelu, int threads = 1) const;
    // forward() of an input whose sign quantizer's bits are already packed ([tokens, b1_words(in)]).
    void forward_from_signs(const uint64_t * bits, int64_t tokens, float * y, int threads = 1) const;
};

struct Block {
    LayerNorm norm1, norm2, norm_q, norm_k;  // norm_q/norm_k: qk_norm only (eps 1e-5, over head_dim)
    Linear qkv, proj, fc1, fc2;
    std::vector<float> shift_q, shift_k, shift_v;  // [H, 1, d]: qkv_shift only
    std::vector<float> attn_bias;                  // [H, N, N]: attn_bias only (N: a window's tokens on Swin)
    std::vector<float> window_bias;                // [H, M², M²]: Swin's relative position bias, expanded at load
    int64_t shift = 0;                             // Swin: the cyclic shift of its windows (0: none)
    std::vector<float> act_shift, act_slope, act_bias;  // [hidden] RPReLU γ, β, ζ: mlp_act = "rprelu" only
    ActQuantizer q, k, v, probs;                   // per-head sites
};

// One Swin stage: patch merging (stages ≥ 1) and its blocks, on a resolution² map of `dim` channels.
struct SwinStage {
    LayerNorm merge_norm;              // over 4·dim_in (stages ≥ 1)
    Linear reduction;                  // 4·dim_in -> dim, no bias (stages ≥ 1)
    std::vector<Block> blocks;
    std::vector<float> shift_mask;     // [nW, M², M²]: 0 or −100, for the shifted blocks (empty when none is)
    int64_t dim = 0, heads = 0, resolution = 0, window = 0;
};

// Attention's shape: `windows` groups of `tokens` tokens each, every group attending only within
// itself (DeiT: one group of all tokens; Swin: its windows, in row-major order).
struct AttentionShape {
    int64_t dim, heads, tokens, windows;
    const float * mask = nullptr;  // [windows, tokens, tokens] added to the scores (Swin's shifted windows), or null
};

// Self-attention of one block on x [windows·tokens, dim] (normed) -> out, same shape (attention.cpp).
void attend(const Block & b, const AttentionShape & shape, const spec::BlockVariant & variant, const float * x, float * out,
            int threads);

// Turns attention's fast paths (attention.cpp) off and on again, process-wide, so tests can check
// each against the generic path. On by default; never needed outside tests.
void set_attention_fast_paths(bool on);

class PackedModel {
  public:
    static PackedModel load(const std::string & path);
    // Builds the model from a parsed container; errors name file.origin().
    static PackedModel from_file(const format::SafetensorsFile & file);

    bool is_swin() const { return swin_; }
    // The architecture of a DeiT (is_swin() false) or of a Swin (true).
    const ModelConfig & deit_config() const { return config_; }
    const spec::SwinConfig & swin_config() const { return swin_config_; }
    // What either family has.
    const std::string & name() const { return swin_ ? swin_config_.name : config_.name; }
    int64_t in_chans() const { return swin_ ? swin_config_.in_chans : config_.in_chans; }
    int64_t img_size() const { return swin_ ? swin_config_.img_size : config_.img_size; }
    int64_t num_classes() const { return swin_ ? swin_config_.num_classes : config_.num_classes; }
    // One line of sizes, for `bitvit-rt info`.
    std::string describe() const;
    const std::string & method() const { return method_; }
    // Site name -> quantizer name, for every quantized site.
    const std::map<std::string, std::string> & site_quantizers() const { return site_quantizers_; }
    // The packed file's size on disk (header included): the one size every command reports.
    int64_t file_bytes() const { return file_bytes_; }
    // The classes' names from the file's metadata (index = class), or empty when it records none.
    const std::vector<std::string> & class_names() const { return class_names_; }
    // Class c's name, or its number when the file records no names.
    std::string class_name(int64_t c) const;

    // Pixels [C, H, W] (uint8) -> normalised floats, as the training loader does.
    void normalize(const uint8_t * pixels, float * image) const;
    // image [C, H, W] normalised -> logits [num_classes] ((cls + dist) / 2 when distilled), with
    // tokens and heads split over `threads` threads. With `block_outputs`, also each block's output
    // tokens [depth][N·D] (Swin: [blocks][h·w·C], row-major over the map), for locating where a packed
    // model departs from its checkpoint.
    std::vector<float> forward(const float * image, int threads = 1,
                               std::vector<std::vector<float>> * block_outputs = nullptr) const;
    // Logits of `count` images given as pixels [count, C, H, W] over `threads` threads (0 = all
    // cores): one image per thread when there are at least as many images as threads, otherwise
    // each image's work split over all of them: [count][num_classes].
    std::vector<std::vector<float>> predict(const uint8_t * pixels, int64_t count, int threads = 0) const;

  private:
    friend struct PackedModelLoader;  // load.cpp
    bool swin_ = false;
    ModelConfig config_;
    spec::SwinConfig swin_config_;
    std::string method_;
    std::map<std::string, std::string> site_quantizers_;
    int64_t file_bytes_ = 0;
    std::vector<std::string> class_names_;
    std::vector<float> mean_, std_;
    Linear patch_embed_;  // im2col patches [P, C·p·p] -> [P, D]
    std::vector<float> cls_token_, dist_token_, pos_embed_;
    std::vector<Block> blocks_;
    LayerNorm norm_;
    Linear head_, head_dist_;  // Swin: head.fc, no head_dist
    LayerNorm patch_norm_;     // Swin's patch_embed.norm
    std::vector<SwinStage> stages_;

    // image [C, H, W] -> patches [G², C·P·P] in the conv weight's (channel, row, column) order.
    void im2col(const float * image, int64_t patch, std::vector<float> & patches) const;
    void embed(const float * image, float * x, int threads) const;  // image [C, H, W] -> tokens x [N, D]
    // x [tokens, dim] normed -> [tokens, dim] (hidden: fc1's width).
    void mlp(const Block & b, int64_t tokens, int64_t hidden, const float * x, float * out, int threads) const;
    std::vector<float> forward_deit(const float * image, int threads, std::vector<std::vector<float>> * block_outputs) const;
    std::vector<float> forward_swin(const float * image, int threads, std::vector<std::vector<float>> * block_outputs) const;  // swin.cpp
    // A Swin block on x [R², C] in place (swin.cpp).
    void swin_block(const SwinStage & stage, const Block & b, std::vector<float> & x, int threads) const;
    void swin_merge(const SwinStage & stage, std::vector<float> & x, int64_t & R, int64_t & C, int threads) const;
    const spec::BlockVariant & variant() const { return swin_ ? swin_config_.variant : config_.variant; }
};

}  // namespace bitvit::runtime
