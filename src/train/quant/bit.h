// BiT (docs/methods.md §2): mean-centred per-tensor weight binarization with an identity STE (BWN,
// also GSB's weights) and elastic binarization of activations with a learnable scale α and shift.
// Table rows: bwn, elastic_signed (GSB's α-gradient with gsb_gradient = 1), elastic_unsigned.
#pragma once

#include "train/quant/common.h"

namespace bitvit::quant {

// W -> mean|W|·sign(W − mean W) over the whole tensor; dL/dW = g.
torch::Tensor bwn_weight(const torch::Tensor & w);

// y = α·sign(x), dL/dx = g·1{|x/α| ≤ 1} and
//   BiT: dL/dα = Σ sign(x)·g / sqrt(numel(x));
//   GSB: dL/dα = Σ (sign(x) − (x/α)·1{|x/α| ≤ 1})·g / sqrt(numel(x)).
// alpha is a one-element tensor (clamped to ≥ 1e-5, as the references).
enum class ElasticGradient { bit, gsb };
torch::Tensor elastic_sign(const torch::Tensor & x, const torch::Tensor & alpha, ElasticGradient gradient);

// y = α·round(clamp(x/α, 0, 1)) ∈ {0, α}, LSQ gradients with qn = 0, qp = 1.
torch::Tensor elastic_unsigned(const torch::Tensor & x, const torch::Tensor & alpha);

SiteTransform make_bit(const spec::QuantizerRow & row, const Options & options, const SiteInfo & site);

}  // namespace bitvit::quant
