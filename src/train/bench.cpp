#include "bench.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <thread>

#include "checkpoint.h"
#include "export.h"
#include "runtime/cpu-features.h"
#include "runtime/model.h"

namespace bitvit {

namespace {

// Median milliseconds of fn() over repeats filling at least min_seconds (after one warm-up call).
template <typename Fn>
double median_ms(Fn && fn, double min_seconds) {
    fn();
    std::vector<double> times;
    const auto start = std::chrono::steady_clock::now();
    while (times.size() < 3 || std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < min_seconds) {
        const auto t0 = std::chrono::steady_clock::now();
        fn();
        times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        if (times.size() >= 1000) break;
    }
    std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
    return times[times.size() / 2];
}

int resolve_threads(int threads) {
    return threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace

ModelBenchReport bench_models(const ModelBenchOptions & o) {
    std::vector<std::string> overrides;
    if (!o.model.empty()) overrides.push_back("model.name=\"" + o.model + "\"");
    const TrainConfig config = load_config_file(o.recipe, overrides);
    const DeitConfig base = deit_config(config.model.name);
    const DataShape shape{base.num_classes, base.in_chans, base.img_size};
    ModelBenchReport report;
    report.model = config.model.name;

    std::string packed_path = o.packed;
    const auto tmp = o.save_packed.empty()
                         ? std::filesystem::temp_directory_path() / ("bitvit-bench-" + std::to_string(::getpid()) + ".safetensors")
                         : std::filesystem::path(o.save_packed);
    if (packed_path.empty()) {
        Deit quantized = build_stage_model(config, shape, config.stages.size() - 1);
        {
            torch::NoGradGuard no_grad;
            quantized->train();
            quantized->forward(torch::randn({2, base.in_chans, base.img_size, base.img_size}));  // quantizer initialisation
        }
        // Normalisation does not affect speed; the recipe's (1-channel) statistics are repeated per channel.
        const std::vector<double> mean(static_cast<size_t>(base.in_chans), config.data.mean.at(0));
        const std::vector<double> std(static_cast<size_t>(base.in_chans), config.data.std.at(0));
        export_packed(quantized, ExportOptions{std::filesystem::path(o.recipe).stem().string(), mean, std, o.half_storage, {}}, tmp.string());
        packed_path = tmp.string();
    }
    const runtime::PackedModel packed = runtime::PackedModel::load(packed_path);
    if (packed_path == tmp.string() && o.save_packed.empty()) std::filesystem::remove(tmp);
    report.method = packed.method();
    report.packed_bytes = packed.file_bytes();
    const runtime::ModelConfig & c = packed.config();

    DeitConfig fp_config = deit_config(c.name);
    Deit fp(fp_config);
    fp->eval();
    report.fp32_bytes = count_parameters(*fp) * 4;
    const std::string isa = runtime::isa_name(runtime::selected_isa());

    for (const int64_t batch : o.batches) {
        const torch::Tensor pixels = torch::randint(0, 256, {batch, c.in_chans, c.img_size, c.img_size}, torch::kUInt8);
        const torch::Tensor images = torch::randn({batch, c.in_chans, c.img_size, c.img_size});
        for (const int requested : o.threads) {
            const int threads = resolve_threads(requested);
            // The runtime: one image per task; a batch of 1 is a single forward on one thread.
            const double rt = median_ms([&] { packed.predict(pixels.data_ptr<uint8_t>(), batch, threads); }, o.min_seconds);
            report.rows.push_back({"runtime (" + isa + ")", batch, threads, rt});
            torch::set_num_threads(threads);
            torch::NoGradGuard no_grad;
            const double t32 = median_ms([&] { fp->forward(images); }, o.min_seconds);
            report.rows.push_back({"libtorch fp32", batch, threads, t32});
            fp->to(torch::kBFloat16);
            const torch::Tensor images16 = images.to(torch::kBFloat16);
            const double t16 = median_ms([&] { fp->forward(images16); }, o.min_seconds);
            fp->to(torch::kFloat32);
            report.rows.push_back({"libtorch bf16", batch, threads, t16});
        }
    }
    return report;
}

}  // namespace bitvit
