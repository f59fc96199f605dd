#include "data-parallel.h"

#include <exception>
#include <stdexcept>
#include <thread>

namespace bitvit {

DataParallel::DataParallel(std::vector<VisionModel> replicas) : replicas_(std::move(replicas)), pending_init_(replicas_.size() > 1) {
    if (replicas_.empty()) throw std::invalid_argument("data parallelism needs at least one replica");
    broadcast();
}

void DataParallel::broadcast() {
    torch::NoGradGuard no_grad;
    const auto params = replicas_[0]->parameters();
    const auto buffers = replicas_[0]->buffers();
    for (size_t r = 1; r < replicas_.size(); ++r) {
        const auto rp = replicas_[r]->parameters();
        const auto rb = replicas_[r]->buffers();
        for (size_t i = 0; i < params.size(); ++i) rp[i].copy_(params[i]);
        for (size_t i = 0; i < buffers.size(); ++i) rb[i].copy_(buffers[i]);
    }
}

void DataParallel::sum_gradients_into_primary() {
    torch::NoGradGuard no_grad;
    const auto params = replicas_[0]->parameters();
    for (size_t r = 1; r < replicas_.size(); ++r) {
        const auto rp = replicas_[r]->parameters();
        for (size_t i = 0; i < params.size(); ++i) {
            if (!rp[i].grad().defined()) continue;
            if (params[i].grad().defined()) {
                params[i].mutable_grad().add_(rp[i].grad());
            } else {
                params[i].mutable_grad() = rp[i].grad().clone();
            }
        }
    }
}

ShardResult DataParallel::forward_backward(const torch::Tensor & images, const torch::Tensor & labels, const ShardStep & step) {
    for (auto & replica : replicas_) {
        for (auto & p : replica->parameters()) p.mutable_grad() = torch::Tensor();
    }
    if (replicas_.size() == 1) return step(0, images, labels, 1.0);
    if (pending_init_) {
        torch::NoGradGuard no_grad;
        replicas_[0]->forward_heads(images);
        broadcast();
        pending_init_ = false;
    }
    const auto n = static_cast<double>(labels.size(0));
    const auto image_shards = images.chunk(static_cast<int64_t>(replicas_.size()));
    const auto label_shards = labels.chunk(static_cast<int64_t>(replicas_.size()));
    std::vector<ShardResult> results(image_shards.size());
    std::vector<std::exception_ptr> errors(image_shards.size());
    std::vector<std::thread> workers;
    for (size_t r = 0; r < image_shards.size(); ++r) {
        workers.emplace_back([&, r] {
            try {
                results[r] = step(r, image_shards[r], label_shards[r], label_shards[r].size(0) / n);
            } catch (...) {
                errors[r] = std::current_exception();
            }
        });
    }
    for (auto & w : workers) w.join();
    for (const auto & e : errors) {
        if (e) std::rethrow_exception(e);
    }
    ShardResult total;
    for (size_t r = 0; r < results.size(); ++r) {
        total.loss += results[r].loss * label_shards[r].size(0) / n;
        total.correct += results[r].correct;
    }
    sum_gradients_into_primary();
    return total;
}

}  // namespace bitvit
