// Training throughput, images/s of one optimiser step per iteration on a random batch of 28×28 images:
//   train_step:  the full-precision small DeiTs (forward, cross-entropy, backward, AdamW update);
//   recipe_step: the last stage of a shipped recipe exactly as `bitvit train` runs it — its
//                quantizers, its distillation loss with the shipped teacher's forward, gradient
//                clipping, its optimiser — after one untimed step that initialises the quantizers;
//   attention_products: one block's q·kᵀ and probs·v with their gradients on the micro DeiT's
//                shapes, batched_matmul (train/batched-matmul.h) against torch::matmul.
// Run from the repository root (the recipes name their teacher by a relative path):
//   build/bench/bench-train --benchmark_filter=recipe_step
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <thread>

#include "train/batched-matmul.h"
#include "train/checkpoint.h"
#include "train/deit.h"
#include "train/distill.h"
#include "train/optimizer.h"
#include "train/trainer.h"

namespace {

void train_step(benchmark::State & state, const std::string & model_name) {
    const int64_t batch = state.range(0);
    const int threads = static_cast<int>(state.range(1));
    bitvit::set_compute_threads(threads);
    bitvit::retain_freed_memory();
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

// The recipe's last stage (the quantized one of a staged recipe) on `model_name`, one thread;
// `teacher` replaces train.fp_checkpoint when not empty (the Swin teacher for a Swin model).
void recipe_step(benchmark::State & state, const std::string & recipe, const std::string & model_name,
                 const std::string & teacher) {
    const int64_t batch = state.range(0);
    bitvit::set_compute_threads(1);
    bitvit::retain_freed_memory();
    std::vector<std::string> overrides{"model.name=" + model_name};
    if (!teacher.empty()) overrides.push_back("train.fp_checkpoint=" + teacher);
    const bitvit::TrainConfig config = bitvit::load_config_file("recipes/" + recipe + ".toml", overrides);
    const size_t last = config.stages.size() - 1;
    const bitvit::StageSection & st = config.stages[last];
    torch::manual_seed(0);
    bitvit::VisionModel model = bitvit::build_stage_model(config, bitvit::registered_shape(config.model), last);
    model->set_capture(st.distill.uses_features());
    bitvit::VisionModel teacher_model{nullptr};
    if (st.distill.uses_teacher()) {
        teacher_model = bitvit::load_model(config.checkpoint_ref(st.distill.teacher)).model;
        for (auto & p : teacher_model->parameters()) p.set_requires_grad(false);
        teacher_model->set_capture(st.distill.uses_features());
    }
    model->train();
    auto optimizer = bitvit::make_optimizer(st.optim, *model);
    const auto images = torch::randn({batch, 1, 28, 28});
    const auto labels = torch::randint(0, 10, {batch}, torch::kInt64);
    auto step = [&] {
        for (auto & p : model->parameters()) p.mutable_grad() = torch::Tensor();
        const bitvit::BatchLoss b = bitvit::stage_loss(model, teacher_model ? &teacher_model : nullptr, images, labels,
                                                       st.distill, st.optim.label_smoothing);
        b.loss.backward();
        if (st.optim.clip_grad > 0) bitvit::clip_gradients(*model, st.optim.clip_grad);
        optimizer->step();
        return b.loss.item<float>();
    };
    step();  // the quantizers' first-batch initialisation, not timed
    for (auto _ : state) benchmark::DoNotOptimize(step());
    state.counters["images/s"] = benchmark::Counter(static_cast<double>(batch * state.iterations()),
                                                    benchmark::Counter::kIsRate);
    state.counters["threads"] = 1;
}

// q, k, v [B, H, N, d] as attention slices them from qkv [B, N, 3·H·d] (strided views, no copies),
// batch 128, 3 heads of 32 over 50 tokens: the forward products and their backward pass, one thread.
void attention_products(benchmark::State & state, torch::Tensor (*matmul)(const torch::Tensor &, const torch::Tensor &)) {
    bitvit::set_compute_threads(1);
    torch::manual_seed(0);
    const int64_t B = 128, N = 50, H = 3, d = 32;
    const auto qkv = torch::randn({B, N, 3, H, d}).requires_grad_(true);
    for (auto _ : state) {
        const auto heads = qkv.permute({2, 0, 3, 1, 4}).unbind(0);
        const auto probs = torch::softmax(matmul(heads[0], heads[1].transpose(-2, -1)), -1);  // [B, H, N, N]
        const auto out = matmul(probs, heads[2]);                                            // [B, H, N, d]
        out.sum().backward();
        benchmark::DoNotOptimize(qkv.grad().data_ptr<float>());
        qkv.mutable_grad() = torch::Tensor();
    }
    state.counters["images/s"] = benchmark::Counter(static_cast<double>(B * state.iterations()), benchmark::Counter::kIsRate);
}

torch::Tensor torch_matmul(const torch::Tensor & a, const torch::Tensor & b) { return torch::matmul(a, b); }

const int kAllThreads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

}  // namespace

BENCHMARK_CAPTURE(train_step, deit_micro_patch4_28, std::string("deit_micro_patch4_28"))
    ->Args({128, 1})->Args({128, kAllThreads})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(train_step, deit_nano_patch7_28, std::string("deit_nano_patch7_28"))
    ->Args({128, 1})->Args({128, kAllThreads})->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_CAPTURE(attention_products, torch_matmul, &torch_matmul)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(attention_products, batched_matmul, &bitvit::batched_matmul)->Unit(benchmark::kMillisecond)->UseRealTime();

// FP and every seed method's recipe, on the micro DeiT and the micro Swin, batch 128.
#define BITVIT_RECIPE_STEP(recipe, name)                                                                                   \
    BENCHMARK_CAPTURE(recipe_step, name##_deit, std::string(recipe), std::string("deit_micro_patch4_28"), std::string()) \
        ->Arg(128)->Unit(benchmark::kMillisecond)->UseRealTime();                                                          \
    BENCHMARK_CAPTURE(recipe_step, name##_swin, std::string(recipe), std::string("swin_micro_patch2_window7_28"),        \
                      std::string("teachers/swin_micro_patch2_window7_28-fp.pt"))                                          \
        ->Arg(128)->Unit(benchmark::kMillisecond)->UseRealTime();
BITVIT_RECIPE_STEP("fp", fp)
BITVIT_RECIPE_STEP("bnn", bnn)
BITVIT_RECIPE_STEP("bivit-w1a1", bivit_w1a1)
BITVIT_RECIPE_STEP("tervit", tervit)
BITVIT_RECIPE_STEP("bi-vit", bi_vit)
BITVIT_RECIPE_STEP("gsb", gsb)

BENCHMARK_MAIN();
