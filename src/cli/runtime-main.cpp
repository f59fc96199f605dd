// bitvit-rt: the deployment half on its own — loads packed models and runs them with the bit-wise
// runtime, without LibTorch (it builds with BITVIT_BUILD_TRAINING=OFF).
#include <CLI/CLI.hpp>

#include <cstdio>

#include "cli/runtime-commands.h"

using namespace bitvit;

int main(int argc, char ** argv) {
    CLI::App app{"bitvit-rt: run packed binary/ternary ViTs on the bit-wise CPU runtime (no LibTorch)"};
    app.require_subcommand(1);
    std::string model, input, labels, data = "fashion-mnist", split = "test";
    int64_t subset = 0, show = 0;
    int threads = 0;
    std::vector<int64_t> batches = {1, 16};
    std::vector<int> bench_threads = {1, 0};
    double min_seconds = 1.0;

    auto * run = app.add_subcommand("run", "Predictions, accuracy and images/s of a packed model on a data set");
    run->add_option("model", model, "Packed model file")->required()->check(CLI::ExistingFile);
    run->add_option("--input", input, "IDX image file (gzip or plain); default: the --data set")->check(CLI::ExistingFile);
    run->add_option("--labels", labels, "IDX label file for --input")->check(CLI::ExistingFile);
    run->add_option("--data", data, "Data set when no --input is given (fashion-mnist, mnist, ...)");
    run->add_option("--split", split, "test or train")->check(CLI::IsMember({"test", "train"}));
    run->add_option("--subset", subset, "Stratified subset of N images; 0 = all");
    run->add_option("--threads", threads, "Threads; 0 = all cores");
    run->add_option("--show", show, "Print the predictions of the first N images");

    auto * bench = app.add_subcommand("bench", "Latency and throughput of a packed model, and peak memory");
    bench->add_option("model", model, "Packed model file")->required()->check(CLI::ExistingFile);
    bench->add_option("--batch", batches, "Batch sizes")->delimiter(',');
    bench->add_option("--threads", bench_threads, "Thread counts (0 = all cores)")->delimiter(',');
    bench->add_option("--min-seconds", min_seconds, "Minimum time per measurement");

    auto * info = app.add_subcommand("info", "Architecture, method and quantized sites of a packed model");
    info->add_option("model", model, "Packed model file")->required()->check(CLI::ExistingFile);

    CLI11_PARSE(app, argc, argv);
    try {
        if (*run) return cli::run_packed(model, cli::runtime_images(input, labels, data, split, subset), threads, show);
        if (*bench) return cli::bench_packed(model, batches, bench_threads, min_seconds);
        if (*info) return cli::info_packed(model);
    } catch (const std::exception & e) {
        std::fprintf(stderr, "bitvit-rt: error: %s\n", e.what());
        return 1;
    }
    return 0;
}
