// bitvit-rt: the deployment half on its own — loads packed models and runs them with the bit-wise
// runtime, without LibTorch (it builds with BITVIT_BUILD_TRAINING=OFF).
#include <CLI/CLI.hpp>

#include <cstdio>

#include "cli/runtime-commands.h"

using namespace bitvit;

int main(int argc, char ** argv) {
    CLI::App app{"bitvit-rt: run packed binary/ternary ViTs on the bit-wise CPU runtime (no LibTorch)"};
    app.require_subcommand(1);
    cli::RunArgs run_args;
    auto * run = cli::add_run_command(app, run_args);

    std::string model;
    std::vector<int64_t> batches = {1, 16};
    std::vector<int> bench_threads = {1, 0};
    double min_seconds = 1.0;
    auto * bench = app.add_subcommand("bench", "Latency and throughput of a packed model, and peak memory");
    bench->add_option("model", model, "Packed model file")->required()->check(CLI::ExistingFile);
    bench->add_option("--batch", batches, "Batch sizes")->delimiter(',');
    bench->add_option("--threads", bench_threads, "Thread counts (0 = all cores)")->delimiter(',');
    bench->add_option("--min-seconds", min_seconds, "Minimum time per measurement");

    auto * info = app.add_subcommand("info", "Architecture, method and quantized sites of a packed model");
    info->add_option("model", model, "Packed model file")->required()->check(CLI::ExistingFile);

    CLI11_PARSE(app, argc, argv);
    try {
        if (*run) return cli::run_command(run_args);
        if (*bench) return cli::bench_packed(model, batches, bench_threads, min_seconds);
        if (*info) return cli::info_packed(model);
    } catch (const std::exception & e) {
        std::fprintf(stderr, "bitvit-rt: error: %s\n", e.what());
        return 1;
    }
    return 0;
}
