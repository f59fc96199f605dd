// Operation and size accounting of a (quantized) DeiT or Swin, per layer, under the convention of BiViT and
// its predecessors (XNOR-Net, Bi-Real, ReActNet) — docs/methods.md §8:
//   OPs = FLOPs + BOPs / 64,
//   a full-precision multiply-accumulate is one FLOP (the papers count MACs as "FLOPs");
//   a product of a ≤ 2-bit operand with a full-precision one is half a FLOP per MAC (add/subtract only:
//     BiViT's W1A32 MLP, which reproduces its Table 3);
//   a product of two quantized operands costs MACs·b₁·g₁·b₂·g₂ BOPs (bits b, superposed groups g: GSB's
//     three groups multiply the attention BOPs); a multi-bit operand times a full-precision one is a FLOP.
// LayerNorm, softmax, GELU, residuals and scales are not counted (as in the papers).
#pragma once

#include <string>
#include <vector>

#include "deit.h"
#include "swin.h"

namespace bitvit {

struct LayerCost {
    std::string name;       // "blocks.3.attn.qkv", "blocks.3.attn.q@k", "layers.1.downsample", "patch_embed", "head"
    std::string precision;  // operand precisions, e.g. "W1A1", "W1A32", "FP", "W2A8", "A1x3·A1x3"
    double macs = 0, flops = 0, bops = 0;
    double ops() const { return flops + bops / 64; }
};

struct OpsReport {
    std::vector<LayerCost> layers;
    double macs = 0, flops = 0, bops = 0;
    double ops() const { return flops + bops / 64; }
    // Bytes of the deployed model: quantized weights at their bit width plus one FP32 scale per output
    // row; every other parameter (biases, norms, tokens, FP layers, activation-quantizer parameters)
    // FP32. fp32_bytes: all parameters of the same architecture at FP32.
    // fp32_part_bytes: the part of packed_bytes kept at FP32 (everything but the quantized weights).
    double packed_bytes = 0, fp32_bytes = 0, fp32_part_bytes = 0;
};

// Costs of one forward pass of one image, with the quantizers installed in `model`.
OpsReport count_ops(VisionModel model);

}  // namespace bitvit
