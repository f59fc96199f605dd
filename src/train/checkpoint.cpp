#include "checkpoint.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "format/atomic-file.h"
#include "quant/quantizers.h"

namespace bitvit {
namespace fs = std::filesystem;
namespace {

constexpr const char * kFormat = "bitvit-checkpoint";
constexpr int64_t kVersion = 1;

std::string join_lines(const std::vector<std::string> & lines) {
    std::string out;
    for (const auto & l : lines) out += l + "\n";
    return out;
}

std::vector<std::string> split_lines(const std::string & text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) lines.push_back(line);
    return lines;
}

c10::IValue read_key(torch::serialize::InputArchive & archive, const std::string & path, const std::string & key) {
    c10::IValue value;
    if (!archive.try_read(key, value)) throw CheckpointError(path + ": not a bitvit checkpoint (no '" + key + "' entry)");
    return value;
}

void open_archive(torch::serialize::InputArchive & archive, const std::string & path) {
    if (!fs::exists(path)) throw CheckpointError(path + ": checkpoint not found");
    try {
        archive.load_from(path);
    } catch (const c10::Error & e) {
        throw CheckpointError(path + ": unreadable checkpoint (truncated or not a LibTorch archive): " +
                              std::string(e.what_without_backtrace()));
    }
}

// "blocks.3.attn.q" -> "attn.q"; "" for sites outside the blocks.
std::string block_local_name(const std::string & site) {
    if (site.rfind("blocks.", 0) != 0) return "";
    const auto dot = site.find('.', 7);
    return dot == std::string::npos ? "" : site.substr(dot + 1);
}

}  // namespace

void check_fits_in_memory(const DeitConfig & c) {
    // Training holds each parameter four times (weights, gradients, Adam's two moments), in F32.
    const double needed = static_cast<double>(c.parameter_count()) * 4 * 4;
    const double physical = static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGE_SIZE));
    if (physical > 0 && needed > physical) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "model '%s' has %.3g parameters: training it needs at least %.1f GB, this machine has %.1f GB",
                      c.name.c_str(), static_cast<double>(c.parameter_count()), needed / 1e9, physical / 1e9);
        throw std::invalid_argument(buf);
    }
}

DeitConfig resolve_model_config(const ModelSection & model, const DataShape & shape) {
    DeitConfig c = deit_config(model.name);
    const DeitConfig registered = c;
    if (model.embed_dim > 0) c.embed_dim = model.embed_dim;
    if (model.depth > 0) c.depth = model.depth;
    if (model.num_heads > 0) c.num_heads = model.num_heads;
    if (c.embed_dim != registered.embed_dim || c.depth != registered.depth || c.num_heads != registered.num_heads) {
        // Another architecture under the registry's name would be refused by the runtime.
        c.name += "-dim" + std::to_string(c.embed_dim) + "-depth" + std::to_string(c.depth) + "-heads" + std::to_string(c.num_heads);
    }
    c.drop_path = model.drop_path;
    if (shape.img_size != c.img_size) {
        throw std::invalid_argument("model '" + model.name + "' takes " + std::to_string(c.img_size) + "×" +
                                    std::to_string(c.img_size) + " images but the data set has " +
                                    std::to_string(shape.img_size) + "-pixel images");
    }
    c.num_classes = shape.num_classes;
    c.in_chans = shape.in_chans;
    c.variant = model.variant;
    c.validate();
    check_fits_in_memory(c);
    return c;
}

Deit build_stage_model(const TrainConfig & config, const DataShape & shape, size_t stage_index) {
    const StageSection & stage = config.stages.at(stage_index);
    DeitConfig architecture = resolve_model_config(config.model, shape);
    architecture.variant = stage.variant;
    Deit model(architecture);
    const auto sites = model->site_names();
    // Block-local patterns first, then full site names, so the specific overrides the general.
    std::map<std::string, const QuantizerAssignment *> chosen;
    for (bool specific : {false, true}) {
        for (const auto & a : stage.quantizers) {
            const bool is_full = a.pattern.rfind("blocks.", 0) == 0 || a.pattern.rfind("patch_embed.", 0) == 0 ||
                                 a.pattern.rfind("head.", 0) == 0 || a.pattern.rfind("head_dist.", 0) == 0;
            if (is_full != specific) continue;
            int matches = 0;
            for (const auto & site : sites) {
                const bool hit = is_full ? site == a.pattern : block_local_name(site) == a.pattern;
                if (hit) {
                    chosen[site] = &a;
                    ++matches;
                }
            }
            if (matches == 0) {
                throw std::invalid_argument("stage '" + stage.name + "': quantizer pattern '" + a.pattern +
                                            "' matches no site (block-local names look like attn.qkv.weight, "
                                            "attn.probs, mlp.fc2.input; full names like blocks.0.attn.q, head.weight)");
            }
        }
    }
    for (const auto & [site, a] : chosen) {
        if (a->quantizer == "fp") continue;
        try {
            model->install(site, quant::make_quantizer({a->quantizer, a->options}, model->site_info(site)));
        } catch (const std::invalid_argument & e) {
            throw std::invalid_argument("stage '" + stage.name + "', site " + site + ": " + e.what());
        }
    }
    return model;
}

void copy_matching_weights(torch::nn::Module & src, torch::nn::Module & dst, const std::string & what) {
    torch::NoGradGuard no_grad;
    auto copy = [&](const torch::OrderedDict<std::string, torch::Tensor> & from,
                    torch::OrderedDict<std::string, torch::Tensor> to) {
        for (auto & item : to) {
            const torch::Tensor * source = from.find(item.key());
            if (source == nullptr) {
                if (is_method_tensor(item.key())) continue;
                throw std::invalid_argument(what + " has no tensor '" + item.key() + "'");
            }
            if (source->sizes() != item.value().sizes()) {
                std::ostringstream msg;
                msg << what << ": tensor '" << item.key() << "' has shape " << source->sizes() << ", expected "
                    << item.value().sizes();
                throw std::invalid_argument(msg.str());
            }
            item.value().copy_(*source);
        }
    };
    copy(src.named_parameters(), dst.named_parameters());
    copy(src.named_buffers(), dst.named_buffers());
}

void save_checkpoint(const std::string & path, const CheckpointState & state, torch::nn::Module & model,
                     torch::optim::Optimizer * optimizer) {
    torch::serialize::OutputArchive archive;
    archive.write("format", c10::IValue(std::string(kFormat)));
    archive.write("version", c10::IValue(kVersion));
    archive.write("config", c10::IValue(state.config.to_toml()));
    archive.write("shape/num_classes", c10::IValue(state.shape.num_classes));
    archive.write("shape/in_chans", c10::IValue(state.shape.in_chans));
    archive.write("shape/img_size", c10::IValue(state.shape.img_size));
    archive.write("class_names", c10::IValue(join_lines(state.class_names)));
    archive.write("epoch", c10::IValue(state.epoch));
    archive.write("stage", c10::IValue(state.stage));
    archive.write("stage_epoch", c10::IValue(state.stage_epoch));
    archive.write("step", c10::IValue(state.step));
    archive.write("best_test_acc", c10::IValue(state.best_test_acc));
    archive.write("rng", at::detail::getDefaultCPUGenerator().get_state());
    torch::serialize::OutputArchive model_archive;
    model.save(model_archive);
    archive.write("model", model_archive);
    if (optimizer != nullptr) {
        torch::serialize::OutputArchive optim_archive;
        optimizer->save(optim_archive);
        archive.write("optimizer", optim_archive);
    }
    const std::string temp = format::temp_path_for(path);
    try {
        archive.save_to(temp);
    } catch (const c10::Error & e) {
        std::error_code ec;
        fs::remove(temp, ec);
        throw CheckpointError(path + ": cannot write checkpoint: " + std::string(e.what_without_backtrace()));
    }
    format::commit_temp_file(temp, path);
}

CheckpointState read_checkpoint_state(const std::string & path) {
    torch::serialize::InputArchive archive;
    open_archive(archive, path);
    if (read_key(archive, path, "format").toStringRef() != kFormat) {
        throw CheckpointError(path + ": not a bitvit checkpoint (wrong format tag)");
    }
    const int64_t version = read_key(archive, path, "version").toInt();
    if (version != kVersion) {
        throw CheckpointError(path + ": checkpoint version " + std::to_string(version) + " is not supported (expected " +
                              std::to_string(kVersion) + ")");
    }
    CheckpointState state;
    state.config = parse_config(read_key(archive, path, "config").toStringRef(), path + " (stored config)");
    state.shape.num_classes = read_key(archive, path, "shape/num_classes").toInt();
    state.shape.in_chans = read_key(archive, path, "shape/in_chans").toInt();
    state.shape.img_size = read_key(archive, path, "shape/img_size").toInt();
    state.class_names = split_lines(read_key(archive, path, "class_names").toStringRef());
    state.epoch = read_key(archive, path, "epoch").toInt();
    c10::IValue stage_value;
    // Checkpoints written before multi-stage recipes existed hold one stage.
    state.stage = archive.try_read("stage", stage_value) ? stage_value.toInt() : 0;
    state.stage_epoch = archive.try_read("stage_epoch", stage_value) ? stage_value.toInt() : state.epoch;
    if (state.stage < 0 || state.stage >= static_cast<int64_t>(state.config.stages.size())) {
        throw CheckpointError(path + ": stage index " + std::to_string(state.stage) + " is outside its recipe's " +
                              std::to_string(state.config.stages.size()) + " stages");
    }
    state.step = read_key(archive, path, "step").toInt();
    state.best_test_acc = read_key(archive, path, "best_test_acc").toDouble();
    return state;
}

void load_checkpoint_weights(const std::string & path, torch::nn::Module & model, torch::optim::Optimizer * optimizer,
                             bool restore_rng) {
    torch::serialize::InputArchive archive;
    open_archive(archive, path);
    torch::serialize::InputArchive model_archive;
    if (!archive.try_read("model", model_archive)) throw CheckpointError(path + ": no model weights");
    try {
        model.load(model_archive);
    } catch (const c10::Error & e) {
        throw CheckpointError(path + ": model weights do not match the architecture: " +
                              std::string(e.what_without_backtrace()));
    }
    for (const auto & p : model.parameters()) {
        if (!torch::isfinite(p).all().item<bool>()) throw CheckpointError(path + ": model weights hold NaN or Inf");
    }
    torch::Tensor rng;
    if (restore_rng && archive.try_read("rng", rng)) {
        auto generator = at::detail::getDefaultCPUGenerator();
        generator.set_state(rng);
    }
    if (optimizer != nullptr) {
        torch::serialize::InputArchive optim_archive;
        if (!archive.try_read("optimizer", optim_archive)) throw CheckpointError(path + ": no optimiser state");
        try {
            optimizer->load(optim_archive);
        } catch (const c10::Error & e) {
            throw CheckpointError(path + ": optimiser state does not match: " + std::string(e.what_without_backtrace()));
        }
    }
}

LoadedModel load_model(const std::string & path) {
    LoadedModel loaded;
    loaded.state = read_checkpoint_state(path);
    try {
        loaded.model = build_stage_model(loaded.state.config, loaded.state.shape, static_cast<size_t>(loaded.state.stage));
    } catch (const std::invalid_argument & e) {
        throw CheckpointError(path + ": " + e.what());
    }
    load_checkpoint_weights(path, *loaded.model, nullptr);
    loaded.model->eval();
    return loaded;
}

void write_file_atomic(const std::string & path, const std::string & bytes) {
    format::write_file_atomic(path, bytes.data(), bytes.size());
}

}  // namespace bitvit
