// Whole-model speed: the bit-wise runtime against LibTorch (FP32 and BF16) on the same architecture,
// measured in one process. On a shared machine a single timing can be off by an order of magnitude,
// so every engine is timed in several rounds, the rounds interleave the engines (a slow minute hurts
// all of them alike), each result is the median of its rounds with their spread, each engine is
// compared at its best thread count, and a ratio whose rounds disagree is flagged.
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
    double min_seconds = 0.5;     // per engine, thread count and round
    int rounds = 5;               // interleaved rounds per measurement
};

struct ModelBenchRow {
    std::string engine;  // "runtime (<isa>)", "libtorch fp32", "libtorch bf16"
    int64_t batch = 0;
    int threads = 0;
    double ms = 0;                 // median over the rounds of each round's median ms per batch
    double ms_min = 0, ms_max = 0; // the fastest and slowest round
    double images_per_sec() const { return batch * 1000.0 / ms; }
    double spread() const { return (ms_max - ms_min) / ms; }  // relative range of the rounds
};

// The runtime against one LibTorch engine at one batch size, each at its best thread count.
struct ModelBenchRatio {
    std::string versus;  // "libtorch fp32" or "libtorch bf16"
    int64_t batch = 0;
    int runtime_threads = 0, versus_threads = 0;
    double median = 0;             // median over rounds of (versus ms / runtime ms) in the same round
    double min = 0, max = 0;       // over rounds
    // The rounds disagree by more than the engines' own spread would explain (±10 % at least).
    bool noisy = false;
};

struct ModelBenchReport {
    std::string model, method;
    int64_t packed_bytes = 0, fp32_bytes = 0;  // the packed file's size on disk; FP32 parameters × 4
    std::vector<ModelBenchRow> rows;
    std::vector<ModelBenchRatio> ratios;
    int rounds = 0;
};

// Builds the architecture with random weights (speed does not depend on them), exports the recipe's
// quantized form unless `packed` is given, and times the engines.
ModelBenchReport bench_models(const ModelBenchOptions & options);

// The report as JSON (for scripts/record-bench.py).
std::string bench_report_json(const ModelBenchReport & report);

}  // namespace bitvit
