#include "import.h"

#include <caffe2/serialize/inline_container.h>

#include <cmath>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <map>
#include <set>
#include <sstream>

#include "checkpoint.h"
#include "deit.h"
#include "format/file-kind.h"
#include "format/safetensors.h"
#include "format/torch-pickle.h"
#include "format/zip-check.h"

namespace bitvit {
namespace {

using StateDict = torch::OrderedDict<std::string, torch::Tensor>;

torch::ScalarType torch_dtype(format::DType d, const std::string & what) {
    switch (d) {
        case format::DType::F32: return torch::kFloat;
        case format::DType::F64: return torch::kDouble;
        case format::DType::F16: return torch::kHalf;
        case format::DType::BF16: return torch::kBFloat16;
        case format::DType::I64: return torch::kLong;
        case format::DType::I32: return torch::kInt;
        case format::DType::I16: return torch::kShort;
        case format::DType::I8: return torch::kChar;
        case format::DType::U8: return torch::kByte;
        case format::DType::BOOL: return torch::kBool;
        default: throw ImportError(what + ": dtype " + format::dtype_name(d) + " is not one a model's tensors use");
    }
}

// Floating tensors become F32 (what bitvit trains in); integer ones (index buffers) keep their type.
torch::Tensor as_model_tensor(torch::Tensor t) {
    return (t.is_floating_point() ? t.to(torch::kFloat) : t).contiguous();
}

StateDict read_safetensors(const std::string & path) {
    format::SafetensorsFile file = [&] {
        try {
            return format::SafetensorsFile::load(path);
        } catch (const format::FormatError & e) {
            throw ImportError(e.what());
        }
    }();
    StateDict out;
    for (const auto & [name, info] : file.tensors()) {
        const auto dtype = torch_dtype(info.dtype, path + ": tensor '" + name + "'");
        const torch::Tensor view = torch::from_blob(const_cast<uint8_t *>(file.data(name)), info.shape, dtype);
        out.insert(name, as_model_tensor(view.clone()));
    }
    return out;
}

// The pickle record of a torch.save archive; refuses LibTorch and TorchScript archives (bitvit's own
// checkpoints among them), which hold code as well as data.
std::string pickle_record(caffe2::serialize::PyTorchStreamReader & reader, const std::string & path) {
    bool found = false;
    for (const auto & record : reader.getAllRecords()) {
        // The reader names records without the archive's directory ("code/__torch__.py", "data.pkl").
        if (record.rfind("code/", 0) == 0 || record == "constants.pkl") {
            throw ImportError(path + ": a TorchScript or LibTorch archive (it holds " + record +
                              "), not a torch.save state dict; a bitvit checkpoint is used as it is, without import");
        }
        found = found || record == "data.pkl";
    }
    if (!found) throw ImportError(path + ": a zip archive without data.pkl: not a file torch.save wrote");
    return "data.pkl";
}

StateDict read_torch_save(const std::string & path, std::string * found_at) {
    try {
        format::check_zip_sizes(path);  // before the stream reader allocates what the directory declares
        caffe2::serialize::PyTorchStreamReader reader(path);
        const std::string pickle = pickle_record(reader, path);
        auto [bytes, size] = reader.getRecord(pickle);
        format::PickledStateDict dict;
        try {
            dict = format::read_torch_state_dict({static_cast<const char *>(bytes.get()), size}, path + " (" + pickle + ")");
        } catch (const format::FormatError & e) {
            throw ImportError(std::string(e.what()) +
                              "\n  (a training checkpoint that pickles Python objects — args, optimiser or scheduler state — "
                              "cannot be read without running Python; save the state dict alone, "
                              "torch.save(checkpoint['model'], 'model.pth'), or as safetensors)");
        }
        if (found_at) *found_at = dict.found_at;
        std::map<std::string, std::tuple<at::DataPtr, size_t>> storages;
        StateDict out;
        for (const auto & [name, t] : dict.tensors) {
            const std::string what = path + ": tensor '" + name + "'";
            const std::string record = "data/" + t.storage_key;
            if (!storages.count(t.storage_key)) {
                if (!reader.hasRecord(record)) throw ImportError(what + ": its storage " + record + " is not in the archive");
                storages.emplace(t.storage_key, reader.getRecord(record));
            }
            const auto & [data, nbytes] = storages.at(t.storage_key);
            const size_t element = format::dtype_size(t.dtype);
            if (nbytes < static_cast<uint64_t>(t.storage_numel) * element) {
                throw ImportError(what + ": its storage declares " + std::to_string(t.storage_numel) + " elements but " + record +
                                  " holds " + std::to_string(nbytes) + " bytes");
            }
            const int64_t extent = format::storage_extent(t);
            if (extent < 0 || extent > t.storage_numel) {
                throw ImportError(what + ": its offset, size and stride reach past its storage of " +
                                  std::to_string(t.storage_numel) + " elements: the file is corrupt");
            }
            const torch::Tensor storage = torch::from_blob(data.get(), {t.storage_numel}, torch_dtype(t.dtype, what));
            out.insert(name, as_model_tensor(storage.as_strided(t.shape, t.stride, t.offset).clone()));
        }
        return out;
    } catch (const format::FormatError & e) {
        throw ImportError(e.what());
    } catch (const c10::Error & e) {
        throw ImportError(path + ": unreadable zip archive: " + std::string(e.what_without_backtrace()));
    }
}

StateDict strip_module_prefix(const StateDict & in) {
    const std::string prefix = "module.";
    for (const auto & item : in) {
        if (item.key().rfind(prefix, 0) != 0) return in;
    }
    StateDict out;
    for (const auto & item : in) out.insert(item.key().substr(prefix.size()), item.value());
    return out;
}

std::string shape_text(torch::IntArrayRef shape) {
    std::ostringstream s;
    s << shape;
    return s.str();
}

const torch::Tensor & need(const StateDict & sd, const std::string & name, const std::string & path, int64_t dims) {
    const torch::Tensor * t = sd.find(name);
    if (t == nullptr) throw ImportError(path + ": no tensor '" + name + "': not a timm DeiT / ViT or Swin state dict");
    if (t->dim() != dims) throw ImportError(path + ": tensor '" + name + "' has shape " + shape_text(t->sizes()) + ", expected " + std::to_string(dims) + " dimensions");
    return *t;
}

// The file's architecture from its tensors' shapes: everything but the head count, which the weights
// do not hold (taken from --model, --num-heads, or timm's DeiT sizes for widths 192 / 384 / 768).
spec::DeitConfig infer_architecture(const StateDict & sd, const ImportOptions & o, const std::string & path) {
    if (o.window_size > 0) throw ImportError("--window-size: a DeiT has no windows (it applies to Swin files)");
    spec::DeitConfig c;
    const torch::Tensor & proj = need(sd, "patch_embed.proj.weight", path, 4);
    const torch::Tensor & pos = need(sd, "pos_embed", path, 3);
    c.embed_dim = need(sd, "cls_token", path, 3).size(2);
    c.in_chans = proj.size(1);
    c.patch_size = proj.size(2);
    if (proj.size(0) != c.embed_dim || proj.size(3) != c.patch_size) {
        throw ImportError(path + ": tensor 'patch_embed.proj.weight' has shape " + shape_text(proj.sizes()) +
                          ": expected [embed_dim, channels, p, p] with embed_dim " + std::to_string(c.embed_dim));
    }
    c.distilled = sd.contains("dist_token");
    c.depth = 0;
    while (sd.contains("blocks." + std::to_string(c.depth) + ".attn.qkv.weight")) ++c.depth;
    if (c.depth == 0) throw ImportError(path + ": no tensor 'blocks.0.attn.qkv.weight': not a timm DeiT / ViT state dict");
    const int64_t hidden = need(sd, "blocks.0.mlp.fc1.weight", path, 2).size(0);
    c.mlp_ratio = static_cast<double>(hidden) / static_cast<double>(c.embed_dim);
    c.qkv_bias = sd.contains("blocks.0.attn.qkv.bias");
    if (!c.qkv_bias) throw ImportError(path + ": blocks have no qkv bias; bitvit's DeiT always has one (timm's qkv_bias=True)");
    const int64_t prefix = c.distilled ? 2 : 1, patches = pos.size(1) - prefix;
    const auto grid = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(std::max<int64_t>(patches, 0)))));
    if (patches <= 0 || grid * grid != patches || pos.size(2) != c.embed_dim) {
        throw ImportError(path + ": tensor 'pos_embed' has shape " + shape_text(pos.sizes()) + ": expected [1, " +
                          std::to_string(prefix) + " + g², " + std::to_string(c.embed_dim) + "] for a square grid of patches");
    }
    c.img_size = grid * c.patch_size;
    if (sd.contains("head.weight")) {
        c.num_classes = need(sd, "head.weight", path, 2).size(0);
    } else if (o.num_classes > 0) {
        c.num_classes = o.num_classes;  // a headless file (a backbone): the head is initialised afresh
    } else {
        throw ImportError(path + ": no classifier 'head.weight': pass --num-classes N (with --allow-missing head)");
    }

    if (!o.model.empty()) {
        spec::DeitConfig named;
        try {
            named = spec::deit_config(o.model);
        } catch (const std::invalid_argument & e) {
            throw ImportError(std::string("--model: ") + e.what());
        }
        const std::pair<const char *, std::pair<double, double>> fields[] = {
            {"embed_dim", {named.embed_dim, c.embed_dim}}, {"depth", {named.depth, c.depth}},
            {"patch_size", {named.patch_size, c.patch_size}}, {"img_size", {named.img_size, c.img_size}},
            {"mlp_ratio", {named.mlp_ratio, c.mlp_ratio}}, {"distilled", {named.distilled, c.distilled}}};
        for (const auto & [field, values] : fields) {
            if (values.first != values.second) {
                std::ostringstream msg;
                msg << path << ": the weights have " << field << " " << values.second << " but " << o.model << " has " << values.first
                    << (std::string(field) == "distilled" ? " (--drop-distillation imports a distilled file as a plain model)" : "");
                throw ImportError(msg.str());
            }
        }
        c.num_heads = named.num_heads;
        c.name = o.model;
    } else {
        const std::map<int64_t, int64_t> deit_heads{{192, 3}, {384, 6}, {768, 12}};
        c.num_heads = o.num_heads > 0 ? o.num_heads : deit_heads.count(c.embed_dim) ? deit_heads.at(c.embed_dim) : 0;
        if (c.num_heads == 0) {
            throw ImportError(path + ": embed_dim " + std::to_string(c.embed_dim) +
                              " is not a registered DeiT width and the head count is not in the weights: pass --num-heads or --model");
        }
    }
    if (o.num_heads > 0 && o.num_heads != c.num_heads) throw ImportError("--num-heads " + std::to_string(o.num_heads) + " disagrees with --model " + o.model);
    if (c.embed_dim % c.num_heads != 0) {
        throw ImportError(path + ": embed_dim " + std::to_string(c.embed_dim) + " is not divisible by " + std::to_string(c.num_heads) + " heads");
    }
    return c;
}

// The recipe's [model] section that builds `c`: its registered name when its sizes are the registry's,
// else a registered base with every size overridden (resolve_model_config renames it for what it is).
std::string model_section(const spec::DeitConfig & c) {
    for (const auto & name : spec::deit_config_names()) {
        const spec::DeitConfig r = spec::deit_config(name);
        if (r.embed_dim == c.embed_dim && r.depth == c.depth && r.num_heads == c.num_heads && r.patch_size == c.patch_size &&
            r.img_size == c.img_size && r.mlp_ratio == c.mlp_ratio && r.distilled == c.distilled) {
            return "[model]\nname = \"" + name + "\"\n";
        }
    }
    std::ostringstream s;
    s << "[model]\nname = \"deit_tiny_patch16_224" << (c.distilled ? "_distilled" : "") << "\"\nembed_dim = " << c.embed_dim
      << "\ndepth = " << c.depth << "\nnum_heads = " << c.num_heads << "\nimg_size = " << c.img_size
      << "\npatch_size = " << c.patch_size << "\nmlp_ratio = " << c.mlp_ratio << "\n";
    return s.str();
}

// A registered Swin's sizes equal c's (everything but classes, channels and the block variant).
bool same_swin_sizes(const spec::SwinConfig & a, const spec::SwinConfig & b) {
    return a.embed_dim == b.embed_dim && a.depths == b.depths && a.num_heads == b.num_heads && a.window_size == b.window_size &&
           a.patch_size == b.patch_size && a.img_size == b.img_size && a.mlp_ratio == b.mlp_ratio;
}

// A Swin's architecture from its tensors (timm's layout): stages and depths from the block names,
// heads and the window from each stage's relative position bias table ([(2M − 1)², heads]). The
// input size is not in the weights: --model, --img-size, or the registered size with these weights.
spec::SwinConfig infer_swin_architecture(const StateDict & sd, const ImportOptions & o, const std::string & path) {
    spec::SwinConfig c;
    const torch::Tensor & proj = need(sd, "patch_embed.proj.weight", path, 4);
    c.embed_dim = proj.size(0);
    c.in_chans = proj.size(1);
    c.patch_size = proj.size(2);
    c.depths.clear();
    c.num_heads.clear();
    for (int64_t i = 0; sd.contains("layers." + std::to_string(i) + ".blocks.0.attn.qkv.weight"); ++i) {
        const std::string layer = "layers." + std::to_string(i) + ".blocks.";
        int64_t depth = 0;
        while (sd.contains(layer + std::to_string(depth) + ".attn.qkv.weight")) ++depth;
        const torch::Tensor & table = need(sd, layer + "0.attn.relative_position_bias_table", path, 2);
        const auto side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(table.size(0)))));
        if (side * side != table.size(0) || side % 2 == 0) {
            throw ImportError(path + ": tensor '" + layer + "0.attn.relative_position_bias_table' has shape " + shape_text(table.sizes()) +
                              ": expected [(2M − 1)², heads] for an M×M window");
        }
        if (i == 0) c.window_size = (side + 1) / 2;
        c.depths.push_back(depth);
        c.num_heads.push_back(table.size(1));
        if (need(sd, layer + "0.norm1.weight", path, 1).size(0) != c.stage_dim(i)) {
            throw ImportError(path + ": stage " + std::to_string(i) + " has width " +
                              std::to_string(sd.find(layer + "0.norm1.weight")->size(0)) + ", expected " +
                              std::to_string(c.stage_dim(i)) + " (Swin doubles the width at every patch merging)");
        }
    }
    if (c.depths.empty()) throw ImportError(path + ": no tensor 'layers.0.blocks.0.attn.qkv.weight': not a timm Swin state dict");
    if (!sd.contains("layers.0.blocks.0.attn.qkv.bias")) throw ImportError(path + ": blocks have no qkv bias; bitvit's Swin always has one");
    c.mlp_ratio = static_cast<double>(need(sd, "layers.0.blocks.0.mlp.fc1.weight", path, 2).size(0)) / static_cast<double>(c.embed_dim);
    if (sd.contains("head.fc.weight")) {
        c.num_classes = need(sd, "head.fc.weight", path, 2).size(0);
    } else if (o.num_classes > 0) {
        c.num_classes = o.num_classes;
    } else {
        throw ImportError(path + ": no classifier 'head.fc.weight': pass --num-classes N (with --allow-missing head)");
    }
    if (o.num_heads > 0) throw ImportError("--num-heads: a Swin's heads per stage are in its weights");
    if (o.drop_distillation) throw ImportError("--drop-distillation: a Swin has no distillation token");
    c.img_size = 0;
    if (!o.model.empty()) {
        spec::SwinConfig named;
        try {
            named = spec::swin_config(o.model);
        } catch (const std::invalid_argument & e) {
            throw ImportError(std::string("--model: ") + e.what());
        }
        c.img_size = named.img_size;
        c.name = o.model;
        if (!same_swin_sizes(c, named)) {
            throw ImportError(path + ": the weights are not " + o.model + "'s (width, depths, heads, window, patch or MLP ratio differ)");
        }
    } else {
        for (const auto & name : spec::swin_config_names()) {
            spec::SwinConfig r = spec::swin_config(name);
            c.img_size = r.img_size;
            if (same_swin_sizes(c, r)) {
                c.name = name;
                break;
            }
            c.img_size = 0;
        }
    }
    if (c.img_size == 0) {
        if (o.img_size == 0) throw ImportError(path + ": a Swin's input size is not in its weights and these are no registered Swin's: pass --img-size");
        c.img_size = o.img_size;
        c.name = "swin_custom";
    }
    return c;
}

// The recipe's [model] section that builds Swin c: its registered name, or Swin-T's with every size
// overridden (resolve_swin_config renames it for what it is).
std::string model_section(const spec::SwinConfig & c) {
    for (const auto & name : spec::swin_config_names()) {
        if (same_swin_sizes(spec::swin_config(name), c)) return "[model]\nname = \"" + name + "\"\n";
    }
    auto list = [](const std::vector<int64_t> & v) {
        std::string s;
        for (const int64_t x : v) s += (s.empty() ? "" : ", ") + std::to_string(x);
        return "[" + s + "]";
    };
    std::ostringstream s;
    s << "[model]\nname = \"swin_tiny_patch4_window7_224\"\nembed_dim = " << c.embed_dim << "\ndepths = " << list(c.depths)
      << "\nstage_heads = " << list(c.num_heads) << "\nwindow_size = " << c.window_size << "\nimg_size = " << c.img_size
      << "\npatch_size = " << c.patch_size << "\nmlp_ratio = " << c.mlp_ratio << "\n";
    return s.str();
}

// Resamples the patch part of pos_embed [1, prefix + g², D] to [1, prefix + n², D] as timm's
// resample_abs_pos_embed does: bicubic, antialiased, prefix tokens kept.
torch::Tensor resample_pos_embed(const torch::Tensor & pos, int64_t prefix, int64_t new_grid) {
    const int64_t D = pos.size(2);
    const auto grid = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(pos.size(1) - prefix))));
    const torch::Tensor patches = pos.narrow(1, prefix, grid * grid).reshape({1, grid, grid, D}).permute({0, 3, 1, 2});
    namespace F = torch::nn::functional;
    const torch::Tensor resized = F::interpolate(patches, F::InterpolateFuncOptions()
                                                              .size(std::vector<int64_t>{new_grid, new_grid})
                                                              .mode(torch::kBicubic)
                                                              .align_corners(false)
                                                              .antialias(true));
    return torch::cat({pos.narrow(1, 0, prefix), resized.permute({0, 2, 3, 1}).reshape({1, new_grid * new_grid, D})}, 1);
}

// A Swin relative position bias table [(2M − 1)², H] resampled to [(2M' − 1)², H] for window M': the
// (2M − 1)×(2M − 1) grid of offsets per head, bicubic, align_corners=False, no antialiasing — timm's
// resize_rel_pos_bias_table_simple. (timm's Swin loader uses resize_rel_pos_bias_table, BEiT's
// geometric-spacing interpolation, by default; docs/training.md.)
torch::Tensor resample_position_bias(const torch::Tensor & table, int64_t window) {
    const int64_t heads = table.size(1), side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(table.size(0)))));
    const int64_t new_side = 2 * window - 1;
    if (side == new_side) return table;
    namespace F = torch::nn::functional;
    const torch::Tensor grid = table.t().reshape({1, heads, side, side});
    const torch::Tensor resized = F::interpolate(grid, F::InterpolateFuncOptions()
                                                           .size(std::vector<int64_t>{new_side, new_side})
                                                           .mode(torch::kBicubic)
                                                           .align_corners(false));
    return resized.reshape({heads, new_side * new_side}).t().contiguous();
}

// timm's adapt_input_conv: to 1 channel by summing the input channels; from 3 to any other count by
// repeating the RGB filters and scaling by 3 / channels.
torch::Tensor adapt_input_conv(const torch::Tensor & w, int64_t channels, const std::string & path) {
    const int64_t have = w.size(1);
    if (channels == 1) return w.sum(1, /*keepdim=*/true);
    if (have != 3) {
        throw ImportError(path + ": patch embedding of " + std::to_string(have) + " channels cannot be adapted to " +
                          std::to_string(channels) + " (timm adapts 3 channels to any count, any count to 1)");
    }
    const int64_t repeat = (channels + 2) / 3;
    return w.repeat({1, repeat, 1, 1}).narrow(1, 0, channels) * (3.0 / static_cast<double>(channels));
}

// patch_embed.proj.weight adapted to another channel count; returns the line for the user.
std::string adapt_channels(StateDict & sd, int64_t from, int64_t to, const std::string & path) {
    sd["patch_embed.proj.weight"] = adapt_input_conv(sd["patch_embed.proj.weight"], to, path);
    return "patch embedding adapted from " + std::to_string(from) + " to " + std::to_string(to) +
           (to == 1 ? " channel (input filters summed, as timm's adapt_input_conv)"
                    : " channels (RGB filters repeated and scaled by 3/channels, as timm's adapt_input_conv)");
}

bool erase_prefix(StateDict & sd, const std::string & prefix) {
    bool any = false;
    StateDict kept;
    for (const auto & item : sd) {
        const bool hit = item.key() == prefix || item.key().rfind(prefix + ".", 0) == 0;
        any = any || hit;
        if (!hit) kept.insert(item.key(), item.value());
    }
    sd = std::move(kept);
    return any;
}

// Applies the requested adaptations to the state dict in place; `fresh` collects the names whose
// tensors the model's own initialisation provides. Returns one line per adaptation.
std::vector<std::string> adapt(StateDict & sd, spec::DeitConfig & c, const ImportOptions & o, std::set<std::string> & fresh,
                               const std::string & path) {
    std::vector<std::string> done;
    if (o.drop_distillation && c.distilled) {
        erase_prefix(sd, "dist_token");
        erase_prefix(sd, "head_dist");
        torch::Tensor & pos = sd["pos_embed"];
        pos = torch::cat({pos.narrow(1, 0, 1), pos.narrow(1, 2, pos.size(1) - 2)}, 1);
        c.distilled = false;
        if (c.name.size() > 10 && c.name.compare(c.name.size() - 10, 10, "_distilled") == 0) c.name.resize(c.name.size() - 10);
        done.push_back("distillation token, its position embedding and head_dist dropped (a plain DeiT)");
    }
    if (o.in_chans > 0 && o.in_chans != c.in_chans) done.push_back(adapt_channels(sd, c.in_chans, o.in_chans, path));
    c.in_chans = o.in_chans > 0 ? o.in_chans : c.in_chans;
    if (o.img_size > 0 && o.img_size != c.img_size) {
        if (o.img_size % c.patch_size != 0) {
            throw ImportError("--img-size " + std::to_string(o.img_size) + " is not a multiple of the patch size " + std::to_string(c.patch_size));
        }
        const int64_t grid = o.img_size / c.patch_size, prefix = c.distilled ? 2 : 1;
        sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], prefix, grid);
        done.push_back("position embedding resampled from a " + std::to_string(c.grid()) + "×" + std::to_string(c.grid()) + " to a " +
                       std::to_string(grid) + "×" + std::to_string(grid) + " grid (bicubic, antialiased; " +
                       std::to_string(prefix) + " prefix token" + (prefix > 1 ? "s" : "") + " kept) for " +
                       std::to_string(o.img_size) + "-pixel input");
        c.img_size = o.img_size;
    }
    if (o.num_classes > 0 && o.num_classes != c.num_classes) {
        for (const char * head : {"head", "head_dist"}) {
            if (erase_prefix(sd, head)) fresh.insert(std::string(head) + ".");
        }
        done.push_back("classifier" + std::string(c.distilled ? "s head and head_dist" : " head") + " re-initialised for " +
                       std::to_string(o.num_classes) + " classes (the file's had " + std::to_string(c.num_classes) + ")");
        c.num_classes = o.num_classes;
    }
    return done;
}

// The same for a Swin: no position embedding (another input size only changes how many windows each
// stage has, and which stages are clipped to one unshifted window), the classifier is head.fc.
std::vector<std::string> adapt(StateDict & sd, spec::SwinConfig & c, const ImportOptions & o, std::set<std::string> & fresh,
                               const std::string & path) {
    std::vector<std::string> done;
    if (o.in_chans > 0 && o.in_chans != c.in_chans) done.push_back(adapt_channels(sd, c.in_chans, o.in_chans, path));
    c.in_chans = o.in_chans > 0 ? o.in_chans : c.in_chans;
    if (o.img_size > 0 && o.img_size != c.img_size) {
        done.push_back("input size " + std::to_string(c.img_size) + " -> " + std::to_string(o.img_size) +
                       " pixels (Swin has no position embedding to resample; each stage's windows follow its resolution)");
        c.img_size = o.img_size;
    }
    if (o.window_size > 0 && o.window_size != c.window_size) {
        const spec::SwinConfig before = c;
        c.window_size = o.window_size;
        for (int64_t i = 0; i < c.num_stages(); ++i) {
            for (int64_t j = 0; j < c.depths[i]; ++j) {
                const std::string name = "layers." + std::to_string(i) + ".blocks." + std::to_string(j) + ".attn.relative_position_bias_table";
                if (sd.contains(name)) sd[name] = resample_position_bias(sd[name], c.stage_window(i));
            }
        }
        done.push_back("window " + std::to_string(before.window_size) + " -> " + std::to_string(c.window_size) +
                       ": relative position bias tables resampled (bicubic, as timm's resize_rel_pos_bias_table_simple)");
    }
    if (o.num_classes > 0 && o.num_classes != c.num_classes) {
        if (erase_prefix(sd, "head.fc")) fresh.insert("head.fc.");
        done.push_back("classifier head.fc re-initialised for " + std::to_string(o.num_classes) + " classes (the file's had " +
                       std::to_string(c.num_classes) + ")");
        c.num_classes = o.num_classes;
    }
    return done;
}

// Copies the state dict into the model; every non-method tensor must come from the file unless
// fresh or allowed missing, and every file tensor must be used. Lists all offenders at once.
void load_into(VisionModel & model, const StateDict & sd, const std::set<std::string> & fresh, const ImportOptions & o, const std::string & path) {
    const TensorCopyReport r = copy_named_tensors(sd, *model, [&](const std::string & name) {
        for (const auto & p : fresh) if (name.rfind(p, 0) == 0) return true;
        for (const auto & p : o.allow_missing) if (name == p || name.rfind(p + ".", 0) == 0) return true;
        return is_method_tensor(name);
    });
    if (r.clean()) return;
    auto list = [](const char * what, const std::vector<std::string> & names) {
        if (names.empty()) return std::string();
        std::string s = std::string("\n  ") + what + " (" + std::to_string(names.size()) + "):";
        for (size_t i = 0; i < names.size() && i < 20; ++i) s += " " + names[i];
        return s + (names.size() > 20 ? " …" : "");
    };
    throw ImportError(path + ": the tensors do not fit " + model->name() + list("missing", r.missing) +
                      list("of another shape", r.mismatched) + list("unexpected", r.unused) +
                      (r.missing.empty() ? "" : "\n  (--allow-missing PREFIX lets named tensors keep a fresh initialisation)"));
}

std::string numbers(const std::vector<double> & v) {
    std::ostringstream s;
    s << std::setprecision(17) << "[";
    for (size_t i = 0; i < v.size(); ++i) s << (i ? ", " : "") << v[i];
    return s.str() + "]";
}

}  // namespace

torch::OrderedDict<std::string, torch::Tensor> read_state_dict(const std::string & path, std::string * found_at) {
    const format::FileKind kind = format::file_kind(path);
    if (kind == format::FileKind::safetensors) return strip_module_prefix(read_safetensors(path));
    if (kind == format::FileKind::zip_archive) return strip_module_prefix(read_torch_save(path, found_at));
    // torch.save's format before PyTorch 1.6: a bare pickle stream starting with its magic number.
    static const std::string legacy_magic("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 14);
    std::string head(legacy_magic.size(), '\0');
    if (kind == format::FileKind::other && std::ifstream(path, std::ios::binary).read(head.data(), 14) && head == legacy_magic) {
        throw ImportError(path + ": torch.save's legacy format (PyTorch < 1.6), which bitvit does not read; re-save it with a "
                          "current PyTorch: torch.save(torch.load(path), path)");
    }
    throw ImportError(format::wrong_kind_message(path, kind, "a safetensors or torch.save (.pth) state dict"));
}

namespace {

// What an architecture's import hands to the common part: the [model] section, the sizes the data
// must have, and the timm eval crop of its pretrained configs.
struct ImportedArchitecture {
    std::string model_toml;
    int64_t in_chans = 0, num_classes = 0, img_size = 0;
    double rgb_crop_pct = 0.0;  // 0.875 (DeiT) or 0.9 (Swin): timm's pretrained eval transform
};

// A Swin's tensors live under layers.{i}; a DeiT's under blocks.{i}. A --model of the other family
// is refused here, before any shape is compared.
bool is_swin_state_dict(const StateDict & sd, const ImportOptions & o, const std::string & path) {
    bool swin = false;
    for (const auto & item : sd) swin = swin || item.key().rfind("layers.", 0) == 0;
    if (!o.model.empty() && (o.model.rfind("swin_", 0) == 0) != swin) {
        throw ImportError(path + ": the file holds a " + (swin ? "Swin (tensors under layers.*)" : "DeiT / ViT (no layers.*)") +
                          " but --model " + o.model + " is a " + (swin ? "DeiT" : "Swin"));
    }
    return swin;
}

ImportedArchitecture import_architecture(StateDict & sd, const ImportOptions & o, std::set<std::string> & fresh,
                                         std::vector<std::string> & adaptations, const std::string & path) {
    if (is_swin_state_dict(sd, o, path)) {
        bool converted = false;
        sd = swin_to_timm_layout(sd, &converted);
        if (converted) {
            adaptations.push_back("Microsoft's original Swin layout mapped to timm's (patch merging moved to the start of the next "
                                  "stage, head -> head.fc, relative_position_index and attn_mask dropped: they are rebuilt)");
        }
        spec::SwinConfig c = infer_swin_architecture(sd, o, path);
        for (auto & line : adapt(sd, c, o, fresh, path)) adaptations.push_back(std::move(line));
        return {model_section(c), c.in_chans, c.num_classes, c.img_size, 0.9};
    }
    spec::DeitConfig c = infer_architecture(sd, o, path);
    for (auto & line : adapt(sd, c, o, fresh, path)) adaptations.push_back(std::move(line));
    return {model_section(c), c.in_chans, c.num_classes, c.img_size, 0.875};
}

}  // namespace

ImportSummary import_checkpoint(const std::string & path, const ImportOptions & o, const std::string & out) {
    ImportSummary summary;
    StateDict sd = read_state_dict(path, &summary.found_at);
    std::set<std::string> fresh;
    const ImportedArchitecture a = import_architecture(sd, o, fresh, summary.adaptations, path);

    // timm's pretrained normalisation; for one channel, its mean over RGB.
    std::vector<double> mean = {0.485, 0.456, 0.406}, std = {0.229, 0.224, 0.225};
    if (a.in_chans == 1) mean = {0.449}, std = {0.226};
    if (!o.mean.empty()) mean = o.mean;
    if (!o.std.empty()) std = o.std;
    if (static_cast<int64_t>(mean.size()) != a.in_chans || static_cast<int64_t>(std.size()) != a.in_chans) {
        throw ImportError("--mean and --std need one value per input channel (" + std::to_string(a.in_chans) + ")");
    }
    // An RGB import is evaluated as timm evaluates its pretrained models (crop_pct, bicubic).
    const bool rgb = a.in_chans == 3;
    std::ostringstream crop;
    crop << (rgb ? a.rgb_crop_pct : 0.0);
    const std::string toml = a.model_toml + "\n[data]\nname = \"" + (rgb ? "imagefolder" : "fashion-mnist") + "\"\nmean = " +
                             numbers(mean) + "\nstd = " + numbers(std) + "\ncrop_pct = " + crop.str() + "\n";
    CheckpointState state;
    try {
        state.config = parse_config(toml, "import of " + path);
    } catch (const std::exception & e) {
        throw ImportError(e.what());
    }
    state.shape = DataShape{a.num_classes, a.in_chans, a.img_size};
    for (int64_t k = 0; k < a.num_classes; ++k) state.class_names.push_back(std::to_string(k));
    torch::manual_seed(o.seed);
    VisionModel model{nullptr};
    try {
        model = build_stage_model(state.config, state.shape, 0);
    } catch (const std::invalid_argument & e) {
        throw ImportError(path + ": " + e.what());
    }
    load_into(model, sd, fresh, o, path);
    save_checkpoint(out, state, *model, nullptr);
    summary.model = model;
    return summary;
}

std::vector<std::string> train_overrides(const std::string & imported_checkpoint) {
    const TrainConfig config = read_checkpoint_state(imported_checkpoint).config;
    const ModelSection & m = config.model;
    std::vector<std::string> sets = {"model.name=" + m.name};
    const std::pair<const char *, double> sizes[] = {{"embed_dim", m.embed_dim},   {"depth", m.depth},
                                                     {"num_heads", m.num_heads},   {"img_size", m.img_size},
                                                     {"patch_size", m.patch_size}, {"mlp_ratio", m.mlp_ratio},
                                                     {"window_size", static_cast<double>(m.window_size)}};
    for (const auto & [key, value] : sizes) {
        std::ostringstream s;
        s << "model." << key << "=" << value;
        if (value != 0) sets.push_back(s.str());
    }
    auto list = [](const std::vector<int64_t> & v) {
        std::string s;
        for (const int64_t x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
        return "[" + s + "]";
    };
    if (!m.depths.empty()) sets.push_back("model.depths=" + list(m.depths));
    if (!m.stage_heads.empty()) sets.push_back("model.stage_heads=" + list(m.stage_heads));
    sets.push_back("data.mean=" + numbers(config.data.mean));
    sets.push_back("data.std=" + numbers(config.data.std));
    if (config.data.crop_pct > 0) sets.push_back("data.crop_pct=" + std::to_string(config.data.crop_pct));
    return sets;
}

size_t export_timm(const std::string & checkpoint, const std::string & out) {
    LoadedModel loaded = load_model(checkpoint);
    format::SafetensorsWriter writer;
    writer.set_metadata("format", "pt");  // what timm's and Hugging Face's loaders expect of a state dict
    writer.set_metadata("bitvit.recipe", loaded.state.config.to_toml());
    writer.set_metadata("bitvit.architecture", loaded.model->architecture_json());
    size_t count = 0;
    auto add = [&](const torch::OrderedDict<std::string, torch::Tensor> & tensors) {
        for (const auto & item : tensors) {
            const torch::Tensor t = item.value().detach().to(torch::kFloat).contiguous();
            const std::string name = is_method_tensor(item.key()) ? "bitvit." + item.key() : item.key();
            writer.add(name, format::DType::F32, t.sizes().vec(), t.data_ptr(), static_cast<size_t>(t.numel()) * sizeof(float));
            ++count;
        }
    };
    add(loaded.model->named_parameters());
    add(loaded.model->named_buffers());
    writer.write(out);
    return count;
}

}  // namespace bitvit
