#include "runtime/model.h"

#include "runtime/kernels/activations.h"
#include "runtime/parallel.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <thread>
#include <atomic>

namespace bitvit::runtime {

using format::DType;
using format::FormatError;
using nlohmann::json;

namespace {

std::string shape_str(const std::vector<int64_t> & shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

// Reads tensors of a container by name with the dtype and shape the architecture requires, and
// remembers which it read, so tensors nobody asked for can be reported.
class TensorReader {
  public:
    explicit TensorReader(const format::SafetensorsFile & file) : file_(file) {}

    [[noreturn]] void fail(const std::string & problem) const { throw FormatError(file_.origin() + ": " + problem); }
    bool has(const std::string & name) const { return file_.has(name); }

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
    // files, except activation-site parameters (allow_half false), which decide thresholds.
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
            if (!used_.count(name)) fail("unexpected tensor '" + name + "' (not part of this architecture and method)");
        }
    }

  private:
    const format::SafetensorsFile & file_;
    std::set<std::string> used_;
    bool half_storage_ = false;
};

const json & field(const json & object, const char * key, const std::string & where, TensorReader & r) {
    if (!object.is_object() || !object.contains(key)) r.fail(where + " lacks '" + key + "'");
    return object.at(key);
}

ModelConfig parse_config(const json & a, TensorReader & r) {
    ModelConfig c;
    auto integer = [&](const char * key, int64_t lo, int64_t hi) {
        const json & v = field(a, key, "architecture", r);
        if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi) {
            r.fail("architecture." + std::string(key) + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
        }
        return v.get<int64_t>();
    };
    auto boolean = [&](const char * key) {
        const json & v = field(a, key, "architecture", r);
        if (!v.is_boolean()) r.fail("architecture." + std::string(key) + " must be true or false");
        return v.get<bool>();
    };
    auto number = [&](const char * key, double lo, double hi) {
        const json & v = field(a, key, "architecture", r);
        if (!v.is_number() || !(v.get<double>() >= lo && v.get<double>() <= hi)) {
            r.fail("architecture." + std::string(key) + " must be a number in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
        }
        return v.get<double>();
    };
    const json & name = field(a, "name", "architecture", r);
    if (!name.is_string()) r.fail("architecture.name must be a string");
    c.name = name.get<std::string>();
    c.img_size = integer("img_size", 1, 4096);
    c.patch_size = integer("patch_size", 1, 4096);
    c.in_chans = integer("in_chans", 1, 64);
    c.num_classes = integer("num_classes", 1, 100000);
    c.embed_dim = integer("embed_dim", 1, 16384);
    c.depth = integer("depth", 1, 256);
    c.num_heads = integer("num_heads", 1, 1024);
    c.mlp_ratio = number("mlp_ratio", 0.01, 64);
    c.qkv_bias = boolean("qkv_bias");
    c.distilled = boolean("distilled");
    c.qk_norm = boolean("qk_norm");
    c.softmax = boolean("softmax");
    c.qkv_shift = boolean("qkv_shift");
    c.attn_bias = boolean("attn_bias");
    c.mlp_clip = number("mlp_clip", 0, 1e30);
    const json & act = field(a, "mlp_act", "architecture", r);
    if (!act.is_string() || (act != "gelu" && act != "relu" && act != "rprelu")) {
        r.fail("architecture.mlp_act must be \"gelu\", \"relu\" or \"rprelu\"");
    }
    c.mlp_act = act.get<std::string>();
    if (c.img_size % c.patch_size != 0) r.fail("architecture: img_size is not a multiple of patch_size");
    if (c.embed_dim % c.num_heads != 0) r.fail("architecture: embed_dim is not divisible by num_heads");
    if (c.hidden() < 1) r.fail("architecture: mlp_ratio gives an empty hidden layer");
    if (c.num_tokens() > 65536) r.fail("architecture: too many tokens");
    return c;
}

// The quantizer of one activation site: its metadata entry ({"quantizer", "options"}) and its
// parameter tensors "<site>.<param>" (1-D F32). Lengths are checked by ActQuantizer::validate.
ActQuantizer read_act_site(const std::string & site, int64_t channels, const json & sites, TensorReader & r,
                           const format::SafetensorsFile & file) {
    ActQuantizer q;
    if (sites.contains(site)) {
        const json & entry = sites.at(site);
        const json & name = field(entry, "quantizer", "sites." + site, r);
        if (!name.is_string()) r.fail("sites." + site + ".quantizer must be a string");
        q.name = name.get<std::string>();
        if (entry.contains("options")) {
            if (!entry.at("options").is_object()) r.fail("sites." + site + ".options must be an object");
            for (const auto & [key, value] : entry.at("options").items()) {
                if (!value.is_number()) r.fail("sites." + site + ".options." + key + " must be a number");
                q.options[key] = value.get<double>();
            }
        }
    }
    const std::string prefix = site + ".";
    for (const auto & [tensor, info] : file.tensors()) {
        if (tensor.compare(0, prefix.size(), prefix) != 0) continue;
        const std::string param = tensor.substr(prefix.size());
        if (param.find('.') != std::string::npos) continue;
        if (info.shape.size() != 1) r.fail("tensor '" + tensor + "' must be 1-D, has shape " + shape_str(info.shape));
        q.params[param] = r.f32(tensor, info.shape, /*allow_half=*/false);
    }
    try {
        q.validate(site, channels);
    } catch (const std::invalid_argument & e) {
        r.fail(e.what());
    }
    return q;
}

// A layer's weight in whichever encoding the file holds (docs/format.md):
//   <w> F32 [out, in...]                      full precision
//   <w>.sign U64 [out, kw] [+ <w>.mask] + <w>.scale F32 [out]     one binary or ternary plane
//   <w>.codes I8 [out, in] + <w>.scale F32 [out] [+ <w>.zero_point I32 [out]]   8-bit codes
// inputs: what the layer's input quantizer gives (prepare_weight).
Operand read_weight(const std::string & w, int64_t out, int64_t in, const std::vector<int64_t> & fp_shape, TensorReader & r,
                    LayerInputs inputs) {
    Operand op;
    op.rows = out;
    op.k = in;
    if (r.has(w)) {
        op.values = r.f32(w, fp_shape);
    } else if (r.has(w + ".sign") || r.has(w + ".mask")) {
        op.kind = Operand::Kind::planes;
        Plane p;
        const std::vector<int64_t> bits_shape = {out, b1_words(in)};
        if (r.has(w + ".sign")) p.sign = r.read<uint64_t>(w + ".sign", DType::U64, bits_shape);
        if (r.has(w + ".mask")) p.mask = r.read<uint64_t>(w + ".mask", DType::U64, bits_shape);
        p.scale = r.f32(w + ".scale", {out});
        op.planes.push_back(std::move(p));
    } else if (r.has(w + ".codes")) {
        op.kind = Operand::Kind::int8;
        op.codes = r.read<int8_t>(w + ".codes", DType::I8, {out, in});
        op.scale = r.f32(w + ".scale", {out});
        op.zero = r.has(w + ".zero_point") ? r.read<int32_t>(w + ".zero_point", DType::I32, {out})
                                           : std::vector<int32_t>(static_cast<size_t>(out), 0);
    } else {
        r.fail("missing weight '" + w + "' (as F32, .sign/.mask bit-planes or .codes)");
    }
    try {
        validate_operand(op, "weight " + w);
    } catch (const std::invalid_argument & e) {
        r.fail(e.what());
    }
    prepare_weight(op, inputs);
    return op;
}

Linear read_linear(const std::string & name, int64_t in, int64_t out, bool bias, const json & sites, TensorReader & r,
                   const format::SafetensorsFile & file, const std::vector<int64_t> & fp_shape = {}) {
    Linear l;
    l.input = read_act_site(name + ".input", in, sites, r, file);
    // Full precision, and LSQ codes that do not fit int8 codes (decoded), reach the weight as floats.
    const LayerInputs inputs = l.input.name.empty() ? LayerInputs::f32
                               : l.input.name == "lsq" ? (l.input.encodes_int8() ? LayerInputs::int8 : LayerInputs::f32)
                                                       : LayerInputs::planes;
    l.weight = read_weight(name + ".weight", out, in, fp_shape.empty() ? std::vector<int64_t>{out, in} : fp_shape, r, inputs);
    if (bias) l.bias = r.f32(name + ".bias", {out});
    return l;
}

LayerNorm read_norm(const std::string & name, int64_t dim, float eps, TensorReader & r) {
    return LayerNorm{r.f32(name + ".weight", {dim}), r.f32(name + ".bias", {dim}), eps};
}

// Max and min over a whole sample's tensor at a site, for the quantizers that need them (GSB).
std::pair<float, float> range_for(const ActQuantizer & q, const std::vector<float> & v) {
    if (!q.needs_range()) return {0.0f, 0.0f};
    const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
    return {*hi, *lo};
}

// Whether a quantizer's output depends on its input's sign alone (sign(0) = +1, sign(−0) = +1).
bool sign_only(const ActQuantizer & q) { return q.name == "sign" || q.name == "sign_approx"; }

// One head's operands from the qkv product's sign bits (rows [N] of b1_words(3·D) words: q, k, v
// side by side): q_bits and k_bits [N, b1_words(d)] (head h's columns of q and of k), vt_bits
// [d, b1_words(N)] (vᵀ: each value channel's tokens as one packed row, transposed 64 × 64 at a time).
void split_head_signs(const uint64_t * qkv_bits, int64_t N, int64_t D, int64_t d, int64_t h, uint64_t * q_bits,
                      uint64_t * k_bits, uint64_t * vt_bits) {
    const int64_t row_words = b1_words(3 * D), dw = b1_words(d), nw = b1_words(N);
    for (int64_t n = 0; n < N; ++n) {
        const uint64_t * row = qkv_bits + n * row_words;
        for (int64_t w = 0; w < dw; ++w) {
            const int64_t count = std::min<int64_t>(64, d - w * 64);
            q_bits[n * dw + w] = b1_field(row, h * d + w * 64, count);
            k_bits[n * dw + w] = b1_field(row, D + h * d + w * 64, count);
        }
    }
    for (int64_t n0 = 0; n0 < N; n0 += 64) {
        for (int64_t j0 = 0; j0 < d; j0 += 64) {
            const int64_t channels = std::min<int64_t>(64, d - j0);
            uint64_t block[64] = {};  // [token n0 + t] bit j: v's channel j0 + j; tokens past N stay 0
            for (int64_t t = 0; t < 64 && n0 + t < N; ++t) {
                block[t] = b1_field(qkv_bits + (n0 + t) * row_words, 2 * D + h * d + j0, channels);
            }
            transpose_b1_64x64(block);  // [channel j0 + j] bit t: token n0 + t
            for (int64_t j = 0; j < channels; ++j) vt_bits[(j0 + j) * nw + n0 / 64] = block[j];
        }
    }
}

}  // namespace

void LayerNorm::forward(const float * x, int64_t rows, int64_t dim, float * out) const {
    layer_norm_rows(x, rows, dim, weight.data(), bias.data(), eps, out);
}

void Linear::forward(const float * x, int64_t tokens, float * y, int threads) const {
    // Token quantizers act row by row, so chunks of tokens are independent products.
    parallel_for(tokens, threads_for(tokens * weight.k * weight.rows, threads), [&](int64_t t0, int64_t t1) {
        const Operand in = input.encode(x + t0 * weight.k, t1 - t0, weight.k, weight.k, SiteScope::token, 0);
        matmul(in, weight, y + t0 * weight.rows, bias.empty() ? nullptr : bias.data());
    });
}

void Linear::forward_signs(const float * x, int64_t tokens, uint64_t * bits, bool through_gelu, int threads) const {
    const int64_t out_words = b1_words(weight.rows);
    parallel_for(tokens, threads_for(tokens * weight.k * weight.rows, threads), [&](int64_t t0, int64_t t1) {
        const Operand in = input.encode(x + t0 * weight.k, t1 - t0, weight.k, weight.k, SiteScope::token, 0);
        const BgemmKernel & kernel = bgemm_kernel();
        const SignOut o{bits + t0 * out_words, nullptr, nullptr, bias.empty() ? nullptr : bias.data(), through_gelu,
                        gelu_negative_floor()};
        const bool xnor = is_pm1_plane(in) && is_pm1_plane(weight) && weight.planes[0].packed.n == weight.rows;
        if (xnor) {
            SignOut scaled = o;
            scaled.row_scale = in.planes[0].scale.data();
            scaled.col_scale = weight.planes[0].scale.data();
            kernel.gemm_signs(t1 - t0, in.planes[0].sign.data(), b1_words(weight.k), weight.planes[0].packed, scaled);
            return;
        }
        thread_local std::vector<float> values;
        values.resize(static_cast<size_t>((t1 - t0) * weight.rows));
        matmul(in, weight, values.data(), o.bias);
        pack_value_signs(values.data(), t1 - t0, weight.rows, o, o.bits, kernel.negative_bits);
    });
}

void Linear::forward_from_signs(const uint64_t * bits, int64_t tokens, float * y, int threads) const {
    const int64_t in_words = b1_words(weight.k);
    parallel_for(tokens, threads_for(tokens * weight.k * weight.rows, threads), [&](int64_t t0, int64_t t1) {
        const Operand in = input.encode_sign_bits(bits + t0 * in_words, t1 - t0, weight.k);
        matmul(in, weight, y + t0 * weight.rows, bias.empty() ? nullptr : bias.data());
    });
}

PackedModel PackedModel::load(const std::string & path) {
    const format::SafetensorsFile file = format::SafetensorsFile::load(path);
    return from_file(file);
}

PackedModel PackedModel::from_file(const format::SafetensorsFile & file) {
    TensorReader r(file);
    const auto & meta = file.metadata();
    auto meta_json = [&](const char * key) {
        const auto it = meta.find(key);
        if (it == meta.end()) r.fail(std::string("metadata lacks '") + key + "' (is this a bitvit packed model?)");
        json j = json::parse(it->second, nullptr, false);
        if (j.is_discarded()) r.fail(std::string("metadata '") + key + "' is not valid JSON");
        return j;
    };
    const auto format_it = meta.find("format");
    if (format_it == meta.end() || format_it->second != "bitvit-packed") {
        r.fail("not a bitvit packed model (metadata 'format' is not \"bitvit-packed\")");
    }
    const json version = meta_json("format_version");
    if (!version.is_number_integer() || version.get<int64_t>() < 1 || version.get<int64_t>() > kPackedFormatVersion) {
        r.fail("format_version " + version.dump() + " is not supported (this runtime reads versions 1 to " +
               std::to_string(kPackedFormatVersion) + ")");
    }
    r.allow_half_storage(version.get<int64_t>() >= 2);
    PackedModel m;
    m.config_ = parse_config(meta_json("architecture"), r);
    const ModelConfig & c = m.config_;
    const auto method_it = meta.find("method");
    m.method_ = method_it == meta.end() ? "" : method_it->second;
    const json sites = meta_json("sites");
    if (!sites.is_object()) r.fail("metadata 'sites' must be a JSON object");
    for (const auto & [site, entry] : sites.items()) {
        if (entry.is_object() && entry.contains("quantizer") && entry.at("quantizer").is_string()) {
            m.site_quantizers_[site] = entry.at("quantizer").get<std::string>();
        }
    }
    if (meta.count("class_names")) {  // optional: names for the predictions
        const json names = meta_json("class_names");
        if (!names.is_array() || static_cast<int64_t>(names.size()) != c.num_classes) {
            r.fail("metadata 'class_names' must be an array of " + std::to_string(c.num_classes) + " names (one per class)");
        }
        for (const auto & name : names) {
            if (!name.is_string()) r.fail("metadata 'class_names' holds a non-string");
            m.class_names_.push_back(name.get<std::string>());
        }
    }
    const json pre = meta_json("preprocess");
    for (const char * key : {"mean", "std"}) {
        const json & v = field(pre, key, "preprocess", r);
        if (!v.is_array() || static_cast<int64_t>(v.size()) != c.in_chans) {
            r.fail(std::string("preprocess.") + key + " must hold one number per input channel");
        }
        for (const auto & x : v) {
            if (!x.is_number() || !std::isfinite(x.get<double>())) r.fail(std::string("preprocess.") + key + " holds a non-number");
            (std::string(key) == "mean" ? m.mean_ : m.std_).push_back(x.get<float>());
        }
    }
    for (float s : m.std_) {
        if (!(s > 0.0f)) r.fail("preprocess.std must be positive");
    }

    const int64_t D = c.embed_dim, H = c.num_heads, N = c.num_tokens(), P = c.patch_size;
    m.patch_embed_ = read_linear("patch_embed.proj", c.in_chans * P * P, D, true, sites, r, file, {D, c.in_chans, P, P});
    m.cls_token_ = r.f32("cls_token", {1, 1, D});
    if (c.distilled) m.dist_token_ = r.f32("dist_token", {1, 1, D});
    m.pos_embed_ = r.f32("pos_embed", {1, N, D});
    for (int64_t i = 0; i < c.depth; ++i) {
        const std::string p = "blocks." + std::to_string(i) + ".";
        Block b;
        b.norm1 = read_norm(p + "norm1", D, 1e-6f, r);
        b.norm2 = read_norm(p + "norm2", D, 1e-6f, r);
        b.qkv = read_linear(p + "attn.qkv", D, 3 * D, c.qkv_bias, sites, r, file);
        b.proj = read_linear(p + "attn.proj", D, D, true, sites, r, file);
        b.fc1 = read_linear(p + "mlp.fc1", D, c.hidden(), true, sites, r, file);
        b.fc2 = read_linear(p + "mlp.fc2", c.hidden(), D, true, sites, r, file);
        if (c.qk_norm) {
            // torch::nn::LayerNorm's default eps, as the training model's norm_q / norm_k.
            b.norm_q = read_norm(p + "attn.norm_q", c.head_dim(), 1e-5f, r);
            b.norm_k = read_norm(p + "attn.norm_k", c.head_dim(), 1e-5f, r);
        }
        if (c.qkv_shift) {
            b.shift_q = r.f32(p + "attn.shift_q", {H, 1, c.head_dim()});
            b.shift_k = r.f32(p + "attn.shift_k", {H, 1, c.head_dim()});
            b.shift_v = r.f32(p + "attn.shift_v", {H, 1, c.head_dim()});
        }
        if (c.attn_bias) b.attn_bias = r.f32(p + "attn.attn_bias", {H, N, N});
        if (c.mlp_act == "rprelu") {
            b.act_shift = r.f32(p + "mlp.act_shift", {c.hidden()});
            b.act_slope = r.f32(p + "mlp.act_slope", {c.hidden()});
            b.act_bias = r.f32(p + "mlp.act_bias", {c.hidden()});
        }
        b.q = read_act_site(p + "attn.q", H, sites, r, file);
        b.k = read_act_site(p + "attn.k", H, sites, r, file);
        b.v = read_act_site(p + "attn.v", H, sites, r, file);
        b.probs = read_act_site(p + "attn.probs", H, sites, r, file);
        m.blocks_.push_back(std::move(b));
    }
    m.norm_ = read_norm("norm", D, 1e-6f, r);
    m.head_ = read_linear("head", D, c.num_classes, true, sites, r, file);
    if (c.distilled) m.head_dist_ = read_linear("head_dist", D, c.num_classes, true, sites, r, file);
    r.check_all_used();
    for (const auto & entry : m.site_quantizers_) {
        const std::string & site = entry.first;
        const bool is_weight = site.size() > 7 && site.compare(site.size() - 7, 7, ".weight") == 0;
        if (is_weight && r.has(site)) r.fail("site " + site + " is quantized but its weight is stored in full precision");
    }
    for (const auto & [name, info] : file.tensors()) m.file_bytes_ += static_cast<int64_t>(info.end - info.begin);
    return m;
}

std::string PackedModel::class_name(int64_t c) const {
    return c >= 0 && c < static_cast<int64_t>(class_names_.size()) ? class_names_[static_cast<size_t>(c)] : std::to_string(c);
}

void PackedModel::normalize(const uint8_t * pixels, float * image) const {
    const int64_t plane = config_.img_size * config_.img_size;
    for (int64_t c = 0; c < config_.in_chans; ++c) {
        // The training loader's arithmetic (src/train/loader.cpp), so inputs match bit for bit.
        const float scale = 1.0f / (255.0f * std_[c]);
        const float shift = -mean_[c] / std_[c];
        for (int64_t i = 0; i < plane; ++i) image[c * plane + i] = pixels[c * plane + i] * scale + shift;
    }
}

void PackedModel::attention(const Block & b, const float * x, float * out, int threads) const {
    const ModelConfig & c = config_;
    const int64_t D = c.embed_dim, H = c.num_heads, N = c.num_tokens(), d = c.head_dim();
    // Buffers reused from block to block (and image to image) on this thread: every element is
    // written before it is read, so they are resized, never cleared. The names below are references
    // (automatic variables), so the parallel regions' lambdas capture this thread's buffers rather
    // than naming the worker's own thread_local instance.
    struct Scratch {
        std::vector<float> qkv, q, k, vt, probs, merged;
        std::vector<uint64_t> qkv_bits, q_bits, k_bits, vt_bits;
    };
    thread_local Scratch scratch;
    auto & qkv = scratch.qkv;
    auto & q = scratch.q;
    auto & k = scratch.k;
    auto & vt = scratch.vt;
    auto & probs = scratch.probs;
    auto & merged = scratch.merged;
    auto & q_bits = scratch.q_bits;
    auto & k_bits = scratch.k_bits;
    auto & vt_bits = scratch.vt_bits;
    const int64_t dw = b1_words(d), nw = b1_words(N);
    // q, k and v reduced to their signs (every fully binary recipe): the qkv product hands over
    // bits (as fc1 does to fc2), and each head's operands are cut from them — no floats for q, k, v.
    const bool qkv_as_signs = sign_only(b.q) && sign_only(b.k) && sign_only(b.v) && !c.qk_norm && !c.qkv_shift;
    // Otherwise q, k and v are split into per-head floats; q and k are copied out only when something
    // changes them in place or a quantizer needs their whole-sample range, else each head reads its
    // columns of qkv [N, 3·D] in place (row stride 3·D).
    const bool qk_in_place = !c.qk_norm && !c.qkv_shift && !b.q.needs_range() && !b.k.needs_range();
    if (qkv_as_signs) {
        auto & qkv_bits = scratch.qkv_bits;
        qkv_bits.resize(static_cast<size_t>(N * b1_words(3 * D)));
        b.qkv.forward_signs(x, N, qkv_bits.data(), /*through_gelu=*/false, threads);
        q_bits.resize(static_cast<size_t>(H * N * dw));
        k_bits.resize(q_bits.size());
        vt_bits.resize(static_cast<size_t>(H * d * nw));
        parallel_for(H, threads_for(N * 3 * D * kElementwiseMacs, threads), [&](int64_t h0, int64_t h1) {
            for (int64_t h = h0; h < h1; ++h) {
                split_head_signs(qkv_bits.data(), N, D, d, h, &q_bits[h * N * dw], &k_bits[h * N * dw], &vt_bits[h * d * nw]);
            }
        });
    } else {
        qkv.resize(static_cast<size_t>(N * 3 * D));
        b.qkv.forward(x, N, qkv.data(), threads);
        // Per-head tensors [3][H, N, d] (vᵀ [H, d, N] for the probs·v product), heads split over
        // threads like the products that follow.
        if (!qk_in_place) for (auto * per_head : {&q, &k}) per_head->resize(static_cast<size_t>(H * N * d));
        vt.resize(static_cast<size_t>(H * N * d));
        parallel_for(H, threads_for(N * 3 * D * kElementwiseMacs, threads), [&](int64_t h0, int64_t h1) {
        for (int64_t h = h0; h < h1; ++h) {
            if (!qk_in_place) {
                for (int64_t n = 0; n < N; ++n) {
                    const float * row = qkv.data() + n * 3 * D + h * d;
                    std::copy(row, row + d, q.data() + (h * N + n) * d);
                    std::copy(row + D, row + D + d, k.data() + (h * N + n) * d);
                }
            }
            if (c.qk_norm) {
                b.norm_q.forward(q.data() + h * N * d, N, d, q.data() + h * N * d);
                b.norm_k.forward(k.data() + h * N * d, N, d, k.data() + h * N * d);
            }
            if (c.qkv_shift) {
                for (int64_t n = 0; n < N; ++n) {
                    for (int64_t j = 0; j < d; ++j) {
                        q[(h * N + n) * d + j] += b.shift_q[h * d + j];
                        k[(h * N + n) * d + j] += b.shift_k[h * d + j];
                    }
                }
            }
            // vᵀ in blocks of 16 tokens: each j writes 16 adjacent floats (one cache line) while the
            // block's 16 rows of v stay in L1.
            for (int64_t n0 = 0; n0 < N; n0 += 16) {
                const int64_t n1 = std::min<int64_t>(N, n0 + 16);
                for (int64_t j = 0; j < d; ++j) {
                    const float shift = c.qkv_shift ? b.shift_v[h * d + j] : 0.0f;
                    float * dst = vt.data() + (h * d + j) * N;
                    for (int64_t n = n0; n < n1; ++n) {
                        const float v = qkv[n * 3 * D + 2 * D + h * d + j];
                        dst[n] = c.qkv_shift ? v + shift : v;
                    }
                }
            }
        }
        });
    }
    const auto [q_max, q_min] = range_for(b.q, q);
    const auto [k_max, k_min] = range_for(b.k, k);
    const auto [v_max, v_min] = range_for(b.v, vt);
    // A sign quantizer on softmax probabilities (≥ 0, and sign(0) = +1) outputs +1 whatever q and k
    // are (the BNN baseline's attention): the scores need not be computed at all.
    const bool all_positive = c.softmax && !c.attn_bias && sign_only(b.probs);
    // SAB needs only which probabilities reach β·max: decided from the scores (act-quantizer.h).
    const bool sab_from_scores = c.softmax && !c.attn_bias && b.probs.name == "sab";
    probs.resize(static_cast<size_t>(H * N * N));
    if (all_positive) std::fill(probs.begin(), probs.end(), 1.0f);
    const auto scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
    const int head_threads = threads_for(H * N * N * d, threads);  // q·kᵀ and probs·v: N·N·d each per head
    if (!all_positive) parallel_for(H, head_threads, [&](int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; ++h) {
        const float * qh_in = qk_in_place ? qkv.data() + h * d : q.data() + h * N * d;
        const float * kh_in = qk_in_place ? qkv.data() + D + h * d : k.data() + h * N * d;
        const int64_t qk_ld = qk_in_place ? 3 * D : d;
        const Operand qh = qkv_as_signs ? b.q.encode_sign_bits(&q_bits[h * N * dw], N, d)
                                        : b.q.encode(qh_in, N, d, qk_ld, SiteScope::per_head, h, q_max, q_min);
        const Operand kh = qkv_as_signs ? b.k.encode_sign_bits(&k_bits[h * N * dw], N, d)
                                        : b.k.encode(kh_in, N, d, qk_ld, SiteScope::per_head, h, k_max, k_min);
        float * scores = probs.data() + h * N * N;
        matmul(qh, kh, scores);
        for (int64_t i = 0; i < N * N; ++i) scores[i] *= scale;
        if (c.softmax && !sab_from_scores) softmax_rows(scores, N, N, N);
        if (c.attn_bias) {
            for (int64_t i = 0; i < N * N; ++i) scores[i] += b.attn_bias[h * N * N + i];
        }
    }
    });
    const auto [p_max, p_min] = range_for(b.probs, probs);
    merged.resize(static_cast<size_t>(N * D));
    parallel_for(H, head_threads, [&](int64_t h0, int64_t h1) {
    std::vector<float> head_out(static_cast<size_t>(N * d));
    for (int64_t h = h0; h < h1; ++h) {
        const float * ph_in = probs.data() + h * N * N;
        const Operand ph = sab_from_scores ? b.probs.encode_sab_from_scores(ph_in, N, N, N)
                                           : b.probs.encode(ph_in, N, N, N, SiteScope::per_head, h, p_max, p_min);
        const Operand vh = qkv_as_signs ? b.v.encode_sign_bits(&vt_bits[h * d * nw], d, N)
                                        : b.v.encode(vt.data() + h * d * N, d, N, N, SiteScope::per_head, h, v_max, v_min);
        matmul(ph, vh, head_out.data());
        for (int64_t n = 0; n < N; ++n) std::copy(head_out.data() + n * d, head_out.data() + (n + 1) * d, merged.data() + n * D + h * d);
    }
    });
    b.proj.forward(merged.data(), N, out, threads);
}

std::vector<float> PackedModel::forward(const float * image, int threads, std::vector<std::vector<float>> * block_outputs) const {
    const ModelConfig & c = config_;
    const int64_t D = c.embed_dim, N = c.num_tokens(), P = c.patch_size, G = c.grid(), S = c.img_size;
    const int64_t patch_len = c.in_chans * P * P, first_patch = c.distilled ? 2 : 1;
    // im2col in the conv weight's (channel, row, column) order: patches [G·G, C·P·P].
    std::vector<float> patches(static_cast<size_t>(G * G * patch_len));
    for (int64_t gy = 0; gy < G; ++gy) {
        for (int64_t gx = 0; gx < G; ++gx) {
            float * dst = patches.data() + (gy * G + gx) * patch_len;
            for (int64_t ch = 0; ch < c.in_chans; ++ch) {
                for (int64_t y = 0; y < P; ++y) {
                    const float * src = image + ch * S * S + (gy * P + y) * S + gx * P;
                    std::copy(src, src + P, dst + (ch * P + y) * P);
                }
            }
        }
    }
    std::vector<float> x(static_cast<size_t>(N * D));
    patch_embed_.forward(patches.data(), G * G, x.data() + first_patch * D, threads);
    std::copy(cls_token_.begin(), cls_token_.end(), x.begin());
    if (c.distilled) std::copy(dist_token_.begin(), dist_token_.end(), x.begin() + D);
    for (size_t i = 0; i < x.size(); ++i) x[i] += pos_embed_[i];

    std::vector<float> normed(x.size()), branch(x.size()), hidden(static_cast<size_t>(N * c.hidden()));
    std::vector<uint64_t> hidden_bits;  // fc1's outputs as fc2's sign bits, when that is all fc2 needs
    const bool relu = c.mlp_act == "relu", rprelu = c.mlp_act == "rprelu";
    const int64_t H = c.hidden();
    // Token-wise passes (residual adds, LayerNorms, the MLP activation) split over tokens like the
    // linears, each fused into one pass over a token's values.
    auto per_token = [&](int64_t width, const std::function<void(int64_t, int64_t)> & fn) {
        parallel_for(N, threads_for(N * width * kElementwiseMacs, threads), fn);
    };
    per_token(D, [&](int64_t t0, int64_t t1) { blocks_.front().norm1.forward(&x[t0 * D], t1 - t0, D, &normed[t0 * D]); });
    for (size_t bi = 0; bi < blocks_.size(); ++bi) {
        const Block & b = blocks_[bi];
        attention(b, normed.data(), branch.data(), threads);
        per_token(D, [&](int64_t t0, int64_t t1) {
            for (int64_t i = t0 * D; i < t1 * D; ++i) x[i] += branch[i];
            b.norm2.forward(&x[t0 * D], t1 - t0, D, &normed[t0 * D]);
        });
        // fc2 keeps only the sign of a GELU or ReLU activation when its input quantizer is sign (a
        // clamp to ±clip keeps the sign too): GELU is reduced to its sign — exactly, including its
        // underflow to −0 far below zero — straight from fc1's products (no floats stored), and
        // ReLU's output is never negative.
        const bool only_sign = sign_only(b.fc2.input) && !rprelu;
        if (only_sign && !relu) {
            hidden_bits.resize(static_cast<size_t>(N * b1_words(H)));
            b.fc1.forward_signs(normed.data(), N, hidden_bits.data(), /*through_gelu=*/true, threads);
            b.fc2.forward_from_signs(hidden_bits.data(), N, branch.data(), threads);
        } else {
            b.fc1.forward(normed.data(), N, hidden.data(), threads);
            const auto clip = static_cast<float>(c.mlp_clip);
            per_token(H, [&](int64_t t0, int64_t t1) {
                float * h = &hidden[t0 * H];
                const int64_t count = (t1 - t0) * H;
                if (only_sign) {  // ReLU
                    std::fill(h, h + count, 1.0f);
                } else if (rprelu) {
                    for (int64_t i = 0; i < count; ++i) {
                        const int64_t ch = i % H;
                        const float shifted = h[i] + b.act_shift[ch];
                        h[i] = (shifted >= 0.0f ? shifted : shifted * b.act_slope[ch]) + b.act_bias[ch];
                    }
                } else if (relu) {
                    for (int64_t i = 0; i < count; ++i) h[i] = std::max(h[i], 0.0f);
                } else {
                    runtime::gelu(h, count);
                }
                if (c.mlp_clip > 0 && !only_sign) {
                    for (int64_t i = 0; i < count; ++i) h[i] = std::min(std::max(h[i], -clip), clip);
                }
            });
            b.fc2.forward(hidden.data(), N, branch.data(), threads);
        }
        // The residual add, then the next block's norm1 (or the final norm) on the same token.
        const LayerNorm & next_norm = bi + 1 < blocks_.size() ? blocks_[bi + 1].norm1 : norm_;
        per_token(D, [&](int64_t t0, int64_t t1) {
            for (int64_t i = t0 * D; i < t1 * D; ++i) x[i] += branch[i];
            next_norm.forward(&x[t0 * D], t1 - t0, D, &normed[t0 * D]);
        });
        if (block_outputs) block_outputs->push_back(x);
    }
    std::vector<float> logits(static_cast<size_t>(c.num_classes));
    head_.forward(normed.data(), 1, logits.data());
    if (c.distilled) {
        std::vector<float> dist(logits.size());
        head_dist_.forward(normed.data() + D, 1, dist.data());
        for (size_t i = 0; i < logits.size(); ++i) logits[i] = (logits[i] + dist[i]) / 2;
    }
    return logits;
}

std::vector<std::vector<float>> PackedModel::predict(const uint8_t * pixels, int64_t count, int threads) const {
    const int64_t image_size = config_.in_chans * config_.img_size * config_.img_size;
    std::vector<std::vector<float>> logits(static_cast<size_t>(count));
    std::atomic<int64_t> next{0};
    auto worker = [&] {
        std::vector<float> image(static_cast<size_t>(image_size));
        for (int64_t i = next++; i < count; i = next++) {
            normalize(pixels + i * image_size, image.data());
            logits[static_cast<size_t>(i)] = forward(image.data());
        }
    };
    const int n = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    if (count < n) {
        // Fewer images than threads (batch 1): split each image's tokens and heads instead.
        std::vector<float> image(static_cast<size_t>(image_size));
        for (int64_t i = 0; i < count; ++i) {
            normalize(pixels + i * image_size, image.data());
            logits[static_cast<size_t>(i)] = forward(image.data(), n);
        }
        return logits;
    }
    std::vector<std::thread> pool;
    for (int t = 1; t < n; ++t) pool.emplace_back(worker);
    worker();
    for (auto & t : pool) t.join();
    return logits;
}

}  // namespace bitvit::runtime
