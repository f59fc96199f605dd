// BiViT (docs/methods.md §5): softmax-aware binarization of the attention map (SAB) and
// parameterized weight scales (PWS). Its cross-layer binarization (attention first, then the MLP)
// is a recipe of two stages (recipes/bivit.toml). Table rows: sab, pws.
#pragma once

#include "train/quant/common.h"

namespace bitvit::quant {

// A = 1{P ≥ β·max_row(P)} ∈ {0, 1} over the last dimension, the gradient passed unchanged to the
// post-softmax P (SAB's softmax-aware backward).
torch::Tensor softmax_aware_binarize(const torch::Tensor & probs, double beta);

SiteTransform make_bivit(const spec::QuantizerRow & row, const Options & options, const SiteInfo & site);

}  // namespace bitvit::quant
