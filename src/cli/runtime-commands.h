// The runtime's command-line actions, shared by `bitvit` (run) and the LibTorch-free `bitvit-rt`
// (run, bench, info): they use only the runtime and the data readers.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "data/image-dataset.h"
#include "runtime/model.h"

namespace bitvit::cli {

// The labelled images a runtime command reads: an IDX image file with its label file, or a named
// data set's split, and the threads it runs on.
struct RuntimeInputs {
    std::string idx, labels, data = "fashion-mnist", data_root, split = "test";
    int64_t subset = 0;     // a stratified subset of N images; 0 = all
    int threads = 0;        // 0 = all cores
    double crop_pct = 0.0;  // imagefolder: 0 = resize whole images; else timm's resize and centre crop
};
// Registers --input, --labels, --data, --data-root, --split, --subset, --crop-pct and --threads.
void add_runtime_inputs(CLI::App * cmd, RuntimeInputs & in);
// The images a command runs on; an ImageFolder set is read at the model's channels and size.
data::ImageDataset runtime_images(const RuntimeInputs & in, const runtime::PackedModel & model);

// Throws std::invalid_argument when the images are not the model's C×H×W.
void check_image_shape(const runtime::PackedModel & model, const data::ImageDataset & images);

// `run`, the same in bitvit and bitvit-rt: a packed model on image files (each decoded, converted to
// the model's channels and resized to its input: one prediction per file) or on labelled images
// (the first `show` predictions, accuracy), with time and images/s.
struct RunArgs {
    std::string model;
    std::vector<std::string> image_files;
    RuntimeInputs inputs;
    int64_t show = 0;
};
CLI::App * add_run_command(CLI::App & app, RunArgs & args);
int run_command(const RunArgs & args);

// Latency and throughput of the runtime alone (random pixels) at each batch size and thread count
// (0 = all cores), and the process's peak resident memory.
int bench_packed(const std::string & model_path, const std::vector<int64_t> & batches, const std::vector<int> & threads,
                 double min_seconds);

// Architecture, method, quantized sites and size of a packed model.
int info_packed(const std::string & model_path);

}  // namespace bitvit::cli
