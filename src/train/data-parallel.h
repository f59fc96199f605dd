// In-process data parallelism: replicas of one model, one thread each. A batch is split into one
// shard per replica; each replica runs forward and backward on its shard with the loss scaled by the
// shard's share of the batch, and the replicas' gradients are summed into replica 0, so replica 0
// holds the gradient of the whole batch (up to float summation order) and its optimiser steps;
// broadcast() then copies the new weights to the others.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <vector>

#include "deit.h"

namespace bitvit {

struct ShardResult {
    double loss = 0.0;    // the shard's mean loss (NaN or Inf stops training: see Trainer)
    int64_t correct = 0;  // correct top-1 predictions in the shard
};

// Forward and backward of one shard on replica `replica`, the loss multiplied by `weight` before
// backward (weights sum to 1 over the shards), so the summed gradients are the whole batch's.
using ShardStep = std::function<ShardResult(size_t replica, const torch::Tensor & images, const torch::Tensor & labels,
                                            double weight)>;

class DataParallel {
  public:
    // replicas[0] is the model the optimiser steps; the others must have its architecture.
    explicit DataParallel(std::vector<VisionModel> replicas);

    size_t size() const { return replicas_.size(); }
    VisionModel & replica(size_t r) { return replicas_.at(r); }

    // Copies replica 0's parameters and buffers into the others.
    void broadcast();

    // Clears every replica's gradients, runs `step` on each replica's shard (concurrently), sums the
    // gradients into replica 0 and returns the batch's loss (shard losses weighted by their share)
    // and correct count. Before the first batch, quantizers that initialise on their first input do
    // so once, in replica 0 on the whole batch as one process would, and are handed to the others.
    ShardResult forward_backward(const torch::Tensor & images, const torch::Tensor & labels, const ShardStep & step);

  private:
    void sum_gradients_into_primary();
    std::vector<VisionModel> replicas_;
    bool pending_init_;  // first-batch initialisation not yet done (several replicas only)
};

}  // namespace bitvit
