#include "spec/architecture.h"

#include "format/text.h"

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace bitvit::spec {

using nlohmann::json;

bool BlockVariant::operator==(const BlockVariant & o) const {
    return qk_norm == o.qk_norm && softmax == o.softmax && qkv_shift == o.qkv_shift && attn_bias == o.attn_bias &&
           mlp_clip == o.mlp_clip && mlp_act == o.mlp_act && linear_bias == o.linear_bias;
}

const std::vector<std::string> & mlp_activations() {
    static const std::vector<std::string> names = {"gelu", "relu", "rprelu"};
    return names;
}

void BlockVariant::validate() const {
    bool known = false;
    for (const auto & a : mlp_activations()) known = known || a == mlp_act;
    if (!known) throw std::invalid_argument("mlp_act must be \"gelu\", \"relu\" or \"rprelu\"");
    if (!(std::isfinite(mlp_clip) && mlp_clip >= 0.0)) throw std::invalid_argument("mlp_clip must be a finite number >= 0 (0 = off)");
}

void DeitConfig::validate() const {
    auto fail = [&](const std::string & what) { throw std::invalid_argument("model '" + name + "': " + what); };
    if (img_size <= 0 || patch_size <= 0) fail("img_size and patch_size must be positive");
    if (img_size % patch_size != 0) {
        fail("img_size " + std::to_string(img_size) + " is not a multiple of patch_size " + std::to_string(patch_size));
    }
    if (in_chans <= 0 || num_classes <= 0 || embed_dim <= 0 || depth <= 0 || num_heads <= 0) {
        fail("in_chans, num_classes, embed_dim, depth and num_heads must be positive");
    }
    if (embed_dim % num_heads != 0) {
        fail("embed_dim " + std::to_string(embed_dim) + " is not divisible by num_heads " + std::to_string(num_heads));
    }
    if (!(mlp_ratio > 0.0) || hidden() < 1) fail("mlp_ratio must give a hidden layer of at least one unit");
    if (!(drop_path >= 0.0 && drop_path < 1.0)) fail("drop_path must be in [0, 1)");
    try {
        variant.validate();
    } catch (const std::invalid_argument & e) {
        fail(e.what());
    }
}

int64_t DeitConfig::parameter_count() const {
    const int64_t D = embed_dim, Hd = hidden(), bias = variant.linear_bias ? 1 : 0;
    const int64_t patch = (in_chans * patch_size * patch_size + 1) * D;
    const int64_t tokens = (distilled ? 2 : 1) * D + num_tokens() * D;
    int64_t block = 4 * D;                                   // norm1, norm2
    block += 3 * D * D + (qkv_bias && bias ? 3 * D : 0);     // qkv
    block += D * D + bias * D;                               // proj
    block += D * Hd + bias * Hd + Hd * D + bias * D;         // fc1, fc2
    const int64_t heads = (distilled ? 2 : 1) * (D * num_classes + num_classes);
    return patch + tokens + depth * block + 2 * D + heads;
}

namespace {

struct NamedConfig {
    const char * name;
    int64_t img_size, patch_size, in_chans, embed_dim, depth, num_heads;
};
// timm's DeiT sizes, and small configurations for 28×28 single-channel images (Fashion-MNIST):
//   deit_nano_patch7_28  — 16 patches, for tests and quick smoke runs;
//   deit_micro_patch4_28 — 49 patches, the experiment and teacher model of this project.
constexpr NamedConfig kConfigs[] = {
    {"deit_tiny_patch16_224", 224, 16, 3, 192, 12, 3},
    {"deit_small_patch16_224", 224, 16, 3, 384, 12, 6},
    {"deit_base_patch16_224", 224, 16, 3, 768, 12, 12},
    {"deit_nano_patch7_28", 28, 7, 1, 64, 4, 2},
    {"deit_micro_patch4_28", 28, 4, 1, 96, 6, 3},
};

}  // namespace

DeitConfig deit_config(const std::string & name) {
    const std::string suffix = "_distilled";
    const bool distilled = name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    const std::string base = distilled ? name.substr(0, name.size() - suffix.size()) : name;
    for (const auto & c : kConfigs) {
        if (base != c.name) continue;
        DeitConfig config;
        config.name = name;
        config.img_size = c.img_size;
        config.patch_size = c.patch_size;
        config.in_chans = c.in_chans;
        config.embed_dim = c.embed_dim;
        config.depth = c.depth;
        config.num_heads = c.num_heads;
        config.num_classes = c.img_size == 224 ? 1000 : 10;
        config.distilled = distilled;
        return config;
    }
    std::string known;
    for (const auto & n : deit_config_names()) known += (known.empty() ? "" : ", ") + n;
    for (const auto & n : swin_config_names()) known += ", " + n;
    throw std::invalid_argument("unknown model '" + name + "' (known: " + known + ")");
}

std::vector<std::string> deit_config_names() {
    std::vector<std::string> names;
    for (const auto & c : kConfigs) {
        names.emplace_back(c.name);
        names.emplace_back(std::string(c.name) + "_distilled");
    }
    return names;
}

void check_registered_sizes(const DeitConfig & c) {
    DeitConfig registered;
    try {
        registered = deit_config(c.name);
    } catch (const std::invalid_argument &) {
        return;  // a customised architecture: nothing to compare with
    }
    auto differs = [&](const char * field, double got, double want) {
        if (got == want) return;
        char buf[64];
        std::snprintf(buf, sizeof buf, "%g but '%s' has %g", got, c.name.c_str(), want);
        throw std::invalid_argument(std::string("architecture.") + field + " is " + buf +
                                    " (a customised architecture needs a name of its own)");
    };
    differs("img_size", c.img_size, registered.img_size);
    differs("patch_size", c.patch_size, registered.patch_size);
    differs("embed_dim", c.embed_dim, registered.embed_dim);
    differs("depth", c.depth, registered.depth);
    differs("num_heads", c.num_heads, registered.num_heads);
    differs("mlp_ratio", c.mlp_ratio, registered.mlp_ratio);
    differs("qkv_bias", c.qkv_bias, registered.qkv_bias);
    differs("distilled", c.distilled, registered.distilled);
}

int64_t SwinConfig::total_depth() const {
    int64_t n = 0;
    for (const int64_t d : depths) n += d;
    return n;
}

void SwinConfig::validate() const {
    auto fail = [&](const std::string & what) { throw std::invalid_argument("model '" + name + "': " + what); };
    if (img_size <= 0 || patch_size <= 0 || window_size <= 0) fail("img_size, patch_size and window_size must be positive");
    if (img_size % patch_size != 0) {
        fail("img_size " + std::to_string(img_size) + " is not a multiple of patch_size " + std::to_string(patch_size));
    }
    if (in_chans <= 0 || num_classes <= 0 || embed_dim <= 0) fail("in_chans, num_classes and embed_dim must be positive");
    if (depths.empty() || depths.size() > 8) fail("depths must list 1 to 8 stages");
    if (num_heads.size() != depths.size()) {
        fail("num_heads lists " + std::to_string(num_heads.size()) + " stages but depths lists " + std::to_string(depths.size()));
    }
    for (int64_t i = 0; i < num_stages(); ++i) {
        const std::string stage = "stage " + std::to_string(i) + ": ";
        if (depths[i] <= 0 || depths[i] > 64 || num_heads[i] <= 0) fail(stage + "depth must be in [1, 64] and num_heads positive");
        if (stage_dim(i) % num_heads[i] != 0) {
            fail(stage + "width " + std::to_string(stage_dim(i)) + " is not divisible by num_heads " + std::to_string(num_heads[i]));
        }
        // Patch merging takes 2×2 neighbourhoods: every stage it enters from needs an even resolution.
        if (i > 0 && stage_resolution(i - 1) % 2 != 0) {
            fail(stage + "patch merging needs an even resolution, stage " + std::to_string(i - 1) + " has " +
                 std::to_string(stage_resolution(i - 1)) + "×" + std::to_string(stage_resolution(i - 1)));
        }
    }
    if (!(mlp_ratio > 0.0) || stage_hidden(0) < 1) fail("mlp_ratio must give a hidden layer of at least one unit");
    if (!(drop_path >= 0.0 && drop_path < 1.0)) fail("drop_path must be in [0, 1)");
    try {
        variant.validate();
    } catch (const std::invalid_argument & e) {
        fail(e.what());
    }
}

int64_t SwinConfig::parameter_count() const {
    const int64_t bias = variant.linear_bias ? 1 : 0;
    int64_t n = (in_chans * patch_size * patch_size + 1) * embed_dim + 2 * embed_dim;  // proj, norm
    for (int64_t i = 0; i < num_stages(); ++i) {
        const int64_t D = stage_dim(i), Hd = stage_hidden(i), M = stage_window(i);
        if (i > 0) n += 2 * (2 * D) + (2 * D) * D;             // merge: norm over 4·(D/2), reduction, no bias
        int64_t block = 4 * D;                                  // norm1, norm2
        block += 3 * D * D + (qkv_bias && bias ? 3 * D : 0);    // qkv
        block += (2 * M - 1) * (2 * M - 1) * num_heads[i];      // relative position bias table
        block += D * D + bias * D;                              // proj
        block += D * Hd + bias * Hd + Hd * D + bias * D;        // fc1, fc2
        n += depths[i] * block;
    }
    const int64_t last = stage_dim(num_stages() - 1);
    return n + 2 * last + last * num_classes + num_classes;  // norm, head.fc
}

namespace {

struct NamedSwin {
    const char * name;
    int64_t img_size, patch_size, in_chans, embed_dim, window_size;
    std::vector<int64_t> depths, num_heads;
};
// timm's Swin sizes, and for 28×28 Fashion-MNIST images with patch 2 (14×14 tokens, 2×2 windows of
// 7×7, then one 7×7 window after the merge):
//   swin_nano_patch2_window7_28  — for tests and smoke runs;
//   swin_micro_patch2_window7_28 — the experiment model, about the DeiT micro model's OPs.
const std::vector<NamedSwin> & swin_registry() {
    static const std::vector<NamedSwin> configs = {
        {"swin_tiny_patch4_window7_224", 224, 4, 3, 96, 7, {2, 2, 6, 2}, {3, 6, 12, 24}},
        {"swin_small_patch4_window7_224", 224, 4, 3, 96, 7, {2, 2, 18, 2}, {3, 6, 12, 24}},
        {"swin_base_patch4_window7_224", 224, 4, 3, 128, 7, {2, 2, 18, 2}, {4, 8, 16, 32}},
        {"swin_nano_patch2_window7_28", 28, 2, 1, 16, 7, {2, 2}, {1, 2}},
        {"swin_micro_patch2_window7_28", 28, 2, 1, 48, 7, {2, 4}, {2, 4}},
    };
    return configs;
}

}  // namespace

SwinConfig swin_config(const std::string & name) {
    for (const auto & c : swin_registry()) {
        if (name != c.name) continue;
        SwinConfig config;
        config.name = name;
        config.img_size = c.img_size;
        config.patch_size = c.patch_size;
        config.in_chans = c.in_chans;
        config.embed_dim = c.embed_dim;
        config.window_size = c.window_size;
        config.depths = c.depths;
        config.num_heads = c.num_heads;
        config.num_classes = c.img_size == 224 ? 1000 : 10;
        return config;
    }
    std::string known;
    for (const auto & n : swin_config_names()) known += (known.empty() ? "" : ", ") + n;
    throw std::invalid_argument("unknown model '" + name + "' (known Swin models: " + known + ")");
}

bool is_swin_name(const std::string & name) {
    for (const auto & c : swin_registry()) {
        if (name == c.name) return true;
    }
    return false;
}

std::vector<std::string> swin_config_names() {
    std::vector<std::string> names;
    for (const auto & c : swin_registry()) names.emplace_back(c.name);
    return names;
}

namespace {

json variant_json(const BlockVariant & v) {
    return json{{"qk_norm", v.qk_norm},     {"softmax", v.softmax}, {"qkv_shift", v.qkv_shift}, {"attn_bias", v.attn_bias},
                {"mlp_clip", v.mlp_clip},   {"mlp_act", v.mlp_act}, {"linear_bias", v.linear_bias}};
}

}  // namespace

json architecture_json(const DeitConfig & c) {
    json j{{"name", c.name},         {"img_size", c.img_size},       {"patch_size", c.patch_size},
           {"in_chans", c.in_chans}, {"num_classes", c.num_classes}, {"embed_dim", c.embed_dim},
           {"depth", c.depth},       {"num_heads", c.num_heads},     {"mlp_ratio", c.mlp_ratio},
           {"qkv_bias", c.qkv_bias}, {"distilled", c.distilled}};
    j.update(variant_json(c.variant));
    return j;
}

json architecture_json(const SwinConfig & c) {
    json j{{"family", "swin"},         {"name", c.name},           {"img_size", c.img_size},
           {"patch_size", c.patch_size}, {"in_chans", c.in_chans}, {"num_classes", c.num_classes},
           {"embed_dim", c.embed_dim},   {"depths", c.depths},     {"num_heads", c.num_heads},
           {"window_size", c.window_size}, {"mlp_ratio", c.mlp_ratio}, {"qkv_bias", c.qkv_bias}};
    j.update(variant_json(c.variant));
    return j;
}

namespace {

// Typed, range-checked field access for a hostile object; every failure names the field.
class FieldReader {
  public:
    explicit FieldReader(const json & object) : o_(object) {
        if (!o_.is_object()) throw std::invalid_argument("architecture must be a JSON object");
    }
    const json & at(const char * key) const {
        if (!o_.contains(key)) throw std::invalid_argument(std::string("architecture lacks '") + key + "'");
        return o_.at(key);
    }
    int64_t integer(const char * key, int64_t lo, int64_t hi) const {
        const json & v = at(key);
        if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi) {
            fail(key, "must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
        }
        return v.get<int64_t>();
    }
    bool boolean(const char * key) const {
        const json & v = at(key);
        if (!v.is_boolean()) fail(key, "must be true or false");
        return v.get<bool>();
    }
    double number(const char * key, double lo, double hi) const {
        const json & v = at(key);
        if (!v.is_number() || !(v.get<double>() >= lo && v.get<double>() <= hi)) {
            fail(key, "must be a number in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
        }
        return v.get<double>();
    }
    std::string string(const char * key, size_t max_length) const {
        const json & v = at(key);
        if (!v.is_string() || v.get_ref<const std::string &>().size() > max_length) {
            fail(key, "must be a string of at most " + std::to_string(max_length) + " characters");
        }
        return v.get<std::string>();
    }
    bool has(const char * key) const { return o_.contains(key); }
    [[noreturn]] static void fail(const char * key, const std::string & problem) {
        throw std::invalid_argument(std::string("architecture.") + key + " " + problem);
    }

  private:
    const json & o_;
};

// What every architecture object starts with: no key its own architecture_json lacks, then the
// image and class fields.
template <typename Config>
void read_image_fields(const json & object, const FieldReader & f, Config & c) {
    const json known = architecture_json(Config{});
    for (const auto & item : object.items()) {
        if (!known.contains(item.key())) throw std::invalid_argument("architecture has an unknown field (" + format::excerpt(item.key()) + ")");
    }
    c.name = f.string("name", 256);
    c.img_size = f.integer("img_size", 1, 4096);
    c.patch_size = f.integer("patch_size", 1, 4096);
    c.in_chans = f.integer("in_chans", 1, 64);
    c.num_classes = f.integer("num_classes", 1, 100000);
}

// The block variant; files written before linear_bias existed (DeiT only) had biases everywhere.
BlockVariant read_variant(const FieldReader & f, bool linear_bias_optional) {
    BlockVariant v;
    v.qk_norm = f.boolean("qk_norm");
    v.softmax = f.boolean("softmax");
    v.qkv_shift = f.boolean("qkv_shift");
    v.attn_bias = f.boolean("attn_bias");
    v.mlp_clip = f.number("mlp_clip", 0, 1e30);
    v.mlp_act = f.string("mlp_act", 16);
    v.linear_bias = linear_bias_optional && !f.has("linear_bias") ? true : f.boolean("linear_bias");
    return v;
}

template <typename Config>
void validate_architecture(const Config & c) {
    try {
        c.validate();
    } catch (const std::invalid_argument & e) {
        throw std::invalid_argument(std::string("architecture: ") + e.what());
    }
}

}  // namespace

DeitConfig architecture_from_json(const json & object) {
    const FieldReader f(object);
    DeitConfig c;
    read_image_fields(object, f, c);
    c.embed_dim = f.integer("embed_dim", 1, 16384);
    c.depth = f.integer("depth", 1, 256);
    c.num_heads = f.integer("num_heads", 1, 1024);
    c.mlp_ratio = f.number("mlp_ratio", 0.01, 64);
    c.qkv_bias = f.boolean("qkv_bias");
    c.distilled = f.boolean("distilled");
    c.variant = read_variant(f, true);
    validate_architecture(c);
    if (c.num_tokens() > 65536) throw std::invalid_argument("architecture: too many tokens (img_size / patch_size)");
    check_registered_sizes(c);
    return c;
}

bool is_swin_architecture(const json & object) { return object.is_object() && object.contains("family"); }

SwinConfig swin_architecture_from_json(const json & object) {
    const FieldReader f(object);
    SwinConfig c;
    read_image_fields(object, f, c);
    if (f.string("family", 16) != "swin") FieldReader::fail("family", "must be \"swin\" (or absent, for a DeiT)");
    c.embed_dim = f.integer("embed_dim", 1, 4096);
    c.window_size = f.integer("window_size", 1, 64);
    c.mlp_ratio = f.number("mlp_ratio", 0.01, 64);
    c.qkv_bias = f.boolean("qkv_bias");
    for (const char * key : {"depths", "num_heads"}) {
        const json & list = f.at(key);
        if (!list.is_array() || list.empty() || list.size() > 8) FieldReader::fail(key, "must be an array of 1 to 8 integers");
        std::vector<int64_t> & out = std::string(key) == "depths" ? c.depths : c.num_heads;
        out.clear();
        for (const json & v : list) {
            if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > 1024) {
                FieldReader::fail(key, "must hold integers in [1, 1024]");
            }
            out.push_back(v.get<int64_t>());
        }
    }
    c.variant = read_variant(f, false);
    validate_architecture(c);
    // Stage widths double: the last one bounds every tensor's size.
    if (c.stage_dim(c.num_stages() - 1) > 16384) throw std::invalid_argument("architecture: the last stage is wider than 16384");
    if (c.stage_resolution(0) * c.stage_resolution(0) > 65536) throw std::invalid_argument("architecture: too many tokens (img_size / patch_size)");
    check_registered_sizes(c);
    return c;
}

void check_registered_sizes(const SwinConfig & c) {
    if (!is_swin_name(c.name)) return;  // a customised architecture: nothing to compare with
    const SwinConfig r = swin_config(c.name);
    const bool same = c.img_size == r.img_size && c.patch_size == r.patch_size && c.embed_dim == r.embed_dim &&
                      c.depths == r.depths && c.num_heads == r.num_heads && c.window_size == r.window_size &&
                      c.mlp_ratio == r.mlp_ratio && c.qkv_bias == r.qkv_bias;
    if (!same) {
        throw std::invalid_argument("architecture: sizes differ from the registered '" + c.name + "' (" +
                                    architecture_json(r).dump() + "); a customised architecture needs a name of its own");
    }
}

}  // namespace bitvit::spec
