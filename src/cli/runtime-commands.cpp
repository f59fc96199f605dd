#include "cli/runtime-commands.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <regex>
#include <stdexcept>
#include <thread>

namespace bitvit::cli {

void add_runtime_inputs(CLI::App * cmd, RuntimeInputs & in) {
    cmd->add_option("--input", in.idx, "IDX image file (gzip or plain); default: the --data set")->check(CLI::ExistingFile);
    cmd->add_option("--labels", in.labels, "IDX label file for --input")->check(CLI::ExistingFile);
    cmd->add_option("--data", in.data, "Data set when no --input is given: fashion-mnist, mnist, cifar10, cifar100, imagefolder");
    cmd->add_option("--data-root", in.data_root, "Directory of the --data set (fashion-mnist has a default)");
    cmd->add_option("--split", in.split, "test or train")->check(CLI::IsMember({"test", "train"}));
    cmd->add_option("--subset", in.subset, "Stratified subset of N images; 0 = all");
    cmd->add_option("--crop-pct", in.crop_pct, "imagefolder: resize the shorter side to size / crop_pct (bicubic) and cut the "
                                               "centre, as timm evaluates (0.875 DeiT, 0.9 Swin); 0 = resize whole images")
        ->check(CLI::Range(0.0, 1.0));
    cmd->add_option("--threads", in.threads, "Runtime threads; 0 = all cores");
}

data::ImageDataset runtime_images(const RuntimeInputs & in, const runtime::PackedModel & model) {
    data::ImageDataset images;
    if (!in.idx.empty()) {
        if (in.labels.empty()) throw std::invalid_argument("an IDX image file needs --labels (its IDX label file)");
        images = data::read_idx(in.idx, in.labels);
    } else {
                images = data::load_dataset(data::DatasetSpec{in.data, in.data_root, model.img_size(), model.in_chans(), in.crop_pct},
                                    in.split == "train" ? data::Split::train : data::Split::test);
    }
    if (in.subset > 0) images = data::select(images, data::stratified_subset(images.labels, images.num_classes(), in.subset, 0));
    return images;
}

void check_image_shape(const runtime::PackedModel & model, const data::ImageDataset & images) {
        if (images.channels != model.in_chans() || images.height != model.img_size() || images.width != model.img_size()) {
        throw std::invalid_argument("images are " + std::to_string(images.channels) + "×" + std::to_string(images.height) +
                                    "×" + std::to_string(images.width) + " but the model takes " + std::to_string(model.in_chans()) +
                                    "×" + std::to_string(model.img_size()) + "×" + std::to_string(model.img_size()));
    }
}

CLI::App * add_run_command(CLI::App & app, RunArgs & args) {
    auto * run = app.add_subcommand("run", "Run a packed model in the bit-wise runtime: predictions (of image files, or of a "
                                           "labelled data set with its accuracy) and speed");
    run->add_option("model", args.model, "Packed model file (from bitvit export)")->required();
    run->add_option("images", args.image_files,
                    "Image files (PNG, JPEG, BMP, GIF, TGA, PNM) to classify, each converted to the model's channels "
                    "and resized to its input; without them, the labelled --input or --data images")
        ->check(CLI::ExistingFile);
    run->add_option("--show", args.show, "Print the predictions of the first N labelled images");
    add_runtime_inputs(run, args.inputs);
    return run;
}

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Softmax probability of the top class, computed in double from the logits.
double top_probability(const std::vector<float> & logits, size_t top) {
    double sum = 0.0;
    for (float l : logits) sum += std::exp(static_cast<double>(l) - logits[top]);
    return 1.0 / sum;
}

}  // namespace

int run_command(const RunArgs & args) {
    const runtime::PackedModel model = runtime::PackedModel::load(args.model);
        data::ImageDataset images;
    const bool files = !args.image_files.empty();
    if (files) {
        images.channels = model.in_chans();
        images.height = images.width = model.img_size();
        for (const auto & path : args.image_files) {
            const std::vector<uint8_t> pixels = data::read_image_file(path, model.in_chans(), model.img_size(), model.img_size());
            images.pixels.insert(images.pixels.end(), pixels.begin(), pixels.end());
            images.labels.push_back(0);  // unlabelled: no accuracy
        }
    } else {
        images = runtime_images(args.inputs, model);
        check_image_shape(model, images);
    }
    const auto start = std::chrono::steady_clock::now();
    const auto logits = model.predict(images.pixels.data(), images.size(), args.inputs.threads);
    const double seconds = seconds_since(start);
    int64_t correct = 0;
    for (int64_t i = 0; i < images.size(); ++i) {
        const auto & l = logits[static_cast<size_t>(i)];
        const auto top = static_cast<size_t>(std::max_element(l.begin(), l.end()) - l.begin());
        const int32_t label = images.labels[static_cast<size_t>(i)];
        correct += static_cast<int32_t>(top) == label;
        if (files) {
            std::printf("%s: %s (class %zu, p %.3f)\n", args.image_files[static_cast<size_t>(i)].c_str(),
                        model.class_name(static_cast<int64_t>(top)).c_str(), top, top_probability(l, top));
        } else if (i < args.show) {
            std::printf("%lld: %s (class %zu), label %s\n", static_cast<long long>(i), model.class_name(static_cast<int64_t>(top)).c_str(),
                        top, model.class_name(label).c_str());
        }
    }
    std::printf("model: %s (%s, %s), %.3f MB, ISA %s\n", args.model.c_str(), model.name().c_str(), model.method().c_str(),
                model.file_bytes() / 1e6, runtime::isa_name(runtime::selected_isa()));
    std::printf("images: %lld\n", static_cast<long long>(images.size()));
    if (!files) std::printf("accuracy: %.2f%%\n", 100.0 * correct / std::max<int64_t>(1, images.size()));
    std::printf("time: %.3f s (%.1f images/s)\n", seconds, images.size() / seconds);
    return 0;
}

int bench_packed(const std::string & model_path, const std::vector<int64_t> & batches, const std::vector<int> & threads,
                 double min_seconds) {
    const runtime::PackedModel model = runtime::PackedModel::load(model_path);
        std::printf("model: %s (%s, %s), %.3f MB, ISA %s\n", model_path.c_str(), model.name().c_str(), model.method().c_str(),
                model.file_bytes() / 1e6, runtime::isa_name(runtime::selected_isa()));
    std::printf("%6s %8s %12s %12s\n", "batch", "threads", "ms/batch", "images/s");
    std::mt19937_64 rng(0);
    for (const int64_t batch : batches) {
        std::vector<uint8_t> pixels(static_cast<size_t>(batch * model.in_chans() * model.img_size() * model.img_size()));
        for (uint8_t & p : pixels) p = static_cast<uint8_t>(rng());
        for (const int requested : threads) {
            const int n = requested > 0 ? requested : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
            model.predict(pixels.data(), batch, n);  // warm-up
            std::vector<double> times;
            const auto start = std::chrono::steady_clock::now();
            while (times.size() < 3 || std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < min_seconds) {
                const auto t0 = std::chrono::steady_clock::now();
                model.predict(pixels.data(), batch, n);
                times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
            }
            std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
            const double ms = times[times.size() / 2];
            std::printf("%6lld %8d %12.3f %12.1f\n", static_cast<long long>(batch), n, ms, batch * 1000.0 / ms);
        }
    }
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    std::printf("peak resident memory: %.1f MB\n", usage.ru_maxrss / 1024.0);  // ru_maxrss is in KiB on Linux
    return 0;
}

int info_packed(const std::string & model_path) {
    const runtime::PackedModel model = runtime::PackedModel::load(model_path);
    std::printf("model: %s, method %s, file %.3f MB\n", model.name().c_str(), model.method().c_str(), model.file_bytes() / 1e6);
    std::printf("%s\n", model.describe().c_str());
    // Quantized sites, grouped by their name within a block (and, on a Swin, within a stage).
    static const std::regex stage_or_block_index(R"(^(layers|blocks)\.\d+|(\.blocks)\.\d+)");
    std::map<std::string, std::map<std::string, int>> by_site;
    for (const auto & [site, quantizer] : model.site_quantizers()) {
        ++by_site[std::regex_replace(site, stage_or_block_index, "$1$2.*")][quantizer];
    }
    std::printf("quantized sites:\n");
    for (const auto & [site, quantizers] : by_site) {
        for (const auto & [quantizer, count] : quantizers) std::printf("  %-36s %-18s x%d\n", site.c_str(), quantizer.c_str(), count);
    }
    return 0;
}

}  // namespace bitvit::cli
