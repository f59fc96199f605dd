// GSB, group superposition binarization (docs/methods.md §7): the value tensor and the attention map
// as sums of three binary groups on bands of their range, with GSB's corrected gradients. Its
// weights are BiT's bwn, its linear inputs elastic_signed with gsb_gradient = 1 (bit.h), its q/k/v
// shifts and learnable attention bias block variants. Table rows: gsb_value, gsb_attention.
#pragma once

#include "train/quant/common.h"

namespace bitvit::quant {

// Value [B, H, N, d] or any shape: three signed groups on the bands M1 = beyond 0.7·max/min and
// M2 = beyond 0.9·max/min (max and min over the whole tensor):
//   v̂ = α1·sign(v) + α2·sign(v⊙M1) + α3·sign(v⊙M2)   (sign(0) = 0 inside the masked groups)
// with GSB's gradients (up to 3g into v, as its code). alphas: [3], clamped to ≥ 1e-5. per_sample:
// max and min over each sample (dimension 0) instead of the batch — the evaluation form, so a
// prediction never depends on the other images in its batch (the reference has only the batch form).
torch::Tensor gsb_value(const torch::Tensor & v, const torch::Tensor & alphas, bool per_sample = false);
// Attention probabilities: Â = α1·round(clamp(P/α1, 0, 1)) + α2·M1 + α3·M2 with M1 = 1{P > 0.7·max P},
// M2 = 1{P > 0.9·max P}, and GSB's gradients. alphas: [3]. per_sample: as gsb_value.
torch::Tensor gsb_attention(const torch::Tensor & probs, const torch::Tensor & alphas, bool per_sample = false);

SiteTransform make_gsb(const spec::QuantizerRow & row, const Options & options, const SiteInfo & site);

}  // namespace bitvit::quant
