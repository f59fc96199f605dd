#include "optimizer.h"

#include <cmath>

namespace bitvit {

bool decays(const std::string & name, const torch::Tensor & p) {
    if (p.dim() < 2) return false;
    return name != "cls_token" && name != "dist_token" && name != "pos_embed";
}

namespace {

// Two parameter groups, with and without weight decay, for Adam or AdamW (same option setters).
template <class Optim, class Options>
std::unique_ptr<torch::optim::Optimizer> make_adam(const OptimSection & o, std::vector<torch::Tensor> with_decay,
                                                   std::vector<torch::Tensor> without_decay) {
    auto options = [&](double wd) {
        return std::make_unique<Options>(Options(o.lr).betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(wd));
    };
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(std::move(with_decay), options(o.weight_decay));
    groups.emplace_back(std::move(without_decay), options(0.0));
    return std::make_unique<Optim>(groups, Options(o.lr));
}

}  // namespace

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimSection & o, torch::nn::Module & model) {
    std::vector<torch::Tensor> with_decay, without_decay;
    for (const auto & item : model.named_parameters()) {
        (decays(item.key(), item.value()) ? with_decay : without_decay).push_back(item.value());
    }
    if (o.optimizer == "adamw") {
        return make_adam<torch::optim::AdamW, torch::optim::AdamWOptions>(o, std::move(with_decay), std::move(without_decay));
    }
    return make_adam<torch::optim::Adam, torch::optim::AdamOptions>(o, std::move(with_decay), std::move(without_decay));
}

double scheduled_lr(const OptimSection & o, int64_t step, int64_t warmup_steps, int64_t total_steps) {
    if (step < warmup_steps) return o.warmup_lr + (o.lr - o.warmup_lr) * step / warmup_steps;
    const int64_t decay_steps = std::max<int64_t>(1, total_steps - warmup_steps);
    const double progress = std::min(1.0, static_cast<double>(step - warmup_steps) / decay_steps);
    return o.min_lr + 0.5 * (o.lr - o.min_lr) * (1.0 + std::cos(M_PI * progress));
}

void set_lr(torch::optim::Optimizer & optimizer, double lr) {
    for (auto & group : optimizer.param_groups()) group.options().set_lr(lr);
}

double clip_gradients(torch::nn::Module & model, double max_norm) {
    if (max_norm > 0) return torch::nn::utils::clip_grad_norm_(model.parameters(), max_norm);
    double sum = 0.0;
    for (const auto & p : model.parameters()) {
        if (p.grad().defined()) sum += p.grad().pow(2).sum().item<double>();
    }
    return std::sqrt(sum);
}

}  // namespace bitvit
