// Structural variants of the transformer block that quantization methods need. All off/default is
// timm's DeiT block. Torch-free so recipes (config.h) and models (deit.h) share it.
#pragma once

#include <string>

namespace bitvit {

struct BlockVariant {
    bool qk_norm = false;          // LayerNorm(head_dim) on q and k before their sites (Bi-ViT, Q-ViT's IRM)
    bool softmax = true;           // false: the probs site gets the scaled scores themselves (BiBERT)
    bool qkv_shift = false;        // learnable [H, 1, d] shifts added to q, k, v before their sites (GSB)
    bool attn_bias = false;        // learnable [H, N, N] added to the attention probabilities (GSB)
    double mlp_clip = 0.0;         // clamp the MLP hidden activation to ±mlp_clip; 0 = off (Bi-ViT, GSB: 10)
    std::string mlp_act = "gelu";  // gelu | relu (BiT: ReLU keeps fc2's input non-negative) | rprelu (ReActNet)

    bool operator==(const BlockVariant & o) const {
        return qk_norm == o.qk_norm && softmax == o.softmax && qkv_shift == o.qkv_shift && attn_bias == o.attn_bias &&
               mlp_clip == o.mlp_clip && mlp_act == o.mlp_act;
    }
};

}  // namespace bitvit
