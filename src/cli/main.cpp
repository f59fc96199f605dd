// bitvit command line: a thin layer over the training library. Each subcommand parses its flags and
// calls one library entry point; all behaviour lives (and is tested) in the libraries.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>

#include "runtime/cpu-features.h"
#include "cli/app.h"
#include "cli/runtime-commands.h"
#include "runtime/model.h"
#include "spec/quantizers.h"
#include "train/bench.h"
#include "train/checkpoint.h"
#include "train/distributed.h"
#include "train/export.h"
#include "train/import.h"
#include "train/ops.h"
#include "train/trainer.h"
#include "train/verify.h"

namespace fs = std::filesystem;
using namespace bitvit;

namespace {

void print_eval(const EvalResult & r, const std::vector<std::string> & class_names) {
    std::printf("images: %lld\naccuracy: %.2f%%\nloss: %.4f\nper-class accuracy:\n", static_cast<long long>(r.count),
                100 * r.accuracy, r.loss);
    for (size_t c = 0; c < r.per_class_accuracy.size(); ++c) {
        const std::string name = c < class_names.size() ? class_names[c] : std::to_string(c);
        std::printf("  %2zu %-14s %6.2f%%  (%lld images)\n", c, name.c_str(), 100 * r.per_class_accuracy[c],
                    static_cast<long long>(r.per_class_count[c]));
    }
}

struct TrainArgs {
    std::string recipe, out, resume;
    std::vector<std::string> sets;
    // Shorthands for common overrides; each becomes a --set.
    std::string model, data, data_root, fp_checkpoint;
    int64_t epochs = 0, batch_size = 0, train_subset = -1, test_subset = -1, threads = -1;
    double lr = 0;
    int64_t seed = -1;
    bool allow_inexact_resume = false;
    int64_t nproc = 0;          // local ranks to start; 0 = train.data_parallel's
    int64_t stop_after = -1;    // stop (resumably) once this many epochs are done
    double rank_timeout = 300;  // seconds a collective waits for a silent rank
};

char ** g_argv = nullptr;  // main()'s, for the local-rank launcher to start this program again

// A path relative to the source tree: as given when it exists from the working directory, else under
// the tree the executable was built in (build/bitvit -> ..); "" when neither exists.
std::string in_source_tree(const std::string & relative) {
    if (fs::exists(relative)) return relative;
    std::error_code ec;
    const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    const fs::path beside = exe.parent_path().parent_path() / relative;
    return !ec && fs::exists(beside) ? beside.string() : "";
}

std::vector<std::string> overrides_of(const TrainArgs & a) {
    std::vector<std::string> o;
    if (!a.model.empty()) o.push_back("model.name=\"" + a.model + "\"");
    if (!a.data.empty()) o.push_back("data.name=\"" + a.data + "\"");
    if (!a.data_root.empty()) o.push_back("data.root=\"" + a.data_root + "\"");
    if (!a.fp_checkpoint.empty()) o.push_back("train.fp_checkpoint=\"" + a.fp_checkpoint + "\"");
    if (a.epochs > 0) o.push_back("train.epochs=" + std::to_string(a.epochs));
    if (a.batch_size > 0) o.push_back("train.batch_size=" + std::to_string(a.batch_size));
    if (a.train_subset >= 0) o.push_back("data.train_subset=" + std::to_string(a.train_subset));
    if (a.test_subset >= 0) o.push_back("data.test_subset=" + std::to_string(a.test_subset));
    if (a.threads >= 0) o.push_back("train.threads=" + std::to_string(a.threads));
    if (a.seed >= 0) o.push_back("train.seed=" + std::to_string(a.seed));
    if (a.lr > 0) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "optim.lr=%.17g", a.lr);
        o.push_back(buf);
    }
    o.insert(o.end(), a.sets.begin(), a.sets.end());
    return o;
}

TrainConfig fresh_config(const TrainArgs & a, int64_t ranks) {
    std::vector<std::string> overrides = overrides_of(a);
    if (ranks > 0) overrides.push_back("train.data_parallel=" + std::to_string(ranks));
    return a.recipe.empty() ? parse_config("", "defaults", overrides) : load_config_file(a.recipe, overrides);
}

// One process's part of `bitvit train`: the whole run, or one rank of it.
int train_here(const TrainArgs & a, ProcessGroup * group) {
    const bool prints = !group || group->rank() == 0;
    std::unique_ptr<Trainer> trainer;
    if (!a.resume.empty()) {
        trainer = Trainer::resume(a.resume, overrides_of(a), load_train_test, a.allow_inexact_resume, group);
        if (prints) std::fprintf(stderr, "resuming %s after epoch %lld\n", a.resume.c_str(), static_cast<long long>(trainer->epochs_done()));
    } else {
        // Under a launcher its world size is the run's rank count; else --nproc's, else the recipe's.
        TrainConfig config = fresh_config(a, group ? group->world_size() : a.nproc);
        // The shipped teacher, the default train.fp_checkpoint, is found from any working directory.
        if (config.train.fp_checkpoint == TrainSection{}.fp_checkpoint) {
            const std::string teacher = in_source_tree(config.train.fp_checkpoint);
            if (!teacher.empty()) config.train.fp_checkpoint = teacher;
        }
        trainer = Trainer::start(config, a.out, [&](const TrainConfig & c) {
            auto data = load_train_test(c);
            if (prints) std::fprintf(stderr, "training %s on %s: %lld train / %lld test images, %lld epoch%s -> %s\n", c.model.name.c_str(),
                         c.data.name.c_str(), static_cast<long long>(data.train.size()), static_cast<long long>(data.test.size()),
                         static_cast<long long>(c.total_epochs()), c.total_epochs() == 1 ? "" : "s", a.out.c_str());
            return data;
        }, group);
    }
    trainer->fit(a.stop_after);
    if (trainer->was_interrupted()) return 130;  // the checkpoint and the --resume command are already written
    if (!prints) return 0;
    std::printf("checkpoint: %s\n", trainer->checkpoint_path().c_str());
    if (trainer->last_eval().count == 0) {
        std::printf("the run was already complete (%lld epochs): nothing to train; `bitvit eval %s` evaluates it\n",
                    static_cast<long long>(trainer->epochs_done()), trainer->checkpoint_path().c_str());
        return 0;
    }
    print_eval(trainer->last_eval(), trainer->data().test.class_names);
    return 0;
}

// The ranks a run asks for when no launcher started this process: --nproc, else the run's
// train.data_parallel (the stored one when resuming).
int64_t ranks_asked_for(const TrainArgs & a) {
    if (a.resume.empty()) return a.nproc > 0 ? a.nproc : fresh_config(a, 0).train.data_parallel;
    const std::string path = (fs::path(a.resume) / "checkpoint.pt").string();
    const int64_t stored = read_checkpoint_state(path).config.train.data_parallel;
    if (a.nproc > 0 && a.nproc != stored) {
        throw ConfigError(a.resume + " was trained on " + std::to_string(stored) + " rank(s) (train.data_parallel) and cannot continue on " +
                          std::to_string(a.nproc) + ": resume it with --nproc " + std::to_string(stored));
    }
    return stored;
}

int run_train(const TrainArgs & a) {
    const RankEnv env = rank_env_from_environment();
    if (!env.from_environment) {
        const int64_t ranks = ranks_asked_for(a);
        if (ranks > 1) return launch_local_ranks(static_cast<int>(ranks), g_argv, std::chrono::seconds(10));
        return train_here(a, nullptr);
    }
    const auto timeout = std::chrono::milliseconds(std::llround(a.rank_timeout * 1000));
    ProcessGroup group(env, timeout);
    try {
        return train_here(a, &group);
    } catch (const DistributedError & e) {
        group.report_failure(e.what());
        throw;
    } catch (const std::exception & e) {
        group.report_failure(e.what());
        if (env.rank == 0) throw;
        throw std::runtime_error("rank " + std::to_string(env.rank) + ": " + e.what());
    }
}

int run_eval(const std::string & checkpoint, const std::string & data_name, const std::string & data_root,
             const std::string & split, int64_t subset, int64_t batch_size) {
    LoadedModel loaded = load_model(checkpoint);
    TrainConfig & c = loaded.state.config;
    if (!data_name.empty()) c.data.name = data_name;
    if (!data_root.empty()) c.data.root = data_root;
    data::DatasetSpec spec{c.data.name, c.data.root, loaded.state.shape.img_size, loaded.state.shape.in_chans, c.data.crop_pct};
    auto images = data::load_dataset(spec, split == "train" ? data::Split::train : data::Split::test);
    if (images.num_classes() > loaded.state.shape.num_classes) {
        throw std::invalid_argument("data set has " + std::to_string(images.num_classes()) +
                                    " classes but the model predicts " + std::to_string(loaded.state.shape.num_classes));
    }
    if (subset > 0) images = data::select(images, data::stratified_subset(images.labels, images.num_classes(), subset, 0));
    const EvalResult r = evaluate(loaded.model, images, make_preprocess(c.data), batch_size);
    std::printf("checkpoint: %s (epoch %lld)\ndata: %s %s\n", checkpoint.c_str(),
                static_cast<long long>(loaded.state.epoch), c.data.name.c_str(), split.c_str());
    print_eval(r, loaded.state.class_names);
    return 0;
}

int run_info(const std::string & what, int64_t classes, bool list_sites) {
    std::string source = "architecture";
    VisionModel model{nullptr};
    if (fs::exists(what)) {
        LoadedModel loaded = load_model(what);
        model = loaded.model;
        source = "checkpoint (epoch " + std::to_string(loaded.state.epoch) + ", " + loaded.state.config.data.name + ")";
    } else {
        ModelSection m;
        m.name = what;
        DataShape shape = is_swin(m) ? registered_shape(m) : DataShape{};
        if (is_swin(m)) {
            if (classes > 0) shape.num_classes = classes;
            model = build_model(m, shape, BlockVariant{});
        } else {
            DeitConfig config = deit_config(what);  // a distilled name is registered for DeiT only
            if (classes > 0) config.num_classes = classes;
            model = VisionModel(std::make_shared<DeitImpl>(config));
        }
    }
    const int64_t params = count_parameters(*model);
    std::printf("model: %s (%s)\n%s", model->name().c_str(), source.c_str(), model->describe().c_str());
    std::printf("parameters: %lld (%.3f M)\nFP32 size: %.3f MB\n", static_cast<long long>(params), params / 1e6,
                params * 4 / 1e6);
    if (list_sites) {
        std::printf("sites:\n");
        for (const auto & s : model->site_names()) std::printf("  %s\n", s.c_str());
    }
    return 0;
}

// The model `bitvit ops` accounts for — a recipe's stage (on its own or another architecture), a
// checkpoint, or a plain architecture — and the full-precision model of the same architecture.
struct OpsModels {
    VisionModel quantized{nullptr}, fp{nullptr};
};

OpsModels ops_models(const std::string & target, const std::string & arch, int64_t stage, int64_t classes) {
    const bool is_recipe = fs::path(target).extension() == ".toml";
    TrainConfig config;
    DataShape shape;
    int64_t index = stage;
    if (!is_recipe && fs::exists(target)) {
        const CheckpointState state = read_checkpoint_state(target);
        config = state.config;
        shape = state.shape;
        index = state.stage;
    } else {
        // The architecture is an override, so a recipe's [stage.swin] tables apply to a Swin.
        const std::string name = arch.empty() ? (is_recipe ? "" : target) : arch;
        const std::vector<std::string> sets = name.empty() ? std::vector<std::string>{} : std::vector<std::string>{"model.name=\"" + name + "\""};
        config = is_recipe ? load_config_file(target, sets) : parse_config("", "defaults", sets);
        shape = registered_shape(config.model);
        if (classes > 0) shape.num_classes = classes;
        if (index < 0) index = static_cast<int64_t>(config.stages.size()) - 1;
    }
    if (index >= static_cast<int64_t>(config.stages.size())) {
        throw std::invalid_argument(target + " has " + std::to_string(config.stages.size()) + " stages");
    }
    VisionModel quantized = is_recipe || !fs::exists(target) ? build_stage_model(config, shape, static_cast<size_t>(index))
                                                              : load_model(target).model;
    return {quantized, build_model(config.model, shape, config.stages.at(static_cast<size_t>(index)).variant)};
}

// "layers.1.blocks.0.attn.qkv" -> "layers.*.blocks.*.attn.qkv": the row that sums a layer over blocks.
std::string every_block(const std::string & layer) {
    std::string out;
    size_t start = 0;
    while (start <= layer.size()) {
        const size_t dot = std::min(layer.find('.', start), layer.size());
        const std::string part = layer.substr(start, dot - start);
        const bool number = !part.empty() && part.find_first_not_of("0123456789") == std::string::npos;
        out += (out.empty() ? "" : ".") + (number ? std::string("*") : part);
        start = dot + 1;
    }
    return out;
}

int run_ops(const std::string & target, const std::string & arch, int64_t stage, int64_t classes, bool per_block) {
    const OpsModels models = ops_models(target, arch, stage, classes);
    const OpsReport r = count_ops(models.quantized);
    const OpsReport full = count_ops(models.fp);
    std::printf("model: %s (%s)\n", models.quantized->name().c_str(), target.c_str());
    std::printf("%-24s %-12s %12s %12s %12s %12s\n", "layer", "precision", "MACs (M)", "FLOPs (M)", "BOPs (M)", "OPs (M)");
    // Rows of the same layer in every block are summed unless --per-block.
    std::vector<std::pair<std::string, LayerCost>> rows;
    for (const auto & l : r.layers) {
        std::string key = l.name;
        if (!per_block) key = every_block(key);
        auto it = std::find_if(rows.begin(), rows.end(), [&](const auto & row) { return row.first == key && row.second.precision == l.precision; });
        if (it == rows.end()) {
            rows.emplace_back(key, l);
        } else {
            it->second.macs += l.macs;
            it->second.flops += l.flops;
            it->second.bops += l.bops;
        }
    }
    for (const auto & [key, l] : rows) {
        std::printf("%-24s %-12s %12.2f %12.2f %12.2f %12.2f\n", key.c_str(), l.precision.c_str(), l.macs / 1e6,
                    l.flops / 1e6, l.bops / 1e6, l.ops() / 1e6);
    }
    std::printf("total: FLOPs %.6f G + BOPs %.6f G / 64 = OPs %.6f G (full precision %.6f G, %.1fx fewer)\n",
                r.flops / 1e9, r.bops / 1e9, r.ops() / 1e9, full.ops() / 1e9, full.ops() / r.ops());
    std::printf("size: packed %.3f MB (%.3f MB of it FP32: unquantized layers, norms, biases), FP32 %.3f MB (%.1fx smaller)\n",
                r.packed_bytes / 1e6, r.fp32_part_bytes / 1e6, r.fp32_bytes / 1e6, r.fp32_bytes / r.packed_bytes);
    return 0;
}

// The method a checkpoint's run directory names (runs/bivit/checkpoint.pt -> "bivit").
std::string method_of(const std::string & checkpoint) {
    const std::string dir = fs::absolute(checkpoint).parent_path().filename().string();
    return dir.empty() ? "unknown" : dir;
}

int run_export(const std::string & checkpoint, const std::string & out, std::string method, bool half_storage, bool weights_only,
               bool timm) {
    if (timm) {
        const size_t n = export_timm(checkpoint, out);
        std::printf("wrote %s: %zu tensors under timm's names (method tensors under \"bitvit.\"), recipe in the metadata\n",
                    out.c_str(), n);
        return 0;
    }
    LoadedModel loaded = load_model(checkpoint);
    if (weights_only) {
        // A checkpoint without the optimiser's state: what a teacher or a stage's init needs, a third
        // of the size; it cannot be resumed.
        save_checkpoint(out, loaded.state, *loaded.model, nullptr);
        std::printf("wrote %s: %s's model weights and config (epoch %lld), without optimiser state\n", out.c_str(),
                    checkpoint.c_str(), static_cast<long long>(loaded.state.epoch));
        return 0;
    }
    if (method.empty()) method = method_of(checkpoint);
    const DataSection & d = loaded.state.config.data;
    const ExportSummary s = export_packed(loaded.model, ExportOptions{method, d.mean, d.std, half_storage, loaded.state.class_names}, out);
    std::printf("exported %s -> %s (method %s)\n", checkpoint.c_str(), out.c_str(), method.c_str());
    std::printf("packed weight sites: %lld\nfile: %.3f MB, FP32 parameters: %.3f MB (%.1fx smaller)\n",
                static_cast<long long>(s.packed_sites), s.file_bytes / 1e6, s.fp32_bytes / 1e6,
                static_cast<double>(s.fp32_bytes) / s.file_bytes);
    return 0;
}

int run_verify(const std::string & checkpoint, const std::string & model_path, const cli::RuntimeInputs & inputs,
               int64_t block_images) {
    LoadedModel loaded = load_model(checkpoint);
    const VisionModel model = loaded.model;
    const runtime::PackedModel packed = runtime::PackedModel::load(model_path);
    const data::ImageDataset images = cli::runtime_images(inputs, packed);
    const int threads = inputs.threads;
    cli::check_image_shape(packed, images);
    const Preprocess pre = make_preprocess(loaded.state.config.data);
    if (block_images > 0) {
        const std::vector<BlockDivergence> blocks = block_divergence(model, packed, images, pre, block_images);
        std::printf("%-7s %14s %14s %14s   (first %lld images, runtime - LibTorch after each block)\n", "block",
                    "max |diff|", "mean |diff|", "mean |value|", static_cast<long long>(std::min(block_images, images.size())));
        for (size_t b = 0; b < blocks.size(); ++b) {
            std::printf("%-7zu %14.4g %14.4g %14.4g\n", b, blocks[b].max_abs, blocks[b].mean_abs, blocks[b].mean_ref);
        }
    }
    const VerifyReport r = verify_packed(model, packed, images, pre, 250, threads);
    std::printf("images: %lld\ntop-1 agreement: %.2f%% (%lld differ)\nmax |logit difference|: %.3g\n",
                static_cast<long long>(r.count), 100 * r.agreement(), static_cast<long long>(r.count - r.agree),
                r.max_abs_logit_diff);
    std::printf("accuracy: LibTorch %.2f%%, runtime %.2f%%\n", 100 * r.torch_accuracy, 100 * r.runtime_accuracy);
    return 0;
}

// The recipe `bench` uses when none is given: recipes/bnn.toml in the working directory or the source tree.
std::string default_bench_recipe() {
    const std::string found = in_source_tree("recipes/bnn.toml");
    if (!found.empty()) return found;
    throw std::invalid_argument("bench needs --recipe FILE (whose last stage's quantizers the runtime model gets) or --packed FILE: "
                                "the default recipes/bnn.toml is neither under the current directory nor beside the program");
}

int run_bench(ModelBenchOptions o, const std::string & json_path) {
    if (o.recipe.empty()) o.recipe = default_bench_recipe();
    const ModelBenchReport r = bench_models(o);
    std::printf("model: %s, method %s\npacked file: %.3f MB, FP32 parameters: %.3f MB (%.1fx smaller)\n", r.model.c_str(),
                r.method.c_str(), r.packed_bytes / 1e6, r.fp32_bytes / 1e6, static_cast<double>(r.fp32_bytes) / r.packed_bytes);
    std::printf("%d interleaved rounds; ms/batch is the median round, spread the range of the rounds\n", r.rounds);
    std::printf("%-26s %6s %8s %12s %8s %12s\n", "engine", "batch", "threads", "ms/batch", "spread", "images/s");
    for (const auto & row : r.rows) {
        std::printf("%-26s %6lld %8d %12.3f %7.0f%% %12.1f\n", row.engine.c_str(), static_cast<long long>(row.batch), row.threads,
                    row.ms, 100 * row.spread(), row.images_per_sec());
    }
    for (const auto & q : r.ratios) {
        std::printf("batch %lld: runtime (%d threads) %.2fx %s (%d threads), rounds %.2f-%.2fx%s\n", static_cast<long long>(q.batch),
                    q.runtime_threads, q.median, q.versus.c_str(), q.versus_threads, q.min, q.max,
                    q.noisy ? "  [noisy: the rounds disagree; rerun on a quiet machine]" : "");
    }
    if (!json_path.empty()) {
        write_file_atomic(json_path, bench_report_json(r) + "\n");
        std::printf("results: %s\n", json_path.c_str());
    }
    return 0;
}

int print_quantizers(bool markdown) {
    if (markdown) {
        std::printf("%s", spec::quantizer_table_markdown().c_str());
        return 0;
    }
    std::printf("%-17s %-7s %-44s %s\n", "quantizer", "family", "sites", "source");
    for (const auto & row : spec::quantizer_table()) {
        std::printf("%-17s %-7s %-44s %s\n", row.name, spec::family_name(row.family), spec::site_classes(row.sites).c_str(), row.source);
    }
    return 0;
}

// A command's action, with LibTorch's errors reported without their C++ backtrace.
std::function<int()> action(std::function<int()> fn) {
    return [fn] {
        try {
            return fn();
        } catch (const c10::Error & e) {
            throw std::runtime_error(e.what_without_backtrace());
        }
    };
}

cli::Command add_train(CLI::App & app) {
    auto t = std::make_shared<TrainArgs>();
    auto * train = app.add_subcommand("train", "Train a model from a recipe; checkpoints every epoch into --out");
    train->add_option("-r,--recipe", t->recipe, "Recipe file (TOML); without it the built-in defaults are used (`bitvit config` prints them)")
        ->check(CLI::ExistingFile);
    train->add_option("-o,--out", t->out, "Run directory: checkpoint.pt, config.toml, metrics.jsonl")->default_val("runs/latest");
    train->add_option("--resume", t->resume, "Continue the run in this directory from its checkpoint (Ctrl-C stops a run resumably)")
        ->check(CLI::ExistingDirectory);
    train->add_option("--set", t->sets,
                      "Override a recipe setting: section.key=value, repeatable (e.g. optim.lr=5e-4; train.epoch_scale=0.1 "
                      "multiplies every stage's epochs and warm-up, for a short run of a long recipe)");
    train->add_option("--model", t->model, "Architecture name (model.name), see `bitvit info --list`");
    train->add_option("--data", t->data, "Data set: fashion-mnist, mnist, cifar10, cifar100, imagefolder (data.name)");
    train->add_option("--data-root", t->data_root, "Data set directory (data.root)");
    train->add_option("--fp-checkpoint", t->fp_checkpoint,
                      "Full-precision checkpoint that staged recipes start from and distil from (train.fp_checkpoint)");
    train->add_option("--epochs", t->epochs, "Total epochs of a recipe without stages (train.epochs); 0 = the recipe's");
    train->add_option("--batch-size", t->batch_size, "Batch size (train.batch_size); 0 = the recipe's");
    train->add_option("--lr", t->lr, "Peak learning rate (optim.lr); 0 = the recipe's");
    train->add_option("--train-subset", t->train_subset, "Stratified, seeded training subset of N images; 0 = all, -1 = the recipe's");
    train->add_option("--test-subset", t->test_subset, "Stratified test subset of N images; 0 = all, -1 = the recipe's");
    train->add_option("--seed", t->seed, "Seed for initialisation, data order and augmentation (train.seed); -1 = the recipe's");
    train->add_option("--threads", t->threads, "LibTorch threads (train.threads); 0 = all cores, -1 = the recipe's");
    train->add_flag("--allow-inexact-resume", t->allow_inexact_resume,
                    "With --resume: accept overrides that change what the run trains (the result then differs from an "
                    "uninterrupted run)");
    train->add_option("--nproc", t->nproc,
                      "Data-parallel ranks to start on this host, one process each (sets train.data_parallel); 0 = the "
                      "run's train.data_parallel. Under a launcher that sets RANK and WORLD_SIZE (torchrun), each process is "
                      "one rank and WORLD_SIZE decides (docs/training.md)")
        ->check(CLI::Range(0, 4096));
    train->add_option("--stop-after", t->stop_after, "Stop, resumably, once this many epochs (over all stages) are done; -1 = train to the end")
        ->check(CLI::Range(-1, 1000000));
    train->add_option("--rank-timeout", t->rank_timeout,
                      "Seconds a rank waits for the others (to meet, and in each collective) before it stops with an error "
                      "naming the silent rank")
        ->check(CLI::Range(1.0, 86400.0));
    train->get_option("--recipe")->excludes(train->get_option("--resume"));
    return {train, action([t] { return run_train(*t); })};
}

cli::Command add_eval(CLI::App & app) {
    struct Args {
        std::string checkpoint, data, data_root, split = "test";
        int64_t subset = 0, batch = 500;
    };
    auto a = std::make_shared<Args>();
    auto * eval = app.add_subcommand("eval", "Accuracy and per-class accuracy of a checkpoint on a data set");
    eval->add_option("checkpoint", a->checkpoint, "Checkpoint file (a run's checkpoint.pt)")->required();
    eval->add_option("--data", a->data, "Data set name (default: the one the model was trained on)");
    eval->add_option("--data-root", a->data_root, "Data set directory (default: the training run's)");
    eval->add_option("--split", a->split, "test or train")->check(CLI::IsMember({"test", "train"}));
    eval->add_option("--subset", a->subset, "Evaluate on a stratified subset of N images; 0 = all");
    eval->add_option("--batch-size", a->batch, "Evaluation batch size")->check(CLI::PositiveNumber);
    return {eval, action([a] { return run_eval(a->checkpoint, a->data, a->data_root, a->split, a->subset, a->batch); })};
}

cli::Command add_info(CLI::App & app) {
    struct Args {
        std::string what;
        int64_t classes = 0;
        bool list = false, sites = false;
    };
    auto a = std::make_shared<Args>();
    auto * info = app.add_subcommand("info", "Architecture, parameter count and size of a named model or a checkpoint");
    info->add_option("model", a->what, "Architecture name or checkpoint file (for a packed model: bitvit-rt info)");
    info->add_option("--classes", a->classes, "Number of classes for a named architecture; 0 = its own");
    info->add_flag("--list", a->list, "List the known architecture names");
    info->add_flag("--sites", a->sites, "List the model's quantization sites");
    return {info, action([a] {
                if (a->list) {
                    for (const auto & n : deit_config_names()) std::printf("%s\n", n.c_str());
                    for (const auto & n : swin_config_names()) std::printf("%s\n", n.c_str());
                    std::printf("runtime ISA on this CPU: %s\n", runtime::isa_name(runtime::best_supported_isa()));
                    return 0;
                }
                if (a->what.empty()) throw std::invalid_argument("info needs a model name or checkpoint (or --list)");
                return run_info(a->what, a->classes, a->sites);
            })};
}

cli::Command add_ops(CLI::App & app) {
    struct Args {
        std::string target, arch;
        int64_t stage = -1, classes = 0;
        bool per_block = false;
    };
    auto a = std::make_shared<Args>();
    auto * ops = app.add_subcommand("ops", "Per-layer precision, MACs, FLOPs, BOPs, OPs = FLOPs + BOPs/64, and packed size");
    ops->add_option("target", a->target, "Recipe (.toml), checkpoint, or architecture name")->required();
    ops->add_option("--model", a->arch, "Account for this architecture instead of the recipe's (e.g. deit_tiny_patch16_224)");
    ops->add_option("--stage", a->stage, "Recipe stage index; -1 = the last");
    ops->add_option("--classes", a->classes, "Number of classes; 0 = the architecture's");
    ops->add_flag("--per-block", a->per_block, "One row per block instead of summing over blocks");
    return {ops, action([a] { return run_ops(a->target, a->arch, a->stage, a->classes, a->per_block); })};
}

cli::Command add_export(CLI::App & app) {
    struct Args {
        std::string checkpoint, out, method;
        bool half = false, weights_only = false, timm = false;
    };
    auto a = std::make_shared<Args>();
    auto * exp = app.add_subcommand("export", "Pack a checkpoint into a runtime model file (safetensors, docs/format.md)");
    exp->add_option("checkpoint", a->checkpoint, "Checkpoint file (a run's checkpoint.pt)")->required();
    exp->add_option("-o,--out", a->out, "Packed model file to write (atomically)")->required();
    exp->add_option("--method", a->method, "Method name for the metadata (default: the run directory's name)");
    exp->add_flag("--half", a->half,
                  "Store full-precision tensors and weight scales as F16 (format version 2): a smaller file whose "
                  "answers are close to, not bit-identical with, the trained model's (check with bitvit verify)");
    exp->add_flag("--weights-only", a->weights_only,
                  "Write a checkpoint of the model's weights and config instead of a packed model (no optimiser state: "
                  "for teachers and stage inits, not for --resume)");
    exp->add_flag("--timm", a->timm,
                  "Write timm-named safetensors instead (the latent FP weights; quantizer tensors under \"bitvit.\"; the "
                  "recipe in the metadata), for Python tools");
    exp->get_option("--half")->excludes(exp->get_option("--weights-only"));
    exp->get_option("--timm")->excludes(exp->get_option("--weights-only"))->excludes(exp->get_option("--half"));
    return {exp, action([a] { return run_export(a->checkpoint, a->out, a->method, a->half, a->weights_only, a->timm); })};
}

cli::Command add_import(CLI::App & app) {
    struct Args {
        std::string file, out;
        ImportOptions options;
    };
    auto a = std::make_shared<Args>();
    auto * imp = app.add_subcommand("import", "A timm / DeiT state dict (safetensors or torch.save .pth) as a bitvit checkpoint, "
                                              "adapted to another input size, channel or class count");
    imp->add_option("file", a->file, "State dict file: .safetensors, or .pth/.pt written by torch.save")->required();
    imp->add_option("-o,--out", a->out, "Checkpoint to write (atomically)")->required();
    imp->add_option("--model", a->options.model, "Architecture the file must match (e.g. deit_small_patch16_224); default: inferred");
    imp->add_option("--num-heads", a->options.num_heads, "Attention heads, for a width that is not a registered DeiT's");
    imp->add_option("--img-size", a->options.img_size, "Input size to adapt to (position embedding resampled); 0 = the file's");
    imp->add_option("--window-size", a->options.window_size,
                    "Swin: window to adapt to (relative position bias tables resampled); 0 = the file's");
    imp->add_option("--in-chans", a->options.in_chans, "Input channels to adapt to (timm's adapt_input_conv); 0 = the file's");
    imp->add_option("--num-classes", a->options.num_classes, "Classes: another count re-initialises the classifier; 0 = the file's");
    imp->add_flag("--drop-distillation", a->options.drop_distillation, "Import a distilled DeiT as a plain one");
    imp->add_option("--allow-missing", a->options.allow_missing, "Name prefixes that may be absent and keep a fresh init (e.g. head)")
        ->delimiter(',');
    imp->add_option("--mean", a->options.mean, "Input normalisation mean per channel (default ImageNet's)")->delimiter(',');
    imp->add_option("--std", a->options.std, "Input normalisation std per channel (default ImageNet's)")->delimiter(',');
    imp->add_option("--seed", a->options.seed, "Seed of whatever is re-initialised");
    return {imp, action([a] {
                const ImportSummary s = import_checkpoint(a->file, a->options, a->out);
                std::printf("imported %s%s -> %s\n", a->file.c_str(), s.found_at.empty() ? "" : (" ('" + s.found_at + "')").c_str(),
                            a->out.c_str());
                for (const auto & line : s.adaptations) std::printf("  adapted: %s\n", line.c_str());
                std::printf("model %s:\n%s", s.model->name().c_str(), s.model->describe().c_str());
                std::printf("binarize it with any recipe (it is the teacher and the start point):\n  bitvit train --recipe recipes/bivit.toml "
                            "--fp-checkpoint %s", a->out.c_str());
                for (const auto & set : train_overrides(a->out)) std::printf(" --set '%s'", set.c_str());
                std::printf("\n");
                return 0;
            })};
}

cli::Command add_verify(CLI::App & app) {
    struct Args {
        std::string checkpoint, model;
        cli::RuntimeInputs inputs;
        int64_t blocks = 0;
    };
    auto a = std::make_shared<Args>();
    auto * ver = app.add_subcommand("verify", "Compare a packed model with the checkpoint it came from: agreement, logits, accuracy");
    ver->add_option("checkpoint", a->checkpoint, "Checkpoint file (a run's checkpoint.pt)")->required();
    ver->add_option("model", a->model, "Packed model file (from bitvit export)")->required();
    cli::add_runtime_inputs(ver, a->inputs);
    ver->add_option("--blocks", a->blocks, "Also compare each block's output tokens on the first N images (where does the runtime depart?)");
    return {ver, action([a] { return run_verify(a->checkpoint, a->model, a->inputs, a->blocks); })};
}

cli::Command add_bench(CLI::App & app) {
    auto o = std::make_shared<ModelBenchOptions>();
    auto json = std::make_shared<std::string>();
    auto * bench = app.add_subcommand("bench", "Speed of the bit-wise runtime against LibTorch FP32 and BF16 on one architecture, "
                                               "in interleaved rounds: median, spread and each engine at its best thread count");
    bench->add_option("--recipe", o->recipe, "Recipe whose last stage's quantizers the runtime model gets (default: recipes/bnn.toml "
                                             "of the source tree)")->check(CLI::ExistingFile);
    bench->add_option("--model", o->model, "Architecture (default: the recipe's), e.g. deit_small_patch16_224");
    bench->add_option("--packed", o->packed, "Time this packed model instead of a random-weight export")->check(CLI::ExistingFile);
    bench->add_option("--batch", o->batches, "Batch sizes, comma-separated")->delimiter(',');
    bench->add_option("--threads", o->threads, "Thread counts, comma-separated (0 = all cores)")->delimiter(',');
    bench->add_option("--min-seconds", o->min_seconds, "Time per engine, thread count and round");
    bench->add_option("--rounds", o->rounds, "Interleaved rounds per measurement (the median is reported)")->check(CLI::PositiveNumber);
    bench->add_option("--save-packed", o->save_packed, "Keep the exported random-weight model in this file");
    bench->add_option("--json", *json, "Also write the results as JSON to this file");
    bench->add_flag("--half", o->half_storage, "Export with F16 full-precision tensors and scales (bitvit export --half)");
    return {bench, action([o, json] { return run_bench(*o, *json); })};
}

cli::Command add_config(CLI::App & app) {
    struct Args {
        std::string recipe;
        std::vector<std::string> sets;
    };
    auto a = std::make_shared<Args>();
    auto * config = app.add_subcommand("config", "Print a recipe as training resolves it: bases merged, stages expanded, --set applied");
    config->add_option("recipe", a->recipe, "Recipe file (TOML)")->required()->check(CLI::ExistingFile);
    config->add_option("--set", a->sets, "Override a recipe setting: section.key=value (repeatable)");
    return {config, action([a] {
                std::printf("%s", load_config_file(a->recipe, a->sets).to_toml().c_str());
                return 0;
            })};
}

cli::Command add_quantizers(CLI::App & app) {
    auto markdown = std::make_shared<bool>(false);
    auto * q = app.add_subcommand("quantizers", "The quantizer table: every quantizer, its sites, options and source");
    q->add_flag("--markdown", *markdown, "As the Markdown table of docs/quantization.md");
    return {q, action([markdown] { return print_quantizers(*markdown); })};
}

}  // namespace

int main(int argc, char ** argv) {
    g_argv = argv;
    CLI::App app{"bitvit: binary and ternary Vision Transformers — train, evaluate, export, run, measure"};
    cli::configure(app);
    auto run_args = std::make_shared<cli::RunArgs>();
    const std::vector<cli::Command> commands = {
        add_train(app),  add_eval(app),   add_info(app),   add_ops(app),       add_export(app),  add_import(app),
        {cli::add_run_command(app, *run_args), [run_args] { return cli::run_command(*run_args); }},
        add_verify(app), add_bench(app),  add_config(app), add_quantizers(app),
    };
    return cli::run_app(app, commands, argc, argv, "bitvit");
}
