// The binary baselines (docs/methods.md §1): BNN's clipped-STE sign, Bi-Real's ApproxSign,
// BiBERT's Bool attention and row-centred weights, ReActNet's RSign, XNOR-Net's scaled weights.
// Table rows: sign, sign_approx, bool, rsign, xnor, row_centred.
#pragma once

#include "train/quant/common.h"

namespace bitvit::quant {

// y = sign(x); dL/dx = g·1{|x| < 1}  — BNN's clipped STE (BiViT's and BiBERT's BinaryQuantizer).
torch::Tensor sign_clipped(const torch::Tensor & x);
// y = sign(x); dL/dx = g·(2 − 2|x|)·1{|x| < 1}  — Bi-Real's ApproxSign.
torch::Tensor sign_approx(const torch::Tensor & x);
// y = sign(x); dL/dx = g  — identity STE.
torch::Tensor sign_identity(const torch::Tensor & x);
// y = 1{x > 0} ∈ {0, 1}; dL/dx = g·1{|x| ≤ 1}  — BiBERT's Bool on softmax-free attention scores.
torch::Tensor bool_clipped(const torch::Tensor & x);

// W [out, in…] -> mean_row|W|·sign(W), dL/dW = g·1{|W| ≤ 1}: the detach form
// (α·sign W).detach() − clamp(W, −1, 1).detach() + clamp(W, −1, 1) of XNOR-Net, ReActNet and
// Bi-ViT's BiLinearBiReal, whose scale stays out of the chain.
torch::Tensor xnor_weight(const torch::Tensor & w);
// W -> mean_row|W|·sign(W_c), W_c = W − mean_row W, the same detach form on W_c (BiBERT): the
// gradient u = g·1{|W_c| ≤ 1} passes the centring, dL/dW = u − mean_row u.
torch::Tensor row_centred_weight(const torch::Tensor & w);

SiteTransform make_binary(const spec::QuantizerRow & row, const Options & options, const SiteInfo & site);

}  // namespace bitvit::quant
