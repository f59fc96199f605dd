// Fuzz target for the packed-model loader and the forward pass behind it: any file must either load
// into a model that runs (on any input, whatever its weights) or throw FormatError — never crash,
// hang or touch memory it does not own.
//
// The seeds are a tiny DeiT, with every weight encoding (±1 plane, ternary plane, int8 codes, F32 and
// F16 storage) and most activation quantizers, and a tiny Swin (windows, shift mask, position tables,
// binary patch merging), written here tensor by tensor, so a mutation lands in the
// runtime's parsing and validation rather than in the JSON syntax only. Mutations are structural
// (drop a tensor, change its dtype or shape, write NaN/huge values into it, edit a metadata number
// or name) or byte-level. ctest runs this under AddressSanitizer and UBSan for a bounded time.
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "format/safetensors.h"
#include "fuzz-driver.h"
#include "runtime/model.h"

using namespace bitvit;
using format::DType;
using nlohmann::json;

namespace {

struct Tensor {
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
};
struct File {
    std::map<std::string, std::string> metadata;
    std::map<std::string, Tensor> tensors;

    // With `reseal`, a checksum matching the content (a crafted file's), so mutations reach the
    // structural checks behind it; without, the checksum itself is what refuses them.
    std::vector<uint8_t> serialize(bool reseal = true) const {
        format::SafetensorsWriter w;
        for (const auto & [k, v] : metadata) w.set_metadata(k, v);
        for (const auto & [name, t] : tensors) w.add(name, t.dtype, t.shape, t.bytes.data(), t.bytes.size());
        if (reseal) w.set_metadata("checksum", "sha256:" + w.content_digest("checksum"));
        return w.serialize();
    }
};

template <typename T>
Tensor make(DType dtype, std::vector<int64_t> shape, const std::vector<T> & values) {
    Tensor t{dtype, std::move(shape), std::vector<uint8_t>(values.size() * sizeof(T))};
    std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
    return t;
}

Tensor f32(std::vector<int64_t> shape, std::mt19937_64 & rng) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::normal_distribution<float> g(0.0f, 0.5f);
    std::vector<float> v(static_cast<size_t>(n));
    for (float & x : v) x = g(rng);
    return make(DType::F32, std::move(shape), v);
}

// Random finite F16 values in ±[2^-5, 2^6): the half-storage path of format version 2.
Tensor f16(std::vector<int64_t> shape, std::mt19937_64 & rng) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<uint16_t> v(static_cast<size_t>(n));
    for (uint16_t & h : v) h = static_cast<uint16_t>((rng() % 2) << 15 | (10 + rng() % 11) << 10 | (rng() % 1024));
    return make(DType::F16, std::move(shape), v);
}

// A DeiT on 4×4×1 images: 2×2 patches (4 + cls tokens), dim 4, one block, 2 heads, hidden 8, 3 classes.
File seed_model() {
    std::mt19937_64 rng(7);
    File f;
    f.metadata["format"] = "bitvit-packed";
    f.metadata["format_version"] = "3";  // F16 tensors below; a checksum
    f.metadata["method"] = "fuzz";
    f.metadata["architecture"] = json{{"name", "fuzz"},     {"img_size", 4},      {"patch_size", 2},  {"in_chans", 1},
                                      {"num_classes", 3},   {"embed_dim", 4},     {"depth", 1},       {"num_heads", 2},
                                      {"mlp_ratio", 2.0},   {"qkv_bias", true},   {"distilled", false}, {"qk_norm", false},
                                      {"softmax", true},    {"qkv_shift", false}, {"attn_bias", false}, {"mlp_clip", 0.0},
                                      {"mlp_act", "gelu"}}
                                     .dump();
    f.metadata["preprocess"] = R"({"mean": [0.5], "std": [0.25]})";
    f.metadata["sites"] = json{{"blocks.0.attn.qkv.weight", {{"quantizer", "pws"}}},
                               {"blocks.0.attn.qkv.input", {{"quantizer", "rsign"}}},
                               {"blocks.0.attn.q", {{"quantizer", "sign"}}},
                               {"blocks.0.attn.k", {{"quantizer", "actbi"}}},
                               {"blocks.0.attn.v", {{"quantizer", "gsb_value"}}},
                               {"blocks.0.attn.probs", {{"quantizer", "sab"}, {"options", {{"beta", 0.25}}}}},
                               {"blocks.0.attn.proj.weight", {{"quantizer", "twn"}}},
                               {"blocks.0.attn.proj.input", {{"quantizer", "elastic_unsigned"}}},
                               {"blocks.0.mlp.fc1.weight", {{"quantizer", "lsq"}}},
                               {"blocks.0.mlp.fc1.input", {{"quantizer", "lsq"}, {"options", {{"qn", -128}, {"qp", 127}}}}},
                               {"blocks.0.mlp.fc2.input", {{"quantizer", "actbi"}}}}
                             .dump();
    auto & t = f.tensors;
    t["patch_embed.proj.weight"] = f32({4, 1, 2, 2}, rng);
    t["patch_embed.proj.bias"] = f32({4}, rng);
    t["cls_token"] = f32({1, 1, 4}, rng);
    t["pos_embed"] = f16({1, 5, 4}, rng);
    for (const char * n : {"blocks.0.norm1", "blocks.0.norm2", "norm"}) {
        t[std::string(n) + ".weight"] = f32({4}, rng);
        t[std::string(n) + ".bias"] = f32({4}, rng);
    }
    t["blocks.0.attn.qkv.weight.sign"] = make<uint64_t>(DType::U64, {12, 1}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
    t["blocks.0.attn.qkv.weight.scale"] = f32({12}, rng);
    t["blocks.0.attn.qkv.bias"] = f32({12}, rng);
    t["blocks.0.attn.qkv.input.shift"] = f32({4}, rng);
    t["blocks.0.attn.k.alpha"] = make<float>(DType::F32, {2}, {0.5f, 2.0f});
    t["blocks.0.attn.k.zero_point"] = make<float>(DType::F32, {2}, {0.0f, 1.0f});
    t["blocks.0.attn.v.alphas"] = make<float>(DType::F32, {3}, {1.0f, 0.5f, 0.25f});
    t["blocks.0.attn.proj.weight.mask"] = make<uint64_t>(DType::U64, {4, 1}, {0xF, 0x5, 0xA, 0x3});
    t["blocks.0.attn.proj.weight.sign"] = make<uint64_t>(DType::U64, {4, 1}, {0x1, 0x4, 0x8, 0x0});
    t["blocks.0.attn.proj.weight.scale"] = f32({4}, rng);
    t["blocks.0.attn.proj.bias"] = f32({4}, rng);
    t["blocks.0.attn.proj.input.shift"] = f32({4}, rng);
    t["blocks.0.attn.proj.input.alpha"] = make<float>(DType::F32, {1}, {0.7f});
    std::vector<int8_t> codes(32);
    for (size_t i = 0; i < codes.size(); ++i) codes[i] = static_cast<int8_t>(static_cast<int>(i * 37) % 255 - 127);
    t["blocks.0.mlp.fc1.weight.codes"] = make(DType::I8, {8, 4}, codes);
    t["blocks.0.mlp.fc1.weight.scale"] = make<float>(DType::F32, {8}, std::vector<float>(8, 0.01f));
    t["blocks.0.mlp.fc1.bias"] = f32({8}, rng);
    t["blocks.0.mlp.fc1.input.step"] = make<float>(DType::F32, {1}, {0.05f});
    t["blocks.0.mlp.fc1.input.zero_point"] = make<float>(DType::F32, {1}, {3.0f});
    t["blocks.0.mlp.fc2.weight"] = f32({4, 8}, rng);
    t["blocks.0.mlp.fc2.bias"] = f32({4}, rng);
    t["blocks.0.mlp.fc2.input.alpha"] = make<float>(DType::F32, {8}, std::vector<float>(8, 1.5f));
    t["blocks.0.mlp.fc2.input.zero_point"] = make<float>(DType::F32, {8}, std::vector<float>(8, 0.0f));
    t["head.weight"] = f16({3, 4}, rng);
    t["head.bias"] = f32({3}, rng);
    return f;
}

// A Swin on 8×8×1 images: 2×2 patches (a 4×4 map), stage 0 of width 4 with one head and 2×2 windows
// (block 1 shifted, so a mask), a binary patch merging, stage 1 of width 8 with two heads on a 2×2
// map (window clipped, no shift), 3 classes; binary, ternary and SAB sites in both stages.
File swin_seed_model() {
    std::mt19937_64 rng(11);
    File f;
    f.metadata["format"] = "bitvit-packed";
    f.metadata["format_version"] = "4";
    f.metadata["method"] = "fuzz";
    f.metadata["architecture"] = json{{"family", "swin"},   {"name", "fuzz_swin"},  {"img_size", 8},       {"patch_size", 2},
                                      {"in_chans", 1},      {"num_classes", 3},     {"embed_dim", 4},      {"depths", {2, 1}},
                                      {"num_heads", {1, 2}}, {"window_size", 2},    {"mlp_ratio", 2.0},    {"qkv_bias", true},
                                      {"qk_norm", false},   {"softmax", true},      {"qkv_shift", false},  {"attn_bias", false},
                                      {"mlp_clip", 0.0},    {"mlp_act", "gelu"},    {"linear_bias", true}}
                                     .dump();
    f.metadata["preprocess"] = R"({"mean": [0.5], "std": [0.25]})";
    f.metadata["sites"] = json{{"layers.0.blocks.1.attn.qkv.weight", {{"quantizer", "pws"}}},
                               {"layers.0.blocks.1.attn.qkv.input", {{"quantizer", "rsign"}}},
                               {"layers.0.blocks.1.attn.q", {{"quantizer", "sign"}}},
                               {"layers.0.blocks.1.attn.k", {{"quantizer", "sign"}}},
                               {"layers.0.blocks.1.attn.probs", {{"quantizer", "sab"}, {"options", {{"beta", 0.25}}}}},
                               {"layers.1.downsample.reduction.weight", {{"quantizer", "pws"}}},
                               {"layers.1.downsample.reduction.input", {{"quantizer", "sign"}}},
                               {"layers.1.blocks.0.mlp.fc1.weight", {{"quantizer", "twn"}}}}
                             .dump();
    auto & t = f.tensors;
    auto norm = [&](const std::string & name, int64_t width) {
        t[name + ".weight"] = f32({width}, rng);
        t[name + ".bias"] = f32({width}, rng);
    };
    auto linear = [&](const std::string & name, int64_t out, int64_t in) {
        t[name + ".weight"] = f32({out, in}, rng);
        t[name + ".bias"] = f32({out}, rng);
    };
    t["patch_embed.proj.weight"] = f32({4, 1, 2, 2}, rng);
    t["patch_embed.proj.bias"] = f32({4}, rng);
    norm("patch_embed.norm", 4);
    const std::string blocks[] = {"layers.0.blocks.0.", "layers.0.blocks.1.", "layers.1.blocks.0."};
    const int64_t widths[] = {4, 4, 8}, heads[] = {1, 1, 2};
    for (int b = 0; b < 3; ++b) {
        const std::string & p = blocks[b];
        const int64_t C = widths[b];
        norm(p + "norm1", C);
        norm(p + "norm2", C);
        linear(p + "attn.qkv", 3 * C, C);
        linear(p + "attn.proj", C, C);
        linear(p + "mlp.fc1", 2 * C, C);
        linear(p + "mlp.fc2", C, 2 * C);
        t[p + "attn.relative_position_bias_table"] = f32({9, heads[b]}, rng);  // (2M − 1)² rows, M = 2
    }
    t.erase("layers.0.blocks.1.attn.qkv.weight");
    t["layers.0.blocks.1.attn.qkv.weight.sign"] = make<uint64_t>(DType::U64, {12, 1}, {3, 5, 6, 9, 10, 12, 1, 2, 4, 8, 7, 14});
    t["layers.0.blocks.1.attn.qkv.weight.scale"] = f32({12}, rng);
    t["layers.0.blocks.1.attn.qkv.input.shift"] = f32({4}, rng);
    norm("layers.1.downsample.norm", 16);
    t["layers.1.downsample.reduction.weight.sign"] = make<uint64_t>(DType::U64, {8, 1}, {0x1234, 0xFFFF, 0, 0xA5A5, 0x0F0F, 0x8001, 0x7FFE, 0x3C3C});
    t["layers.1.downsample.reduction.weight.scale"] = f32({8}, rng);
    t.erase("layers.1.blocks.0.mlp.fc1.weight");
    t["layers.1.blocks.0.mlp.fc1.weight.mask"] = make<uint64_t>(DType::U64, {16, 1}, std::vector<uint64_t>(16, 0xF3));
    t["layers.1.blocks.0.mlp.fc1.weight.sign"] = make<uint64_t>(DType::U64, {16, 1}, std::vector<uint64_t>(16, 0x51));
    t["layers.1.blocks.0.mlp.fc1.weight.scale"] = f32({16}, rng);
    norm("norm", 8);
    linear("head.fc", 3, 8);
    return f;
}

// Loads and runs one input; returns whether it loaded (and, given `why`, the loader's refusal).
bool run_one(const std::vector<uint8_t> & bytes, std::mt19937_64 & rng, std::string * why = nullptr) {
    try {
        const auto file = format::SafetensorsFile::parse(bytes, "fuzz");
        const auto model = runtime::PackedModel::from_file(file);
        std::vector<uint8_t> pixels(static_cast<size_t>(model.in_chans() * model.img_size() * model.img_size()));
        for (uint8_t & p : pixels) p = static_cast<uint8_t>(rng());
        const auto logits = model.predict(pixels.data(), 1, 1);
        volatile float sink = logits.at(0).at(0);
        (void)sink;
        return true;
    } catch (const format::FormatError & e) {
        if (why) *why = e.what();
        return false;
    }
}

// Replaces one number of a JSON metadata value (found anywhere in it) by an interesting one.
void edit_json_number(std::string & text, std::mt19937_64 & rng) {
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded()) return;
    static const json values[] = {0, -1, 1, 3, 1000000, 1e30, -1e30, 0.5, "x", nullptr, true};
    std::vector<json *> numbers;
    std::function<void(json &)> walk = [&](json & v) {
        if (v.is_number() || v.is_boolean() || v.is_string()) numbers.push_back(&v);
        if (v.is_object() || v.is_array()) {
            for (auto & child : v) walk(child);
        }
    };
    walk(j);
    if (!numbers.empty()) *numbers[rng() % numbers.size()] = values[rng() % (sizeof values / sizeof *values)];
    text = j.dump();
}

void mutate(File & f, std::mt19937_64 & rng) {
    auto pick = [&]() -> std::map<std::string, Tensor>::iterator {
        auto it = f.tensors.begin();
        std::advance(it, static_cast<std::ptrdiff_t>(rng() % f.tensors.size()));
        return it;
    };
    if (f.tensors.empty()) return;
    switch (rng() % 6) {
        case 0: f.tensors.erase(pick()); break;
        case 1: {  // another dtype of the same byte size where possible, else any
            static const DType dtypes[] = {DType::F32, DType::I32, DType::U32, DType::U64, DType::I8, DType::U8, DType::F16};
            Tensor & t = pick()->second;
            const DType d = dtypes[rng() % 7];
            const size_t old_size = format::dtype_size(t.dtype), new_size = format::dtype_size(d);
            if (t.bytes.size() % new_size == 0) {
                t.shape = {static_cast<int64_t>(t.bytes.size() / new_size)};
                t.dtype = d;
            }
            (void)old_size;
            break;
        }
        case 2: {  // a reshaped or resized tensor
            Tensor & t = pick()->second;
            const int64_t n = static_cast<int64_t>(rng() % 40);
            t.shape = rng() % 2 ? std::vector<int64_t>{n} : std::vector<int64_t>{n, 1};
            t.bytes.assign(static_cast<size_t>(n) * format::dtype_size(t.dtype), static_cast<uint8_t>(rng()));
            break;
        }
        case 3: {  // NaN, infinity, huge, zero or random bits written into a tensor
            Tensor & t = pick()->second;
            if (t.bytes.size() < 4) break;
            static const float specials[] = {std::nanf(""), INFINITY, -INFINITY, 1e38f, -1e38f, 0.0f, -0.0f, 1e-40f};
            const size_t at = (rng() % (t.bytes.size() / 4)) * 4;
            if (rng() % 2) {
                std::memcpy(t.bytes.data() + at, &specials[rng() % 8], 4);
            } else {
                t.bytes[at] = static_cast<uint8_t>(rng());
            }
            break;
        }
        case 4: {  // a metadata value
            auto it = f.metadata.begin();
            std::advance(it, static_cast<std::ptrdiff_t>(rng() % f.metadata.size()));
            if (rng() % 8 == 0) {
                f.metadata.erase(it);
            } else {
                edit_json_number(it->second, rng);
            }
            break;
        }
        default: {  // a renamed tensor
            auto it = pick();
            Tensor t = it->second;
            std::string name = it->first;
            f.tensors.erase(it);
            name[rng() % name.size()] = static_cast<char>('a' + rng() % 26);
            f.tensors[name] = t;
        }
    }
}

}  // namespace

int main(int argc, char ** argv) {
    const auto [seconds, seed] = bitvit::fuzz::parse_driver_args(argc, argv);
    std::mt19937_64 rng(seed);
    const File seeds[] = {seed_model(), swin_seed_model()};
    for (const File & seed_file : seeds) {
        std::string why;
        if (!run_one(seed_file.serialize(), rng, &why)) {
            std::printf("fuzz-packed-model: a seed model does not load: %s\n", why.c_str());
            return 1;
        }
    }
    const auto stop = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    uint64_t inputs = 0, loaded = 0;
    while (std::chrono::steady_clock::now() < stop) {
        for (int batch = 0; batch < 64; ++batch, ++inputs) {
            File f = seeds[inputs % 2];
            const int edits = 1 + static_cast<int>(rng() % 3);
            for (int e = 0; e < edits; ++e) mutate(f, rng);
            std::vector<uint8_t> bytes = f.serialize(rng() % 8 != 0);
            if (rng() % 4 == 0 && !bytes.empty()) bytes[rng() % bytes.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
            loaded += run_one(bytes, rng);
        }
    }
    // A crash or sanitizer report aborts before this line (-fno-sanitize-recover), with a non-zero exit.
    if (inputs == 0 || loaded == 0) {
        std::printf("fuzz-packed-model: %llu inputs, %llu loaded: the mutations never reach a loadable model\n",
                    static_cast<unsigned long long>(inputs), static_cast<unsigned long long>(loaded));
        return 1;
    }
    std::printf("fuzz-packed-model: %llu inputs (%llu loaded), 0 crashes (seed %llu)\n",
                static_cast<unsigned long long>(inputs), static_cast<unsigned long long>(loaded),
                static_cast<unsigned long long>(seed));
    return 0;
}
