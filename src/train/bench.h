// Whole-model speed: the bit-wise runtime against LibTorch (FP32 and BF16) on the same architecture,
// measured in one process so the ratios are fair on a shared, noisy machine.
#pragma once

#include <string>
#include <vector>

#include "config.h"

namespace bitvit {

struct ModelBenchOptions {
    std::string recipe;           // quantizers of the runtime model: the recipe's last stage
    std::string model;            // architecture (overrides the recipe's), e.g. deit_small_patch16_224
    std::string packed;           // optional: time this packed file instead of exporting one
    std::string save_packed;      // optional: keep the exported random-weight model here
    bool half_storage = false;    // export with F16 full-precision tensors (ExportOptions)
    std::vector<int64_t> batches = {1, 16};
    std::vector<int> threads = {1, 0};  // 0 = all cores
    double min_seconds = 1.0;     // per measurement
};

struct ModelBenchRow {
    std::string engine;  // "runtime (<isa>)", "libtorch fp32", "libtorch bf16"
    int64_t batch = 0;
    int threads = 0;
    double ms_per_batch = 0;
    double images_per_sec() const { return batch * 1000.0 / ms_per_batch; }
};

struct ModelBenchReport {
    std::string model, method;
    int64_t packed_bytes = 0, fp32_bytes = 0;
    std::vector<ModelBenchRow> rows;
};

// Builds the architecture with random weights (speed does not depend on them), exports the recipe's
// quantized form unless `packed` is given, and times each engine at every batch size and thread count.
ModelBenchReport bench_models(const ModelBenchOptions & options);

}  // namespace bitvit
