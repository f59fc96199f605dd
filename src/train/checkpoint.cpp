#include "checkpoint.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "format/atomic-file.h"
#include "format/file-kind.h"
#include "format/safetensors.h"
#include "archive-check.h"
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

int64_t read_int(torch::serialize::InputArchive & archive, const std::string & path, const std::string & key, int64_t lo, int64_t hi) {
    const c10::IValue v = read_key(archive, path, key);
    if (!v.isInt() || v.toInt() < lo || v.toInt() > hi) {
        throw CheckpointError(path + ": entry '" + key + "' must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
    return v.toInt();
}

const std::string & read_string(torch::serialize::InputArchive & archive, const std::string & path, const std::string & key,
                                c10::IValue & holder) {
    holder = read_key(archive, path, key);
    if (!holder.isString()) throw CheckpointError(path + ": entry '" + key + "' must be a string");
    return holder.toStringRef();
}

void open_archive(torch::serialize::InputArchive & archive, const std::string & path) {
    const format::FileKind kind = format::file_kind(path);
    if (kind == format::FileKind::missing) throw CheckpointError(path + ": checkpoint not found");
    if (kind == format::FileKind::directory && fs::exists(fs::path(path) / "checkpoint.pt")) {
        throw CheckpointError(path + " is a run directory: its checkpoint is " + (fs::path(path) / "checkpoint.pt").string());
    }
    if (kind != format::FileKind::zip_archive) throw CheckpointError(format::wrong_kind_message(path, kind, "a bitvit checkpoint"));
    try {
        check_libtorch_archive(path);  // the zip directory, pickles and module sources, before LibTorch reads them
    } catch (const format::FormatError & e) {
        throw CheckpointError(e.what());
    } catch (const c10::Error & e) {
        throw CheckpointError(path + ": unreadable checkpoint (not a LibTorch archive): " + std::string(e.what_without_backtrace()));
    }
    try {
        archive.load_from(path);
    } catch (const c10::Error & e) {
        throw CheckpointError(path + ": unreadable checkpoint (truncated or not a LibTorch archive): " +
                              std::string(e.what_without_backtrace()));
    } catch (const std::exception & e) {  // LibTorch's unpickler also throws plain std exceptions on bad input
        throw CheckpointError(path + ": unreadable checkpoint (its pickle is corrupt): " + std::string(e.what()));
    }
}

// "blocks.3.attn.q" -> "attn.q"; "" for sites outside the blocks.
// The name a recipe's block-local pattern matches: "attn.q" for "blocks.3.attn.q" (DeiT) and
// "layers.1.blocks.0.attn.q" (Swin), "downsample.reduction.weight" for Swin's patch merging; "" for
// the model-level sites (patch_embed, head).
std::string block_local_name(const std::string & site) {
    std::string rest = site;
    if (rest.rfind("layers.", 0) == 0) {
        const auto dot = rest.find('.', 7);
        if (dot == std::string::npos) return "";
        rest = rest.substr(dot + 1);
        if (rest.rfind("downsample.", 0) == 0) return rest;
    }
    if (rest.rfind("blocks.", 0) != 0) return "";
    const auto dot = rest.find('.', 7);
    return dot == std::string::npos ? "" : rest.substr(dot + 1);
}

}  // namespace

void check_fits_in_memory(const std::string & name, int64_t parameter_count) {
    // Training holds each parameter four times (weights, gradients, Adam's two moments), in F32.
    const double needed = static_cast<double>(parameter_count) * 4 * 4;
    const double physical = static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGE_SIZE));
    if (physical > 0 && needed > physical) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "model '%s' has %.3g parameters: training it needs at least %.1f GB, this machine has %.1f GB",
                      name.c_str(), static_cast<double>(parameter_count), needed / 1e9, physical / 1e9);
        throw std::invalid_argument(buf);
    }
}

bool is_swin(const ModelSection & model) { return spec::is_swin_name(model.name); }

namespace {

// The data set must feed the model's input size; then its classes and channels size the model.
template <class Config>
void size_for_data(Config & c, const ModelSection & model, const DataShape & shape) {
    if (shape.img_size != c.img_size) {
        throw std::invalid_argument("model '" + model.name + "' takes " + std::to_string(c.img_size) + "×" +
                                    std::to_string(c.img_size) + " images but the data set has " +
                                    std::to_string(shape.img_size) + "-pixel images");
    }
    c.num_classes = shape.num_classes;
    c.in_chans = shape.in_chans;
    c.variant = model.variant;
    c.drop_path = model.drop_path;
    c.validate();
    check_fits_in_memory(c.name, c.parameter_count());
}

// A registered architecture at another input size, patch size or MLP ratio is named for what it is
// (the runtime refuses a registered name whose sizes differ from the registry's).
template <class Config>
void name_input_overrides(Config & c, const Config & registered) {
    if (c.img_size != registered.img_size || c.patch_size != registered.patch_size || c.mlp_ratio != registered.mlp_ratio) {
        char suffix[96];
        std::snprintf(suffix, sizeof suffix, "-img%lld-patch%lld-mlp%g", static_cast<long long>(c.img_size),
                      static_cast<long long>(c.patch_size), c.mlp_ratio);
        c.name += suffix;
    }
}

std::string join_integers(const std::vector<int64_t> & values) {
    std::string out;
    for (const int64_t v : values) out += (out.empty() ? "" : "_") + std::to_string(v);
    return out;
}

}  // namespace

SwinConfig resolve_swin_config(const ModelSection & model, const DataShape & shape) {
    SwinConfig c = spec::swin_config(model.name);
    if (model.depth > 0 || model.num_heads > 0) {
        throw std::invalid_argument("model '" + model.name + "' is a Swin: its sizes are model.depths and model.stage_heads "
                                    "(one entry per stage), not model.depth and model.num_heads");
    }
    const SwinConfig registered = c;
    if (model.embed_dim > 0) c.embed_dim = model.embed_dim;
    if (!model.depths.empty()) c.depths = model.depths;
    if (!model.stage_heads.empty()) c.num_heads = model.stage_heads;
    if (model.window_size > 0) c.window_size = model.window_size;
    if (model.img_size > 0) c.img_size = model.img_size;
    if (model.patch_size > 0) c.patch_size = model.patch_size;
    if (model.mlp_ratio > 0) c.mlp_ratio = model.mlp_ratio;
    if (c.embed_dim != registered.embed_dim || c.depths != registered.depths || c.num_heads != registered.num_heads ||
        c.window_size != registered.window_size) {
        c.name += "-dim" + std::to_string(c.embed_dim) + "-depths" + join_integers(c.depths) + "-heads" +
                  join_integers(c.num_heads) + "-window" + std::to_string(c.window_size);
    }
    name_input_overrides(c, registered);
    size_for_data(c, model, shape);
    return c;
}

DataShape registered_shape(const ModelSection & model) {
    if (is_swin(model)) {
        const SwinConfig c = spec::swin_config(model.name);
        return {c.num_classes, c.in_chans, model.img_size > 0 ? model.img_size : c.img_size};
    }
    const DeitConfig c = deit_config(model.name);
    return {c.num_classes, c.in_chans, model.img_size > 0 ? model.img_size : c.img_size};
}

VisionModel build_model(const ModelSection & model, const DataShape & shape, const BlockVariant & variant) {
    ModelSection m = model;
    m.variant = variant;
    if (is_swin(m)) return VisionModel(std::make_shared<SwinImpl>(resolve_swin_config(m, shape)));
    return VisionModel(std::make_shared<DeitImpl>(resolve_model_config(m, shape)));
}

Deit as_deit(const VisionModel & model, const std::string & what) {
    auto deit = std::dynamic_pointer_cast<DeitImpl>(model.ptr());
    if (!deit) {
        throw std::invalid_argument(what + " needs a DeiT; '" + model->name() + "' is a Swin");
    }
    return Deit(deit);
}

DeitConfig resolve_model_config(const ModelSection & model, const DataShape & shape) {
    if (!model.depths.empty() || !model.stage_heads.empty() || model.window_size > 0) {
        throw std::invalid_argument("model '" + model.name + "' is a DeiT: model.depths, model.stage_heads and "
                                    "model.window_size apply to Swin models only");
    }
    DeitConfig c = deit_config(model.name);
    const DeitConfig registered = c;
    if (model.embed_dim > 0) c.embed_dim = model.embed_dim;
    if (model.depth > 0) c.depth = model.depth;
    if (model.num_heads > 0) c.num_heads = model.num_heads;
    if (model.img_size > 0) c.img_size = model.img_size;
    if (model.patch_size > 0) c.patch_size = model.patch_size;
    if (model.mlp_ratio > 0) c.mlp_ratio = model.mlp_ratio;
    if (c.embed_dim != registered.embed_dim || c.depth != registered.depth || c.num_heads != registered.num_heads) {
        // Another architecture under the registry's name would be refused by the runtime.
        c.name += "-dim" + std::to_string(c.embed_dim) + "-depth" + std::to_string(c.depth) + "-heads" + std::to_string(c.num_heads);
    }
    name_input_overrides(c, registered);
    size_for_data(c, model, shape);
    return c;
}

VisionModel build_stage_model(const TrainConfig & config, const DataShape & shape, size_t stage_index) {
    const StageSection & stage = config.stages.at(stage_index);
    VisionModel model = build_model(config.model, shape, stage.variant);
    const auto sites = model->site_names();
    // Block-local patterns first, then full site names, so the specific overrides the general.
    std::map<std::string, const QuantizerAssignment *> chosen;
    for (bool specific : {false, true}) {
        for (const auto & a : stage.quantizers) {
            const bool is_full = a.pattern.rfind("blocks.", 0) == 0 || a.pattern.rfind("layers.", 0) == 0 ||
                                 a.pattern.rfind("patch_embed.", 0) == 0 || a.pattern.rfind("head.", 0) == 0 ||
                                 a.pattern.rfind("head_dist.", 0) == 0;
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
                                            "' matches no site of '" + model->name() +
                                            "' (block-local names look like attn.qkv.weight, attn.probs, mlp.fc2.input, "
                                            "on Swin also downsample.reduction.weight; full names like blocks.0.attn.q, "
                                            "layers.0.blocks.1.attn.q, head.weight, head.fc.weight)");
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

TensorCopyReport copy_named_tensors(const torch::OrderedDict<std::string, torch::Tensor> & source, torch::nn::Module & dst,
                                    const std::function<bool(const std::string &)> & may_be_absent) {
    torch::NoGradGuard no_grad;
    TensorCopyReport report;
    std::set<std::string> used;
    auto copy = [&](torch::OrderedDict<std::string, torch::Tensor> targets) {
        for (auto & item : targets) {
            const torch::Tensor * from = source.find(item.key());
            if (from == nullptr) {
                if (!may_be_absent(item.key())) report.missing.push_back(item.key());
                continue;
            }
            used.insert(item.key());
            if (from->sizes() != item.value().sizes()) {
                std::ostringstream entry;
                entry << item.key() << " " << from->sizes() << " (expected " << item.value().sizes() << ")";
                report.mismatched.push_back(entry.str());
                continue;
            }
            item.value().copy_(*from);
        }
    };
    copy(dst.named_parameters());
    copy(dst.named_buffers());
    for (const auto & item : source) {
        if (!used.count(item.key())) report.unused.push_back(item.key());
    }
    return report;
}

void copy_matching_weights(torch::nn::Module & src, torch::nn::Module & dst, const std::string & what) {
    torch::OrderedDict<std::string, torch::Tensor> tensors = src.named_parameters();
    for (const auto & item : src.named_buffers()) tensors.insert(item.key(), item.value());
    const TensorCopyReport r = copy_named_tensors(tensors, dst, is_method_tensor);
    if (!r.missing.empty()) throw std::invalid_argument(what + " has no tensor '" + r.missing.front() + "'");
    if (!r.mismatched.empty()) throw std::invalid_argument(what + ": tensor " + r.mismatched.front());
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
    archive.write("partial/batches", c10::IValue(state.partial.batches));
    archive.write("partial/correct", c10::IValue(state.partial.correct));
    archive.write("partial/seen", c10::IValue(state.partial.seen));
    archive.write("partial/loss_sum", c10::IValue(state.partial.loss_sum));
    archive.write("partial/seconds", c10::IValue(state.partial.seconds));
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
    c10::IValue holder;
    if (read_string(archive, path, "format", holder) != kFormat) throw CheckpointError(path + ": not a bitvit checkpoint (wrong format tag)");
    const int64_t version = read_int(archive, path, "version", 0, 1 << 20);
    if (version != kVersion) {
        throw CheckpointError(path + ": checkpoint version " + std::to_string(version) + " is not supported (expected " +
                              std::to_string(kVersion) + ")");
    }
    CheckpointState state;
    state.config = parse_config(read_string(archive, path, "config", holder), path + " (stored config)");
    state.shape.num_classes = read_int(archive, path, "shape/num_classes", 1, 100000);
    state.shape.in_chans = read_int(archive, path, "shape/in_chans", 1, 64);
    state.shape.img_size = read_int(archive, path, "shape/img_size", 1, 4096);
    state.class_names = split_lines(read_string(archive, path, "class_names", holder));
    state.epoch = read_int(archive, path, "epoch", 0, state.config.total_epochs());
    c10::IValue stage_value;
    // Checkpoints written before multi-stage recipes existed hold one stage.
    const auto stages = static_cast<int64_t>(state.config.stages.size());
    state.stage = archive.try_read("stage", stage_value) ? read_int(archive, path, "stage", 0, stages - 1) : 0;
    state.stage_epoch = archive.try_read("stage_epoch", stage_value)
                            ? read_int(archive, path, "stage_epoch", 0, state.config.stages[static_cast<size_t>(state.stage)].epochs)
                            : state.epoch;
    state.step = read_int(archive, path, "step", 0, int64_t{1} << 48);
    const c10::IValue best = read_key(archive, path, "best_test_acc");
    if (!best.isDouble() || !(best.toDouble() >= 0 && best.toDouble() <= 1)) throw CheckpointError(path + ": entry 'best_test_acc' must be in [0, 1]");
    state.best_test_acc = best.toDouble();
    c10::IValue partial;
    if (archive.try_read("partial/batches", partial)) {  // absent in checkpoints of whole epochs only
        const int64_t limit = int64_t{1} << 40;
        state.partial.batches = read_int(archive, path, "partial/batches", 0, limit);
        state.partial.correct = read_int(archive, path, "partial/correct", 0, limit);
        state.partial.seen = read_int(archive, path, "partial/seen", 0, limit);
        for (const auto & [key, out] : {std::pair<const char *, double *>{"partial/loss_sum", &state.partial.loss_sum},
                                        {"partial/seconds", &state.partial.seconds}}) {
            const c10::IValue v = read_key(archive, path, key);
            if (!v.isDouble() || !std::isfinite(v.toDouble()) || v.toDouble() < 0) throw CheckpointError(path + ": entry '" + key + "' is invalid");
            *out = v.toDouble();
        }
    }
    return state;
}

namespace {

// A tensor read from an archive must lie inside its storage before anything reads it: LibTorch's
// unpickler takes storage offsets, sizes and strides from the file as they are, and a crafted or
// corrupt file would otherwise make the first read run past the storage.
void check_in_storage(const torch::Tensor & t, const std::string & what) {
    if (!t.defined()) throw CheckpointError(what + " is missing");
    if (t.layout() != torch::kStrided || t.is_sparse()) throw CheckpointError(what + " is not a dense tensor");
    if (t.storage_offset() < 0) throw CheckpointError(what + " has a negative storage offset");
    if (t.numel() == 0) return;
    __int128 last = t.storage_offset();  // index of the last element touched, in elements
    for (int64_t d = 0; d < t.dim(); ++d) {
        if (t.stride(d) < 0) throw CheckpointError(what + " has a negative stride");
        last += static_cast<__int128>(t.size(d) - 1) * t.stride(d);
    }
    const __int128 needed = (last + 1) * static_cast<__int128>(t.element_size());
    if (!t.has_storage() || needed > static_cast<__int128>(t.storage().nbytes())) {
        throw CheckpointError(what + " points past its storage (" + std::to_string(static_cast<long long>(t.storage().nbytes())) +
                              " bytes): the file is corrupt");
    }
}

// Every tensor anywhere in an archive (nested module archives, lists, dicts) inside its storage:
// run before anything — the model's or the optimiser's own load — reads one.
void check_archive_tensors(const c10::IValue & value, const std::string & what, int depth);

void check_archive_tensors(torch::serialize::InputArchive & archive, const std::string & what, int depth) {
    if (depth > 64) throw CheckpointError(what + " nests deeper than 64 levels");
    for (const auto & key : archive.keys()) {
        c10::IValue value;
        if (!archive.try_read(key, value)) continue;
        if (value.isObject()) {
            torch::serialize::InputArchive child;
            if (archive.try_read(key, child)) check_archive_tensors(child, what, depth + 1);
            continue;
        }
        check_archive_tensors(value, what + " '" + key + "'", depth + 1);
    }
}

void check_archive_tensors(const c10::IValue & value, const std::string & what, int depth) {
    if (depth > 64) throw CheckpointError(what + " nests deeper than 64 levels");
    if (value.isTensor()) {
        check_in_storage(value.toTensor(), what);
    } else if (value.isList()) {
        for (const auto & element : value.toListRef()) check_archive_tensors(element, what, depth + 1);
    } else if (value.isTuple()) {
        for (const auto & element : value.toTupleRef().elements()) check_archive_tensors(element, what, depth + 1);
    } else if (value.isGenericDict()) {
        for (const auto & item : value.toGenericDict()) check_archive_tensors(item.value(), what, depth + 1);
    }
}

// A tensor of the archive checked against the one it replaces: in its storage, the same dtype and
// shape, finite where it is floating point.
torch::Tensor checked_tensor(torch::serialize::InputArchive & archive, const std::string & key, const torch::Tensor & like,
                             const std::string & what) {
    c10::IValue value;
    if (!archive.try_read(key, value) || !value.isTensor()) throw CheckpointError(what + " is missing or not a tensor");
    torch::Tensor t = value.toTensor();
    check_in_storage(t, what);
    if (t.scalar_type() != like.scalar_type()) {
        throw CheckpointError(what + " has dtype " + std::string(c10::toString(t.scalar_type())) + ", the model expects " +
                              std::string(c10::toString(like.scalar_type())));
    }
    if (t.sizes() != like.sizes()) {
        std::ostringstream msg;
        msg << what << " has shape " << t.sizes() << ", the model expects " << like.sizes();
        throw CheckpointError(msg.str());
    }
    if (t.is_floating_point() && !torch::isfinite(t).all().item<bool>()) throw CheckpointError(what + " holds NaN or Inf");
    return t;
}

// Module::load, with every tensor checked before it is used (LibTorch's own load takes shapes and
// storage views from the file unchecked).
void load_module_checked(torch::nn::Module & module, torch::serialize::InputArchive & archive, const std::string & prefix,
                         const std::string & path) {
    torch::NoGradGuard no_grad;
    for (auto & p : module.named_parameters(/*recurse=*/false)) {
        p.value().copy_(checked_tensor(archive, p.key(), p.value(), path + ": tensor " + prefix + p.key()));
    }
    for (auto & b : module.named_buffers(/*recurse=*/false)) {
        b.value().copy_(checked_tensor(archive, b.key(), b.value(), path + ": tensor " + prefix + b.key()));
    }
    for (const auto & child : module.named_children()) {
        torch::serialize::InputArchive child_archive;
        if (!archive.try_read(child.key(), child_archive)) throw CheckpointError(path + ": no weights for module " + prefix + child.key());
        load_module_checked(*child.value(), child_archive, prefix + child.key() + ".", path);
    }
}

// After Optimizer::load: every state tensor inside its storage and shaped like its parameter.
void check_optimizer_state(torch::optim::Optimizer & optimizer, const std::string & path) {
    for (auto & group : optimizer.param_groups()) {
        for (auto & p : group.params()) {
            const auto it = optimizer.state().find(c10::guts::to_string(p.unsafeGetTensorImpl()));
            if (it == optimizer.state().end()) continue;
            std::vector<torch::Tensor> moments;
            if (auto * adam = dynamic_cast<torch::optim::AdamParamState *>(it->second.get())) {
                moments = {adam->exp_avg(), adam->exp_avg_sq(), adam->max_exp_avg_sq()};
            } else if (auto * adamw = dynamic_cast<torch::optim::AdamWParamState *>(it->second.get())) {
                moments = {adamw->exp_avg(), adamw->exp_avg_sq(), adamw->max_exp_avg_sq()};
            }
            for (const auto & m : moments) {
                if (!m.defined()) continue;  // max_exp_avg_sq without amsgrad
                check_in_storage(m, path + ": optimiser state");
                if (m.sizes() != p.sizes() || m.scalar_type() != p.scalar_type()) {
                    throw CheckpointError(path + ": optimiser state does not match its parameter's shape or dtype");
                }
            }
        }
    }
}

}  // namespace

void load_checkpoint_weights(const std::string & path, torch::nn::Module & model, torch::optim::Optimizer * optimizer,
                             bool restore_rng) {
    torch::serialize::InputArchive archive;
    open_archive(archive, path);
    check_archive_tensors(archive, path + ": a tensor", 0);
    torch::serialize::InputArchive model_archive;
    if (!archive.try_read("model", model_archive)) throw CheckpointError(path + ": no model weights");
    load_module_checked(model, model_archive, "", path);
    if (restore_rng) {
        c10::IValue rng;
        if (archive.try_read("rng", rng)) {
            if (!rng.isTensor()) throw CheckpointError(path + ": the saved random state is not a tensor");
            const torch::Tensor state = rng.toTensor();
            check_in_storage(state, path + ": the saved random state");
            try {
                auto generator = at::detail::getDefaultCPUGenerator();
                generator.set_state(state);
            } catch (const c10::Error & e) {
                throw CheckpointError(path + ": the saved random state is invalid: " + std::string(e.what_without_backtrace()));
            }
        }
    }
    if (optimizer != nullptr) {
        torch::serialize::InputArchive optim_archive;
        if (!archive.try_read("optimizer", optim_archive)) throw CheckpointError(path + ": no optimiser state");
        try {
            optimizer->load(optim_archive);
        } catch (const c10::Error & e) {
            throw CheckpointError(path + ": optimiser state does not match: " + std::string(e.what_without_backtrace()));
        }
        check_optimizer_state(*optimizer, path);
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
