// The optimiser of a training stage: Adam or AdamW over two parameter groups — weight matrices with
// the stage's weight decay, everything else (norms, biases, tokens, position embeddings, quantizer
// scales and shifts) without — and the learning-rate schedule (linear warm-up, then cosine).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>

#include "config.h"

namespace bitvit {

// Whether parameter `name` is decayed: matrices (dim ≥ 2) except cls_token, dist_token and
// pos_embed, timm's no_weight_decay set. 1-D and scalar parameters (norms, biases, scales) never are.
bool decays(const std::string & name, const torch::Tensor & p);

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimSection & optim, torch::nn::Module & model);

// Learning rate at optimiser step `step` of `total_steps`: linear warm-up from warmup_lr to lr over
// `warmup_steps`, then cosine decay to min_lr.
double scheduled_lr(const OptimSection & optim, int64_t step, int64_t warmup_steps, int64_t total_steps);
void set_lr(torch::optim::Optimizer & optimizer, double lr);

// The global L2 norm of the model's gradients; when max_norm > 0 and the norm exceeds it, every
// gradient is scaled by max_norm / norm (direction kept). Returns the norm before clipping.
double clip_gradients(torch::nn::Module & model, double max_norm);

}  // namespace bitvit
