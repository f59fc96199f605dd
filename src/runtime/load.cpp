// Loading a packed model (docs/format.md): every field of a possibly hostile file is checked against
// the architecture it declares and the quantizer table before anything is computed — metadata
// (format, version, checksum, architecture, preprocessing, class names, sites), then each tensor's
// dtype, shape and values — and weights are repacked for this CPU's kernels.
#include <cmath>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

#include "format/text.h"
#include "runtime/model.h"
#include "spec/sites.h"
#include "spec/windows.h"

namespace bitvit::runtime {

using format::DType;
using format::FormatError;
using nlohmann::json;

namespace {

std::string shape_str(const std::vector<int64_t> & shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size() && i < 8; ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    if (shape.size() > 8) s += ", … (" + std::to_string(shape.size()) + " dimensions)";
    return s + "]";
}

// Reads tensors of a container by name with the dtype and shape the architecture requires, and
// remembers which it read, so tensors nobody asked for can be reported.
class TensorReader {
  public:
    explicit TensorReader(const format::SafetensorsFile & file) : file_(file) {}

    [[noreturn]] void fail(const std::string & problem) const { throw FormatError(file_.origin() + ": " + problem); }
    bool has(const std::string & name) const { return file_.has(name); }
    const format::SafetensorsFile & file() const { return file_; }

    template <typename T>
    std::vector<T> read(const std::string & name, DType dtype, const std::vector<int64_t> & shape) {
        if (!file_.has(name)) fail("missing tensor '" + name + "'");
        const format::TensorInfo & info = file_.info(name);
        if (info.dtype != dtype) {
            fail("tensor '" + name + "' has dtype " + format::dtype_name(info.dtype) + ", expected " + format::dtype_name(dtype));
        }
        if (info.shape != shape) fail("tensor '" + name + "' has shape " + shape_str(info.shape) + ", expected " + shape_str(shape));
        std::vector<T> out(static_cast<size_t>(info.numel()));
        if (!out.empty()) std::memcpy(out.data(), file_.data(name), out.size() * sizeof(T));  // little-endian file and host
        used_.insert(name);
        return out;
    }
    // A float tensor: F32, or F16 (widened exactly) where half storage is allowed — format version 2
    // files on, except activation-site parameters (allow_half false), which decide thresholds.
    std::vector<float> f32(const std::string & name, const std::vector<int64_t> & shape, bool allow_half = true) {
        std::vector<float> v;
        if (allow_half && half_storage_ && file_.has(name) && file_.info(name).dtype == DType::F16) {
            const std::vector<uint16_t> halves = read<uint16_t>(name, DType::F16, shape);
            v.reserve(halves.size());
            for (uint16_t h : halves) v.push_back(format::f16_to_f32(h));
        } else {
            v = read<float>(name, DType::F32, shape);
        }
        for (float f : v) {
            if (!std::isfinite(f)) fail("tensor '" + name + "' holds a non-finite value");
        }
        return v;
    }
    void allow_half_storage(bool allow) { half_storage_ = allow; }
    void check_all_used() const {
        for (const auto & [name, info] : file_.tensors()) {
            if (!used_.count(name)) fail("unexpected tensor " + format::excerpt(name) + " (not part of this architecture and method)");
        }
    }

  private:
    const format::SafetensorsFile & file_;
    std::set<std::string> used_;
    bool half_storage_ = false;
};

// One site's entry of the "sites" metadata: {"quantizer": name, "options": {name: number}}.
struct SiteEntry {
    std::string quantizer;
    std::map<std::string, double> options;
};

// The "sites" metadata, checked against the architecture's sites (spec/sites.h) and the quantizer
// table: every key names a site, every entry is well formed, every quantizer serves its site.
std::map<std::string, SiteEntry> read_sites(const json & sites, const std::map<std::string, spec::SiteSpec> & known,
                                            const std::string & model, const std::string & example, TensorReader & r) {
    if (!sites.is_object()) r.fail("metadata 'sites' must be a JSON object");
    std::map<std::string, SiteEntry> out;
    for (const auto & [site, entry] : sites.items()) {
        const std::string where = "sites." + format::excerpt(site);
        const auto it = known.find(site);
        if (it == known.end()) r.fail(where + " names no site of " + format::excerpt(model) + " (sites look like " + example + ")");
        if (!entry.is_object() || !entry.contains("quantizer") || !entry.at("quantizer").is_string()) {
            r.fail(where + " must be an object with a \"quantizer\" name");
        }
        SiteEntry e;
        e.quantizer = entry.at("quantizer").get<std::string>();
        const spec::QuantizerRow * row = spec::find_quantizer(e.quantizer);
        if (!row) r.fail(where + ": unknown quantizer " + format::excerpt(e.quantizer) + " (known: " + spec::quantizer_names_list() + ")");
        if (!spec::serves(*row, it->second.site_class)) {
            r.fail(where + ": quantizer " + row->name + " cannot quantize " + spec::site_classes(it->second.site_class));
        }
        for (const auto & [key, value] : entry.items()) {
            if (key == "quantizer") continue;
            if (key != "options" || !value.is_object()) r.fail(where + " has an unknown field " + format::excerpt(key));
            for (const auto & [name, number] : value.items()) {
                if (!number.is_number()) r.fail(where + ".options." + format::excerpt(name) + " must be a number");
                e.options[name] = number.get<double>();
            }
        }
        out.emplace(site, std::move(e));
    }
    return out;
}

// The quantizer of one activation site: its entry and its parameter tensors "<site>.<param>" (1-D
// F32), checked by ActQuantizer::validate against the table.
ActQuantizer read_act_site(const spec::SiteSpec & site, const std::map<std::string, SiteEntry> & sites, TensorReader & r) {
    const auto entry = sites.find(site.name);
    std::map<std::string, std::vector<float>> params;
    const std::string prefix = site.name + ".";
    for (auto it = r.file().tensors().lower_bound(prefix); it != r.file().tensors().end(); ++it) {
        const std::string & tensor = it->first;
        if (tensor.compare(0, prefix.size(), prefix) != 0) break;
        const std::string param = tensor.substr(prefix.size());
        if (param.find('.') != std::string::npos) continue;
        if (it->second.shape.size() != 1) r.fail("tensor " + format::excerpt(tensor) + " must be 1-D, has shape " + shape_str(it->second.shape));
        params[param] = r.f32(tensor, it->second.shape, /*allow_half=*/false);
    }
    try {
        ActQuantizer q = entry == sites.end() ? ActQuantizer::named("", std::move(params))
                                              : ActQuantizer::named(entry->second.quantizer, std::move(params), entry->second.options);
        q.validate(site.name, site.site_class, site.channels);
        return q;
    } catch (const std::invalid_argument & e) {
        r.fail(e.what());
    }
}

// A layer's weight in the encoding its site's quantizer promises (docs/format.md):
//   no quantizer            <w> F32 [out, in...]
//   ±1 plane (sign, xnor…)  <w>.sign U64 [out, kw] + <w>.scale F32 [out]
//   ternary (twn)           <w>.sign + <w>.mask U64 [out, kw] + <w>.scale
//   int8 codes (lsq)        <w>.codes I8 [out, in] + <w>.scale F32 [out] [+ <w>.zero_point I32 [out]]
// inputs: what the layer's input quantizer gives (prepare_weight).
Operand read_weight(const std::string & w, int64_t out, int64_t in, const std::vector<int64_t> & fp_shape,
                    const std::map<std::string, SiteEntry> & sites, TensorReader & r, LayerInputs inputs) {
    Operand op;
    op.rows = out;
    op.k = in;
    const auto entry = sites.find(w);
    if (entry == sites.end()) {
        if (r.has(w + ".sign") || r.has(w + ".mask") || r.has(w + ".codes")) {
            r.fail("weight '" + w + "' is stored packed but metadata 'sites' gives it no quantizer");
        }
        op.values = r.f32(w, fp_shape);
    } else {
        if (r.has(w)) r.fail("site " + w + " is quantized but its weight is stored in full precision");
        const spec::Encoding encoding = spec::find_quantizer(entry->second.quantizer)->encoding;
        if (!entry->second.options.empty()) r.fail("sites." + w + " has options; weight sites take none");
        const std::vector<int64_t> bits_shape = {out, b1_words(in)};
        if (encoding == spec::Encoding::int8_codes) {
            op.kind = Operand::Kind::int8;
            op.codes = r.read<int8_t>(w + ".codes", DType::I8, {out, in});
            op.scale = r.f32(w + ".scale", {out});
            op.zero = r.has(w + ".zero_point") ? r.read<int32_t>(w + ".zero_point", DType::I32, {out})
                                               : std::vector<int32_t>(static_cast<size_t>(out), 0);
        } else {
            op.kind = Operand::Kind::planes;
            Plane p;
            p.sign = r.read<uint64_t>(w + ".sign", DType::U64, bits_shape);
            if (encoding == spec::Encoding::ternary_planes) p.mask = r.read<uint64_t>(w + ".mask", DType::U64, bits_shape);
            p.scale = r.f32(w + ".scale", {out});
            op.planes.push_back(std::move(p));
        }
    }
    try {
        validate_operand(op, "weight " + w);
    } catch (const std::invalid_argument & e) {
        r.fail(e.what());
    }
    prepare_weight(op, inputs);
    return op;
}

Linear read_linear(const std::string & name, int64_t in, int64_t out, bool bias, const std::map<std::string, spec::SiteSpec> & site_specs,
                   const std::map<std::string, SiteEntry> & sites, TensorReader & r, const std::vector<int64_t> & fp_shape = {}) {
    Linear l;
    l.input = read_act_site(site_specs.at(name + ".input"), sites, r);
    l.weight = read_weight(name + ".weight", out, in, fp_shape.empty() ? std::vector<int64_t>{out, in} : fp_shape, sites, r,
                           l.input.token_operand());
    if (bias) l.bias = r.f32(name + ".bias", {out});
    return l;
}

LayerNorm read_norm(const std::string & name, int64_t dim, float eps, TensorReader & r) {
    return LayerNorm{r.f32(name + ".weight", {dim}), r.f32(name + ".bias", {dim}), eps};
}

// The sizes of one transformer block: width, heads, MLP width, the tokens attention sees at once
// (a window's on Swin), and the LayerNorm eps (timm: 1e-6 for DeiT, torch's 1e-5 for Swin).
struct BlockShape {
    int64_t dim, heads, hidden, tokens;
    bool qkv_bias;
    float eps;
};

Block read_block(const std::string & p, const BlockShape & s, const spec::BlockVariant & variant,
                 const std::map<std::string, spec::SiteSpec> & specs, const std::map<std::string, SiteEntry> & sites, TensorReader & r) {
    const int64_t D = s.dim, H = s.heads, N = s.tokens, d = D / H;
    Block b;
    b.norm1 = read_norm(p + "norm1", D, s.eps, r);
    b.norm2 = read_norm(p + "norm2", D, s.eps, r);
    const bool bias = variant.linear_bias;
    b.qkv = read_linear(p + "attn.qkv", D, 3 * D, s.qkv_bias && bias, specs, sites, r);
    b.proj = read_linear(p + "attn.proj", D, D, bias, specs, sites, r);
    b.fc1 = read_linear(p + "mlp.fc1", D, s.hidden, bias, specs, sites, r);
    b.fc2 = read_linear(p + "mlp.fc2", s.hidden, D, bias, specs, sites, r);
    if (variant.qk_norm) {
        // torch::nn::LayerNorm's default eps, as the training model's norm_q / norm_k.
        b.norm_q = read_norm(p + "attn.norm_q", d, 1e-5f, r);
        b.norm_k = read_norm(p + "attn.norm_k", d, 1e-5f, r);
    }
    if (variant.qkv_shift) {
        b.shift_q = r.f32(p + "attn.shift_q", {H, 1, d});
        b.shift_k = r.f32(p + "attn.shift_k", {H, 1, d});
        b.shift_v = r.f32(p + "attn.shift_v", {H, 1, d});
    }
    if (variant.attn_bias) b.attn_bias = r.f32(p + "attn.attn_bias", {H, N, N});
    if (variant.mlp_act == "rprelu") {
        b.act_shift = r.f32(p + "mlp.act_shift", {s.hidden});
        b.act_slope = r.f32(p + "mlp.act_slope", {s.hidden});
        b.act_bias = r.f32(p + "mlp.act_bias", {s.hidden});
    }
    b.q = read_act_site(specs.at(p + "attn.q"), sites, r);
    b.k = read_act_site(specs.at(p + "attn.k"), sites, r);
    b.v = read_act_site(specs.at(p + "attn.v"), sites, r);
    b.probs = read_act_site(specs.at(p + "attn.probs"), sites, r);
    // Without a softmax the probs site gets raw scores: only Bool (BiBERT) or full precision reads them.
    if (!variant.softmax && b.probs.row && !b.probs.is(spec::Quantizer::bool_)) {
        r.fail("architecture.softmax is false but " + p + "attn.probs uses " + b.probs.name() + ", which expects probabilities");
    }
    return b;
}

// Swin's relative position bias table [(2M − 1)², H] expanded to the bias of every pair of a
// window's tokens, [H, M², M²] (spec/windows.h).
std::vector<float> read_window_bias(const std::string & name, int64_t M, int64_t H, TensorReader & r) {
    const std::vector<float> table = r.f32(name, {(2 * M - 1) * (2 * M - 1), H});
    const std::vector<int64_t> index = spec::swin_relative_position_index(M);
    const int64_t T = M * M;
    std::vector<float> bias(static_cast<size_t>(H * T * T));
    for (int64_t h = 0; h < H; ++h) {
        for (int64_t i = 0; i < T * T; ++i) bias[h * T * T + i] = table[index[i] * H + h];
    }
    return bias;
}

// A metadata entry parsed as bounded-depth JSON (format/text.h).
json meta_json(const format::SafetensorsFile & file, const char * key, TensorReader & r) {
    const auto it = file.metadata().find(key);
    if (it == file.metadata().end()) r.fail(std::string("metadata lacks '") + key + "' (is this a bitvit packed model?)");
    try {
        return format::parse_json(it->second, std::string("metadata '") + key + "'");
    } catch (const std::invalid_argument & e) {
        r.fail(e.what());
    }
}

// format and format_version; verifies the checksum (required from version 3). Returns the version.
int64_t read_version(const format::SafetensorsFile & file, TensorReader & r) {
    const auto & meta = file.metadata();
    const auto format_it = meta.find("format");
    if (format_it == meta.end() || format_it->second != "bitvit-packed") {
        r.fail("not a bitvit packed model (metadata 'format' is not \"bitvit-packed\")");
    }
    const json version = meta_json(file, "format_version", r);
    if (!version.is_number_integer() || version.get<int64_t>() < 1 || version.get<int64_t>() > kPackedFormatVersion) {
        r.fail("format_version " + format::excerpt_json(version) + " is not supported (this runtime reads versions 1 to " +
               std::to_string(kPackedFormatVersion) + ")");
    }
    const auto checksum = meta.find("checksum");
    if (checksum == meta.end()) {
        if (version.get<int64_t>() >= 3) r.fail("metadata lacks 'checksum' (required from format version 3)");
    } else if (checksum->second != "sha256:" + file.content_digest("checksum")) {
        r.fail("checksum mismatch: the file's content is not what was written (corrupt or edited)");
    }
    return version.get<int64_t>();
}

}  // namespace

// Fills a PackedModel from a validated container (a friend of PackedModel).
struct PackedModelLoader {
    static void read_metadata(PackedModel & m, const format::SafetensorsFile & file, TensorReader & r);
    static void read_deit_tensors(PackedModel & m, const std::map<std::string, SiteEntry> & sites, TensorReader & r);
    static void read_swin_tensors(PackedModel & m, const std::map<std::string, SiteEntry> & sites, TensorReader & r);
    static std::map<std::string, spec::SiteSpec> site_specs(const PackedModel & m);
};

PackedModel PackedModel::load(const std::string & path) { return from_file(format::SafetensorsFile::load(path)); }

void PackedModelLoader::read_metadata(PackedModel & m, const format::SafetensorsFile & file, TensorReader & r) {
    auto & config_ = m.config_;
    auto & method_ = m.method_;
    auto & class_names_ = m.class_names_;
    auto & mean_ = m.mean_;
    auto & std_ = m.std_;
    const int64_t version = read_version(file, r);
    r.allow_half_storage(version >= 2);
    try {
        const json architecture = meta_json(file, "architecture", r);
        m.swin_ = spec::is_swin_architecture(architecture);
        if (m.swin_) {
            m.swin_config_ = spec::swin_architecture_from_json(architecture);
        } else {
            config_ = spec::architecture_from_json(architecture);
        }
    } catch (const std::invalid_argument & e) {
        r.fail(e.what());
    }
    if (m.swin_ && version < 4) r.fail("a Swin model needs format_version 4 or later");
    const auto method_it = file.metadata().find("method");
    method_ = method_it == file.metadata().end() ? "" : method_it->second;
    if (method_.size() > 256) r.fail("metadata 'method' is longer than 256 characters");
    if (file.metadata().count("class_names")) {  // optional: names for the predictions
        const json names = meta_json(file, "class_names", r);
        if (!names.is_array() || static_cast<int64_t>(names.size()) != m.num_classes()) {
            r.fail("metadata 'class_names' must be an array of " + std::to_string(m.num_classes()) + " names (one per class)");
        }
        for (const auto & name : names) {
            if (!name.is_string() || name.get_ref<const std::string &>().size() > 256) r.fail("metadata 'class_names' holds a non-string or a name over 256 characters");
            class_names_.push_back(name.get<std::string>());
        }
    }
    // Pixels in [0, 1] are normalised as (x − mean)/std: a mean far outside [0, 1] or a tiny or huge
    // std is no normalisation a model was trained with, and overflows or underflows the input.
    const json pre = meta_json(file, "preprocess", r);
    for (const char * key : {"mean", "std"}) {
        if (!pre.is_object() || !pre.contains(key)) r.fail(std::string("preprocess lacks '") + key + "'");
        const json & v = pre.at(key);
        if (!v.is_array() || static_cast<int64_t>(v.size()) != m.in_chans()) {
            r.fail(std::string("preprocess.") + key + " must hold one number per input channel");
        }
        const bool is_mean = std::string(key) == "mean";
        for (const auto & x : v) {
            const double lo = is_mean ? -16.0 : 1e-3, hi = is_mean ? 16.0 : 1e3;
            if (!x.is_number() || !(x.get<double>() >= lo && x.get<double>() <= hi)) {
                r.fail(std::string("preprocess.") + key + " values must be numbers in [" + (is_mean ? "-16, 16" : "0.001, 1000") + "]");
            }
            (is_mean ? mean_ : std_).push_back(x.get<float>());
        }
    }
    if (pre.size() != 2) r.fail("preprocess has fields other than mean and std");
}

void PackedModelLoader::read_deit_tensors(PackedModel & m, const std::map<std::string, SiteEntry> & sites, TensorReader & r) {
    const ModelConfig & c = m.config_;
    auto & patch_embed_ = m.patch_embed_;
    auto & cls_token_ = m.cls_token_;
    auto & dist_token_ = m.dist_token_;
    auto & pos_embed_ = m.pos_embed_;
    auto & blocks_ = m.blocks_;
    auto & norm_ = m.norm_;
    auto & head_ = m.head_;
    auto & head_dist_ = m.head_dist_;
    const std::map<std::string, spec::SiteSpec> specs = site_specs(m);
    const int64_t D = c.embed_dim, H = c.num_heads, N = c.num_tokens(), P = c.patch_size;
    patch_embed_ = read_linear("patch_embed.proj", c.in_chans * P * P, D, true, specs, sites, r, {D, c.in_chans, P, P});
    cls_token_ = r.f32("cls_token", {1, 1, D});
    if (c.distilled) dist_token_ = r.f32("dist_token", {1, 1, D});
    pos_embed_ = r.f32("pos_embed", {1, N, D});
    for (int64_t i = 0; i < c.depth; ++i) {
        const BlockShape shape{D, H, c.hidden(), N, c.qkv_bias, 1e-6f};
        blocks_.push_back(read_block("blocks." + std::to_string(i) + ".", shape, c.variant, specs, sites, r));
    }
    norm_ = read_norm("norm", D, 1e-6f, r);
    head_ = read_linear("head", D, c.num_classes, true, specs, sites, r);
    if (c.distilled) head_dist_ = read_linear("head_dist", D, c.num_classes, true, specs, sites, r);
    r.check_all_used();
}

std::map<std::string, spec::SiteSpec> PackedModelLoader::site_specs(const PackedModel & m) {
    std::map<std::string, spec::SiteSpec> specs;
    for (auto & s : m.swin_ ? spec::swin_sites(m.swin_config_) : spec::deit_sites(m.config_)) specs.emplace(s.name, s);
    return specs;
}

void PackedModelLoader::read_swin_tensors(PackedModel & m, const std::map<std::string, SiteEntry> & sites, TensorReader & r) {
    const spec::SwinConfig & c = m.swin_config_;
    const std::map<std::string, spec::SiteSpec> specs = site_specs(m);
    const int64_t D0 = c.embed_dim, P = c.patch_size;
    constexpr float eps = 1e-5f;  // torch::nn::LayerNorm's default, as timm's Swin and the training model
    m.patch_embed_ = read_linear("patch_embed.proj", c.in_chans * P * P, D0, true, specs, sites, r, {D0, c.in_chans, P, P});
    m.patch_norm_ = read_norm("patch_embed.norm", D0, eps, r);
    for (int64_t i = 0; i < c.num_stages(); ++i) {
        const std::string layer = "layers." + std::to_string(i) + ".";
        SwinStage stage;
        stage.dim = c.stage_dim(i);
        stage.heads = c.num_heads[i];
        stage.resolution = c.stage_resolution(i);
        stage.window = c.stage_window(i);
        if (i > 0) {
            const int64_t merged = 4 * c.stage_dim(i - 1);
            stage.merge_norm = read_norm(layer + "downsample.norm", merged, eps, r);
            stage.reduction = read_linear(layer + "downsample.reduction", merged, stage.dim, false, specs, sites, r);
        }
        const int64_t M = stage.window;
        const BlockShape shape{stage.dim, stage.heads, c.stage_hidden(i), M * M, c.qkv_bias, eps};
        for (int64_t j = 0; j < c.depths[i]; ++j) {
            const std::string p = layer + "blocks." + std::to_string(j) + ".";
            Block b = read_block(p, shape, c.variant, specs, sites, r);
            b.window_bias = read_window_bias(p + "attn.relative_position_bias_table", M, stage.heads, r);
            b.shift = c.block_shift(i, j);
            if (b.shift > 0 && stage.shift_mask.empty()) stage.shift_mask = spec::swin_shift_mask(stage.resolution, M, b.shift);
            stage.blocks.push_back(std::move(b));
        }
        m.stages_.push_back(std::move(stage));
    }
    const int64_t last = c.stage_dim(c.num_stages() - 1);
    m.norm_ = read_norm("norm", last, eps, r);
    m.head_ = read_linear("head.fc", last, c.num_classes, true, specs, sites, r);
    r.check_all_used();
}

PackedModel PackedModel::from_file(const format::SafetensorsFile & file) {
    TensorReader r(file);
    PackedModel m;
    PackedModelLoader::read_metadata(m, file, r);
    const std::string example = m.swin_ ? "layers.0.blocks.1.attn.q, layers.1.downsample.reduction.weight, head.fc.weight"
                                        : "blocks.0.attn.q, head.weight";
    const std::map<std::string, SiteEntry> sites =
        read_sites(meta_json(file, "sites", r), PackedModelLoader::site_specs(m), m.name(), example, r);
    for (const auto & [site, entry] : sites) m.site_quantizers_[site] = entry.quantizer;
    if (m.swin_) {
        PackedModelLoader::read_swin_tensors(m, sites, r);
    } else {
        PackedModelLoader::read_deit_tensors(m, sites, r);
    }
    m.file_bytes_ = static_cast<int64_t>(file.size_bytes());
    return m;
}

std::string PackedModel::class_name(int64_t c) const {
    return c >= 0 && c < static_cast<int64_t>(class_names_.size()) ? class_names_[static_cast<size_t>(c)] : std::to_string(c);
}

}  // namespace bitvit::runtime
