// Bi-ViT (docs/methods.md §6): ActBi, a 1-bit LSQ+ with a learnable scale α and zero point z per
// channel (per head on q, k, v and the attention map) — the "learnable scaling factor" that revives
// the binary attention's vanished gradients. Its block changes (LayerNorm on q and k, no linear
// biases, MLP clip) are block variants, its ranking-aware distillation a loss (train/distill.h), its
// weights the xnor row (binary.h). Table row: actbi.
#pragma once

#include "train/quant/common.h"

namespace bitvit::quant {

// out = (sign(clamp(x/α + round(z), −1, 1)) − round(z))·α, two levels α(−1 − z) and α(1 − z);
// dout/dx = 1{−1 ≤ x/α + z ≤ 1}; α and z receive their autograd terms scaled by 1/sqrt(numel(x)).
// alpha and zero_point broadcast against x.
torch::Tensor actbi(const torch::Tensor & x, const torch::Tensor & alpha, const torch::Tensor & zero_point);

SiteTransform make_bi_vit(const spec::QuantizerRow & row, const Options & options, const SiteInfo & site);

}  // namespace bitvit::quant
