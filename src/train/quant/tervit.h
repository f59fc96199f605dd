// TWN and TerViT's channel-wise ternary weights (docs/methods.md §4). TerViT's progressive training
// (8-bit first, then ternary) is a recipe (recipes/tervit.toml) of lsq and twn stages. Table row: twn.
#pragma once

#include "train/quant/common.h"

namespace bitvit::quant {

// W [out, in] -> α·ternary(W): Δ = 0.7·mean|W| and α = mean of |W| over |W| > Δ, per tensor or per
// output row (TerViT's channel-wise form). Identity STE; Δ and α are recomputed from W, not learned.
torch::Tensor ternary_twn(const torch::Tensor & w, bool per_row);

SiteTransform make_tervit(const spec::QuantizerRow & row, const Options & options, const SiteInfo & site);

}  // namespace bitvit::quant
