// The runtime's command-line actions, shared by `bitvit` (run) and the LibTorch-free `bitvit-rt`
// (run, bench, info): they use only the runtime and the data readers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/image-dataset.h"
#include "runtime/model.h"

namespace bitvit::cli {

// Images for the runtime commands: an IDX image file with its label file, or a named data set's split;
// a stratified subset of N images when subset > 0.
data::ImageDataset runtime_images(const std::string & input, const std::string & labels, const std::string & data_name,
                                  const std::string & split, int64_t subset);

// Throws std::invalid_argument when the images are not the model's C×H×W.
void check_image_shape(const runtime::PackedModel & model, const data::ImageDataset & images);

// Runs a packed model on the images: the first `show` predictions, accuracy, time and images/s.
int run_packed(const std::string & model_path, const data::ImageDataset & images, int threads, int64_t show);

// Latency and throughput of the runtime alone (random pixels) at each batch size and thread count
// (0 = all cores), and the process's peak resident memory.
int bench_packed(const std::string & model_path, const std::vector<int64_t> & batches, const std::vector<int> & threads,
                 double min_seconds);

// Architecture, method, quantized sites and size of a packed model.
int info_packed(const std::string & model_path);

}  // namespace bitvit::cli
