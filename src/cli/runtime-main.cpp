// bitvit-rt: the deployment half on its own — loads packed models and runs them with the bit-wise
// runtime, without LibTorch (it builds with BITVIT_BUILD_TRAINING=OFF).
#include <CLI/CLI.hpp>

#include <cstdio>

#include "cli/app.h"
#include "cli/runtime-commands.h"

using namespace bitvit;

int main(int argc, char ** argv) {
    CLI::App app{"bitvit-rt: run packed binary/ternary ViTs on the bit-wise CPU runtime (no LibTorch)"};
    cli::configure(app);
    cli::RunArgs run_args;
    auto * run = cli::add_run_command(app, run_args);

    std::string model;
    std::vector<int64_t> batches = {1, 16};
    std::vector<int> bench_threads = {1, 0};
    double min_seconds = 1.0;
    auto * bench = app.add_subcommand("bench", "Latency and throughput of a packed model, and peak memory");
    bench->add_option("model", model, "Packed model file (from bitvit export)")->required();
    bench->add_option("--batch", batches, "Batch sizes, comma-separated")->delimiter(',');
    bench->add_option("--threads", bench_threads, "Thread counts, comma-separated (0 = all cores)")->delimiter(',');
    bench->add_option("--min-seconds", min_seconds, "Minimum time per measurement");

    std::string info_model;
    auto * info = app.add_subcommand("info", "Architecture, method and quantized sites of a packed model");
    info->add_option("model", info_model, "Packed model file (from bitvit export)")->required();

    const std::vector<cli::Command> commands = {
        {run, [&] { return cli::run_command(run_args); }},
        {bench, [&] { return cli::bench_packed(model, batches, bench_threads, min_seconds); }},
        {info, [&] { return cli::info_packed(info_model); }},
    };
    return cli::run_app(app, commands, argc, argv, "bitvit-rt");
}
