// The quantization functions of the four papers and their baselines, as LibTorch autograd functions:
// forward values and the gradients each method defines (straight-through estimators and learned-
// scale gradients). Formulas and sources: ../shared/methods.md; section numbers below refer to it.
// Tensor shapes are free unless stated; "per-row" means over the last dimension of a [out, in] weight.
#pragma once

#include <torch/torch.h>

namespace bitvit::quant {

// The project's one binarization convention, shared with the runtime's bit packing
// (runtime/kernels/bgemm.h): −1 where x < 0, +1 elsewhere — so sign(0) = +1 (torch::sign gives 0).
torch::Tensor sign_pm1(const torch::Tensor & x);

// The straight-through pattern: forward `value` exactly, backward the gradient of `surrogate`
// (value.detach() + (surrogate − surrogate.detach())). Every STE here is written this way, because the
// common form x + (q − x).detach() rounds: its forward value is q only up to an ulp, and a deployed
// model that computes q exactly would then disagree wherever a later sign() sees that ulp (an
// attention output of exactly 0, say).
torch::Tensor straight_through(const torch::Tensor & value, const torch::Tensor & surrogate);

// y = sign(x); dL/dx = g·1{|x| < 1}  — BNN clipped STE (§1.1).
torch::Tensor sign_clipped(const torch::Tensor & x);
// y = sign(x); dL/dx = g·(2 − 2|x|)·1{|x| < 1}  — Bi-Real ApproxSign (§1.2).
torch::Tensor sign_approx(const torch::Tensor & x);
// y = sign(x); dL/dx = g  — identity STE (BWN, BiT weights, §1.3).
torch::Tensor sign_identity(const torch::Tensor & x);

// y = 1{x > 0} ∈ {0, 1}; dL/dx = g·1{|x| ≤ 1}  — BiBERT's Bool on attention scores (§1.6).
torch::Tensor bool_clipped(const torch::Tensor & x);

// Forward value x, gradient multiplied by `scale` (LSQ's grad_scale, §1.4).
torch::Tensor grad_scale(const torch::Tensor & x, double scale);
// Forward round(x), gradient identity (LSQ's round_pass).
torch::Tensor round_pass(const torch::Tensor & x);

// LSQ / LSQ+ (§1.4): x̂ = (round(clamp(x/s + z, qn, qp)) − z)·s, with s and z receiving LSQ gradients
// scaled by 1/sqrt(numel(x)·qp), z rounded in the forward pass. `step` and `zero_point` broadcast
// against x (per-tensor, per-channel or per-head); pass an undefined zero_point for plain LSQ.
torch::Tensor lsq(const torch::Tensor & x, const torch::Tensor & step, const torch::Tensor & zero_point, int64_t qn,
                  int64_t qp);

// BiT / GSB signed elastic binarization (§1.7, §5.2): y = α·sign(x), dL/dx = g·1{|x/α| ≤ 1} and
//   BiT: dL/dα = Σ sign(x)·g / sqrt(numel(x));
//   GSB: dL/dα = Σ (sign(x) − (x/α)·1{|x/α| ≤ 1})·g / sqrt(numel(x)).
// alpha is a one-element tensor.
enum class ElasticGradient { bit, gsb };
torch::Tensor elastic_sign(const torch::Tensor & x, const torch::Tensor & alpha, ElasticGradient gradient);

// BiT unsigned elastic binarization (§1.7): y = α·round(clamp(x/α, 0, 1)) ∈ {0, α}, LSQ gradients with
// qn = 0, qp = 1.
torch::Tensor elastic_unsigned(const torch::Tensor & x, const torch::Tensor & alpha);

// TWN ternarization of a [out, in] weight (§1.5): Δ = 0.7·mean|W| and α = mean of |W| over |W| > Δ,
// per tensor or per output row (TerViT's channel-wise form). Identity STE.
torch::Tensor ternary_twn(const torch::Tensor & w, bool per_row);

// BiViT softmax-aware binarization (§2.2): A = 1{P ≥ β·max_row(P)} ∈ {0, 1} over the last dimension,
// gradient passed unchanged to the post-softmax P.
torch::Tensor softmax_aware_binarize(const torch::Tensor & probs, double beta);

// GSB group superposition of the value tensor (§5.3): three signed groups on the bands
// M1 = |v| beyond 0.7·max/min, M2 beyond 0.9·max/min (max and min over the whole tensor):
//   v̂ = α1·sign(v) + α2·sign(v⊙M1) + α3·sign(v⊙M2)   (sign(0) = 0 inside the masked groups)
// with the gradients of §5.3. alphas: [3]. per_sample: max and min over each sample (dimension 0)
// instead of the whole batch — the evaluation form, so a prediction never depends on which other
// images share its batch (the reference code only has the batch-wide form; docs/quantization.md).
torch::Tensor gsb_value(const torch::Tensor & v, const torch::Tensor & alphas, bool per_sample = false);
// GSB group superposition of attention probabilities (§5.3): Â = α1·round(clamp(P/α1, 0, 1)) + α2·M1 + α3·M2
// with M1 = 1{P > 0.7·max P}, M2 = 1{P > 0.9·max P}, and the gradients of §5.3. alphas: [3].
// per_sample: as gsb_value.
torch::Tensor gsb_attention(const torch::Tensor & probs, const torch::Tensor & alphas, bool per_sample = false);

}  // namespace bitvit::quant
