#include "bench.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <thread>

#include "checkpoint.h"
#include "export.h"
#include "runtime/cpu-features.h"
#include "runtime/model.h"

namespace bitvit {

namespace {

using Clock = std::chrono::steady_clock;

// Median milliseconds of fn() over calls filling at least min_seconds (at least 3 calls).
template <typename Fn>
double median_ms(Fn && fn, double min_seconds) {
    std::vector<double> times;
    const auto start = Clock::now();
    while (times.size() < 3 || std::chrono::duration<double>(Clock::now() - start).count() < min_seconds) {
        const auto t0 = Clock::now();
        fn();
        times.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
        if (times.size() >= 1000) break;
    }
    std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
    return times[times.size() / 2];
}

double median_of(std::vector<double> v) {
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
}

int resolve_threads(int threads) {
    return threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// The packed model the runtime runs: the given file, or the recipe's last stage with random weights.
std::string packed_model_path(const ModelBenchOptions & o, const TrainConfig & config, const std::filesystem::path & tmp) {
    if (!o.packed.empty()) return o.packed;
    const DataShape base = registered_shape(config.model);
    VisionModel quantized = build_stage_model(config, base, config.stages.size() - 1);
    {
        torch::NoGradGuard no_grad;
        quantized->train();
        quantized->forward(torch::randn({2, base.in_chans, base.img_size, base.img_size}));  // quantizer initialisation
    }
    // Normalisation does not affect speed; the recipe's (1-channel) statistics are repeated per channel.
    const std::vector<double> mean(static_cast<size_t>(base.in_chans), config.data.mean.at(0));
    const std::vector<double> std(static_cast<size_t>(base.in_chans), config.data.std.at(0));
    export_packed(quantized, ExportOptions{std::filesystem::path(o.recipe).stem().string(), mean, std, o.half_storage, {}}, tmp.string());
    return tmp.string();
}

// The full-precision model of a registered architecture (what LibTorch runs beside the packed model).
VisionModel fp_model_named(const std::string & name) {
    if (spec::is_swin_name(name)) return Swin(swin_config(name));
    return Deit(deit_config(name));
}

// One engine at one thread count: its per-round medians.
struct Series {
    std::string engine;
    int threads;
    std::function<void()> run;
    std::vector<double> rounds;
    ModelBenchRow row(int64_t batch) const {
        return {engine, batch, threads, median_of(rounds), *std::min_element(rounds.begin(), rounds.end()),
                *std::max_element(rounds.begin(), rounds.end())};
    }
};

// The runtime's best thread count against `versus`'s best, round by round.
ModelBenchRatio ratio_of(const std::vector<Series> & series, const std::string & versus, int64_t batch) {
    auto best = [&](const std::string & prefix) {
        const Series * b = nullptr;
        for (const auto & s : series) {
            if (s.engine.rfind(prefix, 0) == 0 && (!b || median_of(s.rounds) < median_of(b->rounds))) b = &s;
        }
        return b;
    };
    const Series * rt = best("runtime");
    const Series * other = best(versus);
    std::vector<double> per_round;
    for (size_t r = 0; r < rt->rounds.size(); ++r) per_round.push_back(other->rounds[r] / rt->rounds[r]);
    ModelBenchRatio ratio{versus, batch, rt->threads, other->threads, median_of(per_round),
                          *std::min_element(per_round.begin(), per_round.end()), *std::max_element(per_round.begin(), per_round.end())};
    const ModelBenchRow a = rt->row(batch), b = other->row(batch);
    const double allowed = std::max(0.10, a.spread() + b.spread());
    ratio.noisy = (ratio.max - ratio.min) / ratio.median > allowed;
    return ratio;
}

}  // namespace

ModelBenchReport bench_models(const ModelBenchOptions & o) {
    std::vector<std::string> overrides;
    if (!o.model.empty()) overrides.push_back("model.name=\"" + o.model + "\"");
    const TrainConfig config = load_config_file(o.recipe, overrides);
    ModelBenchReport report;
    report.model = config.model.name;
    report.rounds = std::max(1, o.rounds);
    const auto tmp = o.save_packed.empty()
                         ? std::filesystem::temp_directory_path() / ("bitvit-bench-" + std::to_string(::getpid()) + ".safetensors")
                         : std::filesystem::path(o.save_packed);
    const std::string packed_path = packed_model_path(o, config, tmp);
    const runtime::PackedModel packed = runtime::PackedModel::load(packed_path);
    if (packed_path == tmp.string() && o.save_packed.empty()) std::filesystem::remove(tmp);
    report.method = packed.method();
    report.packed_bytes = packed.file_bytes();
    const int64_t C = packed.in_chans(), S = packed.img_size();
    VisionModel fp = fp_model_named(packed.name());
    fp->eval();
    VisionModel bf = fp_model_named(packed.name());
    bf->eval();
    bf->to(torch::kBFloat16);
    report.fp32_bytes = count_parameters(*fp) * 4;
    const std::string isa = runtime::isa_name(runtime::selected_isa());
    torch::NoGradGuard no_grad;
    for (const int64_t batch : o.batches) {
        const torch::Tensor pixels = torch::randint(0, 256, {batch, C, S, S}, torch::kUInt8);
        const torch::Tensor images = torch::randn({batch, C, S, S});
        const torch::Tensor images16 = images.to(torch::kBFloat16);
        std::vector<Series> series;
        for (const int requested : o.threads) {
            const int t = resolve_threads(requested);
            series.push_back({"runtime (" + isa + ")", t, [&, t] { packed.predict(pixels.data_ptr<uint8_t>(), batch, t); }, {}});
            series.push_back({"libtorch fp32", t, [&, t] { torch::set_num_threads(t); fp->forward(images); }, {}});
            series.push_back({"libtorch bf16", t, [&, t] { torch::set_num_threads(t); bf->forward(images16); }, {}});
        }
        for (auto & s : series) s.run();  // warm-up: first-call allocations, thread pools
        for (int r = 0; r < report.rounds; ++r) {
            for (auto & s : series) s.rounds.push_back(median_ms(s.run, o.min_seconds));
        }
        for (const auto & s : series) report.rows.push_back(s.row(batch));
        for (const char * versus : {"libtorch fp32", "libtorch bf16"}) report.ratios.push_back(ratio_of(series, versus, batch));
    }
    return report;
}

std::string bench_report_json(const ModelBenchReport & r) {
    nlohmann::json rows = nlohmann::json::array(), ratios = nlohmann::json::array();
    for (const auto & row : r.rows) {
        rows.push_back({{"engine", row.engine}, {"batch", row.batch}, {"threads", row.threads}, {"ms", row.ms},
                        {"ms_min", row.ms_min}, {"ms_max", row.ms_max}, {"images_per_sec", row.images_per_sec()}});
    }
    for (const auto & q : r.ratios) {
        ratios.push_back({{"versus", q.versus}, {"batch", q.batch}, {"runtime_threads", q.runtime_threads},
                          {"versus_threads", q.versus_threads}, {"median", q.median}, {"min", q.min}, {"max", q.max},
                          {"noisy", q.noisy}});
    }
    return nlohmann::json{{"model", r.model}, {"method", r.method}, {"packed_bytes", r.packed_bytes},
                          {"fp32_bytes", r.fp32_bytes}, {"rounds", r.rounds}, {"rows", rows}, {"ratios", ratios}}
        .dump(1);
}

}  // namespace bitvit
