// Turns an ImageDataset (uint8 pixels) into normalised float batches, with random-crop and flip
// augmentation, prepared on a background thread so the training thread only does model work.
// Everything random is a pure function of (seed, epoch, position), so a resumed run sees exactly the
// batches an uninterrupted run would have seen.
#pragma once

#include <torch/torch.h>

#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>

#include "data/image-dataset.h"

namespace bitvit {

struct Batch {
    torch::Tensor images;  // [B, C, H, W] float32, normalised
    torch::Tensor labels;  // [B] int64
};

struct Preprocess {
    std::vector<float> mean, std;  // per channel, on [0, 1] pixels
    int64_t crop_padding = 0;      // training only: random crop after zero padding
    bool hflip = false;            // training only: random horizontal flip
    // Training only: with this probability, one random rectangle of the (cropped, flipped) image is
    // replaced by N(0, 1) noise in normalised units — Zhong et al.'s random erasing, in timm's "pixel"
    // mode (area 2–33 % of the image, aspect ratio log-uniform in [0.3, 3.3], ≤ 10 tries to fit).
    double random_erase = 0.0;
    // Training only, > 0: torchvision's RandomResizedCrop of the stored image instead of the padded
    // crop: a box of area uniform in [resized_crop_scale, 1] of the image and aspect ratio
    // log-uniform in [3/4, 4/3] (10 tries, then the whole image), resampled bilinearly
    // (align_corners=False) back to H×W.
    double resized_crop_scale = 0.0;
};

// A permutation of [0, n) that depends only on (seed, epoch).
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch);

// Builds one batch from data[indices[0..count)]. With augment, sample j of the batch draws its
// resized-crop box (when on) or crop offset, then its flip and erased rectangle, in that order, from a
// generator seeded by (augment_seed, first_sample + j): a rank's shard, built with its offset in the
// whole batch, holds exactly the samples one process would have built.
Batch make_batch(const data::ImageDataset & data, const int64_t * indices, int64_t count, const Preprocess & pre,
                 bool augment, uint64_t augment_seed, int64_t first_sample = 0);

// Which part of every batch a loader yields: rank `index` of `count` data-parallel ranks gets the
// `index`-th of `count` equal slices (the batch size must divide by `count`).
struct Shard {
    int64_t index = 0, count = 1;
};

// Yields the batches of one pass over `order` in sequence, prepared up to `prefetch` batches ahead
// on its own thread. An error on the loader thread is rethrown by next().
class BatchLoader {
  public:
    // first_batch > 0 starts part-way through the epoch, with exactly the batches an uninterrupted
    // loader would give from there (each batch's augmentation is seeded by its index).
    // With a shard, batch_size is the whole batch's and next() yields this shard's slice of it.
    BatchLoader(const data::ImageDataset & data, std::vector<int64_t> order, int64_t batch_size, bool drop_last,
                Preprocess pre, bool augment, uint64_t seed, int64_t prefetch, int64_t first_batch = 0, Shard shard = {});
    ~BatchLoader();
    BatchLoader(const BatchLoader &) = delete;
    BatchLoader & operator=(const BatchLoader &) = delete;

    int64_t num_batches() const { return num_batches_; }
    std::optional<Batch> next();  // nullopt after the last batch
    // Batch b whole, every shard's slice together, built on the calling thread.
    Batch whole_batch(int64_t b) const;

  private:
    void run();

    const data::ImageDataset & data_;
    std::vector<int64_t> order_;
    int64_t batch_size_, num_batches_, prefetch_, first_batch_;
    Shard shard_;
    Preprocess pre_;
    bool augment_;
    uint64_t seed_;

    std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<Batch> ready_;
    int64_t produced_ = 0, consumed_ = 0;
    bool stop_ = false;
    std::exception_ptr error_;
    std::thread worker_;
};

// Mixes several integers into one well-spread 64-bit seed (splitmix64 steps).
uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c = 0);

}  // namespace bitvit
