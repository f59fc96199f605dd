// Training throughput of the full-precision small DeiTs: one optimiser step (forward, backward,
// AdamW update) per iteration on a random batch of 28×28 images, reported as images/s.
//   bench-train --benchmark_filter=micro
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <thread>

#include "train/deit.h"
#include "train/trainer.h"

namespace {

void train_step(benchmark::State & state, const std::string & model_name) {
    const int64_t batch = state.range(0);
    const int threads = static_cast<int>(state.range(1));
    bitvit::set_compute_threads(threads);
    torch::manual_seed(0);
    bitvit::Deit model(bitvit::deit_config(model_name));
    model->train();
    torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(1e-3));
    const auto images = torch::randn({batch, 1, 28, 28});
    const auto labels = torch::randint(0, 10, {batch}, torch::kInt64);
    for (auto _ : state) {
        optimizer.zero_grad();
        auto loss = torch::nn::functional::cross_entropy(model->forward(images), labels);
        loss.backward();
        optimizer.step();
        benchmark::DoNotOptimize(loss.item<float>());
    }
    state.counters["images/s"] = benchmark::Counter(static_cast<double>(batch * state.iterations()),
                                                    benchmark::Counter::kIsRate);
    state.counters["threads"] = threads;
}

const int kAllThreads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

}  // namespace

BENCHMARK_CAPTURE(train_step, deit_micro_patch4_28, std::string("deit_micro_patch4_28"))
    ->Args({128, 1})->Args({128, kAllThreads})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(train_step, deit_nano_patch7_28, std::string("deit_nano_patch7_28"))
    ->Args({128, 1})->Args({128, kAllThreads})->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
