// LSQ and LSQ+ (docs/methods.md §3): learned step size (and zero point) uniform quantization, the
// 8-bit stages of TerViT's progressive recipe and Q-ViT-style layers. Table row: lsq.
#pragma once

#include "train/quant/common.h"

namespace bitvit::quant {

// x̂ = (round(clamp(x/s + z, qn, qp)) − z)·s, with s and z receiving LSQ gradients scaled by
// 1/sqrt(numel(x)·qp), z rounded in the forward pass. `step` and `zero_point` broadcast against x
// (per tensor, per channel or per head); an undefined zero_point is plain LSQ.
torch::Tensor lsq(const torch::Tensor & x, const torch::Tensor & step, const torch::Tensor & zero_point, int64_t qn,
                  int64_t qp);

SiteTransform make_lsq(const spec::QuantizerRow & row, const Options & options, const SiteInfo & site);

}  // namespace bitvit::quant
