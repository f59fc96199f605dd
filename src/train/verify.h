// Parity of a packed model with the LibTorch model it was exported from: both run on the same
// images; the report says how often their top-1 predictions agree and how far their logits drift.
#pragma once

#include "data/image-dataset.h"
#include "layers.h"
#include "loader.h"
#include "runtime/model.h"

namespace bitvit {

struct VerifyReport {
    int64_t count = 0;
    int64_t agree = 0;               // images whose top-1 class is the same in both
    double max_abs_logit_diff = 0;   // over all images and classes
    double torch_accuracy = 0, runtime_accuracy = 0;
    double agreement() const { return count ? static_cast<double>(agree) / count : 0.0; }
};

// Runs `model` (eval mode, batches of batch_size) and `packed` (threads; 0 = all cores) on `data`.
VerifyReport verify_packed(VisionModel model, const runtime::PackedModel & packed, const data::ImageDataset & data,
                           const Preprocess & pre, int64_t batch_size, int threads = 0);

// How far the runtime's residual stream is from LibTorch's after each block, over some images:
// the first block whose divergence jumps is where a packed model departs from its checkpoint.
struct BlockDivergence {
    double max_abs = 0;    // max |runtime − LibTorch| over the images' tokens and channels
    double mean_abs = 0;   // mean |runtime − LibTorch|
    double mean_ref = 0;   // mean |LibTorch| (what mean_abs is relative to)
};

// Per block of `model`, over the first `images` images of `data`.
std::vector<BlockDivergence> block_divergence(VisionModel model, const runtime::PackedModel & packed,
                                              const data::ImageDataset & data, const Preprocess & pre, int64_t images);

}  // namespace bitvit
