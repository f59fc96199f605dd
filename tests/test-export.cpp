// The packed model format as a contract: an exported model loads and computes what LibTorch computes,
// the file is independent of the writer (standard safetensors, little-endian words), and every kind
// of corruption — a missing, mistyped, mis-shaped or extra tensor, a NaN scale, padding bits, a wrong
// version, unknown quantizers, an inconsistent architecture — is refused with a message naming it.
#include <gtest/gtest.h>
#include <stb_image_write.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "cli/runtime-commands.h"
#include "format/safetensors.h"
#include "train/quant/quantizers.h"
#include "runtime/model.h"
#include "train/checkpoint.h"
#include "train/export.h"

namespace fs = std::filesystem;
using namespace bitvit;
using format::DType;

namespace {

// A nano DeiT with GSB's quantizers and block variants on every site they serve and PWS / TWN / LSQ
// weights, its first-batch initialisations done: every kind of packed tensor appears in its export.
Deit quantized_nano() {
    DeitConfig config = deit_config("deit_nano_patch7_28_distilled");
    config.variant.qkv_shift = true;
    config.variant.attn_bias = true;
    config.variant.mlp_clip = 10.0;
    torch::manual_seed(0);
    Deit model(config);
    auto install = [&](const std::string & pattern, quant::QuantizerSpec spec) {
        for (const auto & site : model->site_names()) {
            if (site.size() >= pattern.size() && site.compare(site.size() - pattern.size(), pattern.size(), pattern) == 0) {
                model->install(site, quant::make_quantizer(spec, model->site_info(site)));
            }
        }
    };
    install("attn.qkv.weight", {"pws", {}});
    install("attn.qkv.input", {"elastic_signed", {}});
    install("attn.proj.weight", {"twn", {{"per_row", 1}}});
    install("attn.proj.input", {"lsq", {{"zero_point", 1}}});
    install("mlp.fc1.weight", {"bwn", {}});
    install("mlp.fc1.input", {"rsign", {}});
    install("mlp.fc2.weight", {"lsq", {{"per_channel", 1}}});
    install("mlp.fc2.input", {"elastic_unsigned", {}});
    install("attn.q", {"actbi", {}});
    install("attn.k", {"actbi", {}});
    install("attn.v", {"gsb_value", {}});
    install("attn.probs", {"gsb_attention", {}});
    {
        torch::NoGradGuard no_grad;
        model->train();
        model->forward(torch::randn({8, 1, 28, 28}));  // first-batch initialisation of every quantizer
        for (auto & p : model->parameters()) p.add_(torch::randn_like(p) * 0.01);  // no symmetric ties
    }
    model->eval();
    return model;
}

// The tensors and metadata of a safetensors file, editable and writable again.
struct EditableFile {
    struct Tensor {
        DType dtype;
        std::vector<int64_t> shape;
        std::vector<uint8_t> bytes;
    };
    std::map<std::string, std::string> metadata;
    std::map<std::string, Tensor> tensors;

    static EditableFile read(const std::string & path) {
        const auto file = format::SafetensorsFile::load(path);
        EditableFile e;
        e.metadata = file.metadata();
        for (const auto & [name, info] : file.tensors()) {
            const uint8_t * data = file.data(name);
            e.tensors[name] = Tensor{info.dtype, info.shape, std::vector<uint8_t>(data, data + (info.end - info.begin))};
        }
        return e;
    }
    // With `reseal`, the checksum is recomputed, as a crafted file would carry a matching one: what
    // the loader must then catch is the edit itself.
    std::vector<uint8_t> bytes(bool reseal = true) const {
        format::SafetensorsWriter w;
        for (const auto & [k, v] : metadata) w.set_metadata(k, v);
        for (const auto & [name, t] : tensors) w.add(name, t.dtype, t.shape, t.bytes.data(), t.bytes.size());
        if (reseal && metadata.count("checksum")) w.set_metadata("checksum", "sha256:" + w.content_digest("checksum"));
        return w.serialize();
    }
};

class PackedFormat : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        dir_ = fs::temp_directory_path() / ("bitvit-export-" + std::to_string(::getpid()));
        fs::create_directories(dir_);
        model_ = quantized_nano();
        export_packed(model_, ExportOptions{"test", {0.2860}, {0.3530}}, path());
    }
    static void TearDownTestSuite() {
        model_ = Deit{nullptr};
        fs::remove_all(dir_);
    }
    static std::string path() { return (dir_ / "nano.safetensors").string(); }

    // Edits the exported file and expects the runtime to refuse it with `needle` in the message.
    static void expect_refused(const std::function<void(EditableFile &)> & edit, const std::string & needle, bool reseal = true) {
        EditableFile e = EditableFile::read(path());
        edit(e);
        try {
            runtime::PackedModel::from_file(format::SafetensorsFile::parse(e.bytes(reseal), "edited.safetensors"));
            ADD_FAILURE() << "accepted a file that should fail with: " << needle;
        } catch (const format::FormatError & err) {
            EXPECT_NE(std::string(err.what()).find(needle), std::string::npos) << err.what();
            EXPECT_NE(std::string(err.what()).find("edited.safetensors"), std::string::npos) << err.what();
        }
    }

    static inline fs::path dir_;
    static inline Deit model_{nullptr};
};

}  // namespace

TEST_F(PackedFormat, RoundTripComputesWhatLibTorchComputes) {
    const auto packed = runtime::PackedModel::load(path());
    EXPECT_EQ(packed.name(), "deit_nano_patch7_28_distilled");
    EXPECT_EQ(packed.method(), "test");
    EXPECT_EQ(packed.site_quantizers().at("blocks.0.attn.probs"), "gsb_attention");
    EXPECT_EQ(packed.site_quantizers().at("blocks.3.mlp.fc2.weight"), "lsq");
    torch::manual_seed(1);
    const torch::Tensor pixels = torch::randint(0, 256, {16, 1, 28, 28}, torch::kUInt8);
    std::vector<float> image(784);
    torch::NoGradGuard no_grad;
    for (int64_t i = 0; i < 16; ++i) {
        packed.normalize(pixels[i].data_ptr<uint8_t>(), image.data());
        const std::vector<float> got = packed.forward(image.data());
        const torch::Tensor want = model_->forward(torch::from_blob(image.data(), {1, 1, 28, 28}).clone())[0];
        // Binary and integer products are exact on both sides; the float parts (LayerNorm, the
        // runtime's erf-based GELU and polynomial exp, summation order) differ by a few ulp — about
        // 1e-7 on these logits, measured. 1e-5 relative leaves a hundredfold margin, and a wrong
        // threshold or scale anywhere moves a logit by far more.
        for (int64_t c = 0; c < 10; ++c) {
            const float w = want[c].item<float>();
            EXPECT_NEAR(got[c], w, 1e-5 * (1 + std::fabs(w))) << "image " << i << " class " << c;
        }
    }
}

TEST_F(PackedFormat, HalfStorageHalvesTheFloatsAndStaysClose) {
    const std::string half_path = (dir_ / "nano-half.safetensors").string();
    export_packed(model_, ExportOptions{"test", {0.2860}, {0.3530}, /*half_storage=*/true}, half_path);
    const auto file = format::SafetensorsFile::load(half_path);
    EXPECT_EQ(file.metadata().at("format_version"), "2");
    EXPECT_EQ(file.info("pos_embed").dtype, DType::F16);
    EXPECT_EQ(file.info("head.weight").dtype, DType::F16);
    EXPECT_EQ(file.info("blocks.0.attn.qkv.weight.scale").dtype, DType::F16);
    EXPECT_EQ(file.info("blocks.0.attn.probs.alphas").dtype, DType::F32);  // thresholds stay exact
    EXPECT_EQ(format::SafetensorsFile::load(path()).metadata().at("format_version"), "1");
    EXPECT_LT(fs::file_size(half_path), fs::file_size(path()));

    // The runtime widens F16 exactly: the half file computes what an F32 file holding the widened
    // values computes, bit for bit. (Against LibTorch's unrounded model it differs by the F16
    // rounding itself, which depends on the model; nothing to bound here.)
    EditableFile widened = EditableFile::read(half_path);
    for (auto & [name, t] : widened.tensors) {
        if (t.dtype != DType::F16) continue;
        std::vector<float> values(t.bytes.size() / 2);
        for (size_t i = 0; i < values.size(); ++i) {
            uint16_t h;
            std::memcpy(&h, t.bytes.data() + 2 * i, 2);
            values[i] = format::f16_to_f32(h);
        }
        t.dtype = DType::F32;
        t.bytes.resize(values.size() * 4);
        std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
    }
    const auto packed = runtime::PackedModel::load(half_path);
    const auto as_f32 = runtime::PackedModel::from_file(format::SafetensorsFile::parse(widened.bytes(), "widened"));
    torch::manual_seed(1);
    const torch::Tensor pixels = torch::randint(0, 256, {8, 1, 28, 28}, torch::kUInt8).contiguous();
    EXPECT_EQ(packed.predict(pixels.data_ptr<uint8_t>(), 8, 1), as_f32.predict(pixels.data_ptr<uint8_t>(), 8, 1));
    std::vector<float> image(784);
    torch::NoGradGuard no_grad;
    double largest = 0;
    for (int64_t i = 0; i < 8; ++i) {
        packed.normalize(pixels[i].data_ptr<uint8_t>(), image.data());
        const std::vector<float> got = packed.forward(image.data());
        const torch::Tensor want = model_->forward(torch::from_blob(image.data(), {1, 1, 28, 28}).clone())[0];
        for (int64_t c = 0; c < 10; ++c) largest = std::max(largest, std::fabs(got[c] - want[c].item<double>()));
    }
    EXPECT_GT(largest, 0.0);  // not bit-identical to the F32 model: F16 rounding is real
}

// F16 is a version-2 feature, and never for activation-quantizer parameters.
TEST_F(PackedFormat, HalfTensorsAreRefusedWhereTheyDoNotBelong) {
    auto as_half = [](EditableFile::Tensor & t) {
        std::vector<uint8_t> halves(t.bytes.size() / 2, 0);
        for (size_t i = 0; i + 1 < halves.size(); i += 2) halves[i + 1] = 0x3C;  // 1.0
        t.bytes = halves;
        t.dtype = DType::F16;
    };
    expect_refused([&](EditableFile & e) { as_half(e.tensors.at("pos_embed")); }, "pos_embed' has dtype F16");
    expect_refused(
        [&](EditableFile & e) {
            e.metadata["format_version"] = "2";
            as_half(e.tensors.at("blocks.0.attn.probs.alphas"));
        },
        "blocks.0.attn.probs.alphas' has dtype F16");
    expect_refused([&](EditableFile & e) { e.metadata["format_version"] = "5"; }, "format_version '5' is not supported");
}

// Bi-ViT's blocks have no linear biases: the file says so (version 3), holds none, and computes
// what LibTorch computes.
TEST_F(PackedFormat, BlocksWithoutLinearBiasesRoundTrip) {
    DeitConfig config = deit_config("deit_nano_patch7_28");
    config.variant.linear_bias = false;
    torch::manual_seed(4);
    Deit model(config);
    for (const auto & site : model->site_names()) {
        if (site.rfind("blocks.", 0) != 0) continue;
        const SiteKind kind = model->site_info(site).kind;
        if (kind == SiteKind::weight) model->install(site, quant::make_quantizer({"xnor", {}}, model->site_info(site)));
    }
    for (const auto & p : model->named_parameters()) {
        for (const char * layer : {"attn.qkv.bias", "attn.proj.bias", "mlp.fc1.bias", "mlp.fc2.bias"}) {
            EXPECT_EQ(p.key().find(layer), std::string::npos) << p.key();
        }
    }
    model->eval();
    const std::string out = (dir_ / "no-bias.safetensors").string();
    export_packed(model, ExportOptions{"bi-vit", {0.2860}, {0.3530}}, out);
    const auto file = format::SafetensorsFile::load(out);
    EXPECT_EQ(file.metadata().at("format_version"), "3");
    EXPECT_FALSE(file.has("blocks.0.mlp.fc1.bias"));
    EXPECT_TRUE(file.has("head.bias"));
    const auto packed = runtime::PackedModel::load(out);
    EXPECT_FALSE(packed.deit_config().variant.linear_bias);
    std::vector<float> image(784);
    torch::NoGradGuard no_grad;
    for (int i = 0; i < 4; ++i) {
        for (auto & v : image) v = static_cast<float>(std::rand()) / RAND_MAX - 0.5f;
        const std::vector<float> got = packed.forward(image.data());
        const torch::Tensor want = model->forward(torch::from_blob(image.data(), {1, 1, 28, 28}).clone())[0];
        for (int64_t c = 0; c < 10; ++c) EXPECT_NEAR(got[c], want[c].item<float>(), 1e-4) << "image " << i << " class " << c;
    }
}

// Class names travel in the metadata: exported from the checkpoint, validated at load, used by `run`.
TEST_F(PackedFormat, ClassNamesTravelWithTheModel) {
    EXPECT_TRUE(runtime::PackedModel::load(path()).class_names().empty());  // optional: none recorded
    EXPECT_EQ(runtime::PackedModel::load(path()).class_name(3), "3");
    const int64_t classes = model_->config().num_classes;
    std::vector<std::string> names;
    for (int64_t c = 0; c < classes; ++c) names.push_back("class-" + std::to_string(c));
    const std::string named = (dir_ / "named.safetensors").string();
    export_packed(model_, ExportOptions{"test", {0.2860}, {0.3530}, false, names}, named);
    const auto packed = runtime::PackedModel::load(named);
    EXPECT_EQ(packed.class_names(), names);
    EXPECT_EQ(packed.class_name(2), "class-2");
    names.pop_back();
    EXPECT_THROW(export_packed(model_, ExportOptions{"test", {0.2860}, {0.3530}, false, names}, named), std::invalid_argument);
    expect_refused([](EditableFile & e) { e.metadata["class_names"] = "[\"a\", \"b\"]"; }, "class_names");
    expect_refused([&](EditableFile & e) { e.metadata["class_names"] = nlohmann::json(std::vector<int>(classes, 1)).dump(); },
                   "class_names");
    expect_refused([](EditableFile & e) { e.metadata["class_names"] = "{not json"; }, "class_names");
}

// `run` on image files: each file decoded, resized to the model's input, classified by name.
TEST_F(PackedFormat, RunClassifiesImageFiles) {
    const int64_t classes = model_->config().num_classes;
    std::vector<std::string> names;
    for (int64_t c = 0; c < classes; ++c) names.push_back("kind" + std::to_string(c));
    const std::string named = (dir_ / "run.safetensors").string();
    export_packed(model_, ExportOptions{"test", {0.2860}, {0.3530}, false, names}, named);
    std::vector<uint8_t> big(56 * 56);
    for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>((i * 37) % 251);
    const std::string image = (dir_ / "input.png").string();
    ASSERT_TRUE(stbi_write_png(image.c_str(), 56, 56, 1, big.data(), 56));

    cli::RunArgs args;
    args.model = named;
    args.image_files = {image};
    args.inputs.threads = 1;
    testing::internal::CaptureStdout();
    EXPECT_EQ(cli::run_command(args), 0);
    const std::string out = testing::internal::GetCapturedStdout();
    // What the runtime predicts for the same file, read and resized the same way.
    const auto packed = runtime::PackedModel::load(named);
    const std::vector<uint8_t> pixels = data::read_image_file(image, 1, 28, 28);
    const auto logits = packed.predict(pixels.data(), 1, 1)[0];
    const auto top = std::max_element(logits.begin(), logits.end()) - logits.begin();
    const std::string expected = image + ": kind" + std::to_string(top) + " (class " + std::to_string(top) + ", p 0.";
    EXPECT_NE(out.find(expected), std::string::npos) << out;
    EXPECT_EQ(out.find("accuracy"), std::string::npos) << "unlabelled files have no accuracy: " << out;

    args.image_files = {(dir_ / "missing.png").string()};
    EXPECT_THROW(cli::run_command(args), data::DataError);
}

TEST_F(PackedFormat, ThreadsSplitTheWorkWithoutChangingABit) {
    const auto packed = runtime::PackedModel::load(path());
    torch::manual_seed(2);
    const torch::Tensor pixels = torch::randint(0, 256, {5, 1, 28, 28}, torch::kUInt8).contiguous();
    const auto one = packed.predict(pixels.data_ptr<uint8_t>(), 5, 1);    // one thread
    const auto split = packed.predict(pixels.data_ptr<uint8_t>(), 5, 8);  // each image over 8 threads
    const auto images = packed.predict(pixels.data_ptr<uint8_t>(), 5, 3); // images over 3 threads
    EXPECT_EQ(one, split);
    EXPECT_EQ(one, images);
}

TEST_F(PackedFormat, WeightsArePackedAsTheirQuantizersPromise) {
    const auto file = format::SafetensorsFile::load(path());
    // PWS: one ±1 plane, 64 inputs -> one word per row; TWN ternary: sign and mask; LSQ: int8 codes.
    EXPECT_EQ(file.info("blocks.0.attn.qkv.weight.sign").dtype, DType::U64);
    EXPECT_EQ(file.info("blocks.0.attn.qkv.weight.sign").shape, (std::vector<int64_t>{192, 1}));
    EXPECT_TRUE(file.has("blocks.0.attn.proj.weight.mask"));
    EXPECT_EQ(file.info("blocks.0.mlp.fc2.weight.codes").dtype, DType::I8);
    EXPECT_EQ(file.info("blocks.0.mlp.fc2.weight.codes").shape, (std::vector<int64_t>{64, 256}));
    EXPECT_FALSE(file.has("blocks.0.attn.qkv.weight"));
    EXPECT_FALSE(file.has("blocks.0.attn.qkv.weight_quantizer.scale"));  // training state stays out
    EXPECT_EQ(file.info("blocks.0.attn.probs.alphas").shape, (std::vector<int64_t>{3}));
    EXPECT_EQ(file.metadata().at("format"), "bitvit-packed");
    EXPECT_EQ(file.metadata().at("format_version"), "1");
}

TEST_F(PackedFormat, CorruptionsAreRefusedWithTheirCause) {
    expect_refused([](EditableFile & e) { e.tensors.erase("blocks.1.norm2.bias"); }, "missing tensor 'blocks.1.norm2.bias'");
    expect_refused([](EditableFile & e) { e.tensors.erase("blocks.0.attn.qkv.weight.scale"); }, "blocks.0.attn.qkv.weight.scale");
    expect_refused([](EditableFile & e) { e.tensors["blocks.0.attn.qkv.weight.scale"].dtype = DType::I32; }, "dtype I32");
    expect_refused([](EditableFile & e) { e.tensors["pos_embed"].shape = {1, 64, 18}; }, "shape [1, 64, 18]");
    expect_refused(
        [](EditableFile & e) {
            auto & t = e.tensors["blocks.2.attn.proj.weight.scale"];
            const float nan = std::nanf("");
            std::memcpy(t.bytes.data() + 4, &nan, 4);
        },
        "non-finite");
    expect_refused(
        [](EditableFile & e) {
            // Set one sign bit where the ternary mask says the weight is 0.
            auto & sign = e.tensors["blocks.0.attn.proj.weight.sign"].bytes;
            const auto & mask = e.tensors["blocks.0.attn.proj.weight.mask"].bytes;
            for (size_t i = 0; i < sign.size(); ++i) {
                if (const auto outside = static_cast<uint8_t>(~mask[i])) {
                    sign[i] |= static_cast<uint8_t>(outside & -outside);
                    break;
                }
            }
        },
        "sign bits set outside the mask");
    expect_refused(
        [](EditableFile & e) {
            const std::vector<uint8_t> extra(4, 0);
            e.tensors["blocks.0.attn.secret"] = {DType::F32, {1}, extra};
        },
        "unexpected tensor 'blocks.0.attn.secret'");
    expect_refused([](EditableFile & e) { e.metadata.erase("architecture"); }, "lacks 'architecture'");
    expect_refused([](EditableFile & e) { e.metadata["sites"] = "{not json"; }, "'sites' is not valid JSON");
    expect_refused(
        [](EditableFile & e) {
            auto sites = nlohmann::json::parse(e.metadata["sites"]);
            sites["blocks.0.attn.q"]["quantizer"] = "sign_magic";
            e.metadata["sites"] = sites.dump();
        },
        "unknown quantizer 'sign_magic'");
    expect_refused(
        [](EditableFile & e) {
            auto arch = nlohmann::json::parse(e.metadata["architecture"]);
            arch["depth"] = 5;
            e.metadata["architecture"] = arch.dump();
        },
        "architecture.depth is 5 but 'deit_nano_patch7_28_distilled' has 4");
    expect_refused(
        [](EditableFile & e) {
            auto arch = nlohmann::json::parse(e.metadata["architecture"]);
            arch["depth"] = 5;
            arch["name"] = "my_deit";  // a customised architecture: its tensors must be there
            e.metadata["architecture"] = arch.dump();
        },
        "missing tensor 'blocks.4.norm1.weight'");
    expect_refused(
        [](EditableFile & e) {
            auto arch = nlohmann::json::parse(e.metadata["architecture"]);
            arch["num_heads"] = 3;
            e.metadata["architecture"] = arch.dump();
        },
        "not divisible");
    expect_refused([](EditableFile & e) { e.metadata["format"] = "something-else"; }, "not a bitvit packed model");
    // Deeply nested JSON in a metadata value, a 10 MB tensor name, a 100,000-dimension shape:
    // refused with short messages, no stack overflow.
    expect_refused([](EditableFile & e) { e.metadata["format_version"] = std::string(75000, '[') + std::string(75000, ']'); },
                   "nests deeper than 32 levels");
    for (auto * edit : {+[](EditableFile & e) { e.tensors[std::string(10 << 20, 'w')] = {DType::F32, {1}, std::vector<uint8_t>(4)}; },
                        +[](EditableFile & e) { e.tensors["pos_embed"].shape = std::vector<int64_t>(100000, 1); }}) {
        EditableFile e = EditableFile::read(path());
        edit(e);
        try {
            runtime::PackedModel::from_file(format::SafetensorsFile::parse(e.bytes(), "edited.safetensors"));
            ADD_FAILURE() << "accepted";
        } catch (const format::FormatError & err) {
            EXPECT_LT(std::string(err.what()).size(), 400u) << std::string(err.what()).substr(0, 300);
        }
    }
}

// Attention's fast paths give exactly what the generic path gives: q, k, v cut from qkv's sign
// bits, SAB decided from the scores, q and k read in place, an all-positive map without scores.
TEST(AttentionPaths, FastPathsEqualTheGenericPath) {
    const std::vector<std::vector<std::pair<std::string, std::string>>> methods = {
        {{"attn.qkv.weight", "xnor"}, {"attn.qkv.input", "sign"}, {"attn.q", "sign"}, {"attn.k", "sign"},
         {"attn.v", "sign"}, {"attn.probs", "sab"}},
        {{"attn.q", "sign"}, {"attn.k", "sign"}, {"attn.v", "sign"}, {"attn.probs", "sign"}},
        {{"attn.q", "elastic_signed"}, {"attn.k", "elastic_signed"}, {"attn.probs", "sab"}},
    };
    const fs::path dir = fs::temp_directory_path() / ("bitvit-paths-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    for (size_t m = 0; m < methods.size(); ++m) {
        torch::manual_seed(static_cast<uint64_t>(30 + m));
        Deit model(deit_config("deit_nano_patch7_28"));
        for (const auto & site : model->site_names()) {
            for (const auto & [suffix, name] : methods[m]) {
                if (site.size() > suffix.size() && site.compare(site.size() - suffix.size(), suffix.size(), suffix) == 0 &&
                    site[site.size() - suffix.size() - 1] == '.') {
                    model->install(site, quant::make_quantizer({name, {}}, model->site_info(site)));
                }
            }
        }
        {
            torch::NoGradGuard no_grad;
            model->train();
            model->forward(torch::randn({4, 1, 28, 28}));
        }
        model->eval();
        const std::string path = (dir / ("m" + std::to_string(m) + ".safetensors")).string();
        export_packed(model, ExportOptions{"paths", {0.2860}, {0.3530}}, path);
        const auto packed = runtime::PackedModel::load(path);
        const torch::Tensor pixels = torch::randint(0, 256, {6, 1, 28, 28}, torch::kUInt8).contiguous();
        for (int threads : {1, 3}) {
            const auto fast = packed.predict(pixels.data_ptr<uint8_t>(), 6, threads);
            runtime::set_attention_fast_paths(false);
            const auto generic = packed.predict(pixels.data_ptr<uint8_t>(), 6, threads);
            runtime::set_attention_fast_paths(true);
            EXPECT_EQ(fast, generic) << "method " << m << ", threads " << threads;
        }
    }
    fs::remove_all(dir);
}

namespace {

// The training quantizer `name` at a site of `kind` (C = 6 channels or H = 2 heads), initialised on
// a first batch and then given parameters away from their defaults.
std::shared_ptr<quant::QuantizerImpl> trained_quantizer(const spec::QuantizerRow & row, SiteKind kind, const torch::Tensor & first) {
    const int64_t channels = kind == SiteKind::token_activation ? 6 : 2;
    std::map<std::string, double> options;
    if (row.id == spec::Quantizer::lsq) options = {{"bits", 4}, {"zero_point", 1}};
    auto q = std::dynamic_pointer_cast<quant::QuantizerImpl>(quant::make_quantizer({row.name, options}, {kind, channels}));
    q->train();
    q->forward(first);
    torch::NoGradGuard no_grad;
    for (auto & p : q->named_parameters()) {
        if (p.key() == "shift") p.value().copy_(torch::tensor({0.0f, 0.25f, -0.5f, 0.125f, 0.0f, 1.0f}).slice(0, 0, p.value().numel()));
        if (p.key() == "step") p.value().fill_(0.25f);  // a power of two: x/s exact, so ties are ties
        if (p.key() == "zero_point") p.value().copy_(torch::tensor({1.0f, -1.0f}).slice(0, 0, p.value().numel()).repeat({3}).slice(0, 0, p.value().numel()));
    }
    q->eval();
    return q;
}

// Random values with exact ties spliced in: zeros, −0, the quantizer's thresholds.
torch::Tensor with_ties(torch::Tensor x, const std::vector<float> & ties) {
    auto flat = x.view(-1);
    for (size_t i = 0; i < ties.size() && static_cast<int64_t>(3 * i) < flat.numel(); ++i) flat[static_cast<int64_t>(3 * i)] = ties[i];
    return x;
}

}  // namespace

// Every activation quantizer's training forward (eval mode) and the runtime's encode → decode of
// its exported parameters give the same values bit for bit, ties included.
TEST(QuantizerParity, TrainingForwardEqualsRuntimeEncodingBitForBit) {
    torch::manual_seed(17);
    int checked = 0;
    for (const auto & row : spec::quantizer_table()) {
        for (SiteKind kind : {SiteKind::token_activation, SiteKind::head_activation, SiteKind::attention_map}) {
            if (!spec::serves(row, quant::site_class(kind))) continue;
            const bool token = kind == SiteKind::token_activation;
            const std::vector<int64_t> shape = token ? std::vector<int64_t>{5, 6} : std::vector<int64_t>{1, 2, 5, 5};
            auto sample = [&] {
                torch::Tensor x = torch::randn(shape);
                return kind == SiteKind::attention_map ? torch::softmax(x * 2, -1) : x;
            };
            auto q = trained_quantizer(row, kind, sample());
            // Ties: 0, −0, x = −shift (sign of exactly 0), α/2 (round half to even), (k + ½)·step
            // with the zero point, β·max for SAB (the map's max is 1 after the splice).
            torch::Tensor x = sample();
            std::vector<float> ties = {0.0f, -0.0f, -0.25f, 0.5f, 0.625f, 0.125f};
            if (kind == SiteKind::attention_map) ties = {1.0f, 0.25f, 0.0f, 0.7f, 0.9f, 0.5f};
            const quant::Deployed d = q->deployed();
            if (d.tensors.count("alpha")) ties.push_back(d.tensors.at("alpha")[0].item<float>() / 2);
            x = with_ties(x, ties);
            const torch::Tensor want = q->forward(x).contiguous();
            std::map<std::string, std::vector<float>> params;
            for (const auto & [name, t] : d.tensors) {
                const torch::Tensor c = t.contiguous();
                params[name] = std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
            }
            const auto rq = runtime::ActQuantizer::named(row.name, params, d.options);
            rq.validate("test", quant::site_class(kind), token ? 6 : 2);
            std::vector<float> got;
            if (token) {
                got = rq.encode(x.data_ptr<float>(), 5, 6, 6, runtime::SiteScope::token, 0).decode();
            } else {
                const float hi = x.max().item<float>(), lo = x.min().item<float>();  // the sample's range (GSB)
                for (int64_t h = 0; h < 2; ++h) {
                    const torch::Tensor xh = x[0][h].contiguous();
                    const auto part = rq.encode(xh.data_ptr<float>(), 5, 5, 5, runtime::SiteScope::per_head, h, hi, lo).decode();
                    got.insert(got.end(), part.begin(), part.end());
                }
            }
            const std::vector<float> expected(want.data_ptr<float>(), want.data_ptr<float>() + want.numel());
            EXPECT_EQ(got, expected) << row.name << " at a " << spec::site_classes(quant::site_class(kind)) << " site";
            ++checked;
        }
    }
    EXPECT_GE(checked, 20);
}

// Metadata that parses but does not describe this model is refused, each with its cause — also
// when a crafted file carries a matching checksum; without one, any changed byte is refused.
TEST_F(PackedFormat, MetadataIsCheckedAgainstTheArchitectureAndTheTable) {
    auto edit_sites = [](const std::function<void(nlohmann::json &)> & fn) {
        return [fn](EditableFile & e) {
            auto sites = nlohmann::json::parse(e.metadata["sites"]);
            fn(sites);
            e.metadata["sites"] = sites.dump();
        };
    };
    auto edit_arch = [](const char * key, nlohmann::json value) {
        return [key, value](EditableFile & e) {
            auto arch = nlohmann::json::parse(e.metadata["architecture"]);
            arch[key] = value;
            e.metadata["architecture"] = arch.dump();
        };
    };
    // A one-byte change in a site's name: no such site.
    expect_refused(edit_sites([](nlohmann::json & s) {
                       s["blocks.0.a5tn.v"] = s["blocks.0.attn.v"];
                       s.erase("blocks.0.attn.v");
                   }),
                   "sites.'blocks.0.a5tn.v' names no site");
    expect_refused(edit_sites([](nlohmann::json & s) { s["blocks.0.attn.qkv.weight"]["quantizer"] = "pwz"; }), "unknown quantizer 'pwz'");
    expect_refused(edit_sites([](nlohmann::json & s) { s["blocks.0.attn.qkv.weight"]["quantizer"] = "sab"; }),
                   "quantizer sab cannot quantize weights");
    expect_refused(edit_sites([](nlohmann::json & s) { s["blocks.0.attn.qkv.weight"]["quantizer"] = "twn"; }),
                   "missing tensor 'blocks.0.attn.qkv.weight.mask'");
    expect_refused(edit_sites([](nlohmann::json & s) { s["blocks.0.attn.q"]["shape"] = 1; }), "unknown field 'shape'");
    expect_refused(edit_sites([](nlohmann::json & s) { s = nlohmann::json::object(); }),
                   "a full-precision site has quantizer parameters");
    expect_refused(edit_sites([](nlohmann::json & s) { s.erase("blocks.0.attn.qkv.weight"); }),
                   "is stored packed but metadata 'sites' gives it no quantizer");
    expect_refused(edit_sites([](nlohmann::json & s) { s.erase("blocks.0.attn.q"); }), "full-precision site has quantizer parameters");
    expect_refused(edit_arch("num_heads", 4), "architecture.num_heads is 4 but 'deit_nano_patch7_28_distilled' has 2");
    expect_refused(edit_arch("softmax", false), "softmax is false but blocks.0.attn.probs uses gsb_attention");
    expect_refused(edit_arch("mlp_act", "swish"), "mlp_act must be");
    expect_refused(edit_arch("dropout", 0.1), "unknown field ('dropout')");
    expect_refused([](EditableFile & e) { e.metadata["preprocess"] = "{\"mean\": [0.2860], \"std\": [1e-45]}"; }, "preprocess.std values");
    expect_refused([](EditableFile & e) { e.metadata["preprocess"] = "{\"mean\": [1e300], \"std\": [0.353]}"; }, "preprocess.mean values");
    expect_refused([](EditableFile & e) { e.metadata["preprocess"] = "{\"mean\": [0.2], \"std\": [0.3], \"x\": 1}"; },
                   "preprocess has fields other than");
    // Not resealed: the checksum catches a change that is valid in itself (GELU → ReLU) and any byte.
    expect_refused(edit_arch("mlp_act", "relu"), "checksum mismatch", /*reseal=*/false);
    expect_refused([](EditableFile & e) { e.tensors.at("pos_embed").bytes[5] ^= 1; }, "checksum mismatch", false);
    expect_refused([](EditableFile & e) {
        e.metadata.erase("checksum");
        e.metadata["format_version"] = "3";
    }, "lacks 'checksum'", false);
}

TEST_F(PackedFormat, ExportRefusesWeightsThatAreNotWhatTheQuantizerPromises) {
    DeitConfig config = deit_config("deit_nano_patch7_28");
    Deit model(config);
    // A quantizer whose output is not binary cannot be packed as bits: LSQ at 12 bits has no int8 form.
    model->install("blocks.0.mlp.fc1.weight",
                   quant::make_quantizer({"lsq", {{"bits", 12}}}, model->site_info("blocks.0.mlp.fc1.weight")));
    model->train();
    {
        torch::NoGradGuard no_grad;
        model->forward(torch::randn({2, 1, 28, 28}));
    }
    const std::string out = (dir_ / "never.safetensors").string();
    try {
        export_packed(model, ExportOptions{"x", {0.5}, {0.5}}, out);
        FAIL() << "exported a 12-bit weight as int8";
    } catch (const std::invalid_argument & e) {
        EXPECT_NE(std::string(e.what()).find("blocks.0.mlp.fc1.weight"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(out));
}
