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
    install("attn.q", {"bivit_act", {}});
    install("attn.k", {"bivit_act", {}});
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
    std::vector<uint8_t> bytes() const {
        format::SafetensorsWriter w;
        for (const auto & [k, v] : metadata) w.set_metadata(k, v);
        for (const auto & [name, t] : tensors) w.add(name, t.dtype, t.shape, t.bytes.data(), t.bytes.size());
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
    static void expect_refused(const std::function<void(EditableFile &)> & edit, const std::string & needle) {
        EditableFile e = EditableFile::read(path());
        edit(e);
        try {
            runtime::PackedModel::from_file(format::SafetensorsFile::parse(e.bytes(), "edited.safetensors"));
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
    EXPECT_EQ(packed.config().name, "deit_nano_patch7_28_distilled");
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
        for (int64_t c = 0; c < 10; ++c) EXPECT_NEAR(got[c], want[c].item<float>(), 1e-3) << "image " << i << " class " << c;
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

    // The runtime reads the F16 values widened: the same logits as LibTorch with those values.
    const auto packed = runtime::PackedModel::load(half_path);
    torch::manual_seed(1);
    const torch::Tensor pixels = torch::randint(0, 256, {8, 1, 28, 28}, torch::kUInt8);
    std::vector<float> image(784);
    torch::NoGradGuard no_grad;
    double largest = 0;
    for (int64_t i = 0; i < 8; ++i) {
        packed.normalize(pixels[i].data_ptr<uint8_t>(), image.data());
        const std::vector<float> got = packed.forward(image.data());
        const torch::Tensor want = model_->forward(torch::from_blob(image.data(), {1, 1, 28, 28}).clone())[0];
        for (int64_t c = 0; c < 10; ++c) largest = std::max(largest, std::fabs(got[c] - want[c].item<double>()));
    }
    EXPECT_GT(largest, 0.0);  // not bit-identical: F16 rounding is real
    EXPECT_LT(largest, 0.5);
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
    expect_refused([&](EditableFile & e) { e.metadata["format_version"] = "3"; }, "format_version 3 is not supported");
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
        "unknown activation quantizer 'sign_magic'");
    expect_refused(
        [](EditableFile & e) {
            auto arch = nlohmann::json::parse(e.metadata["architecture"]);
            arch["depth"] = 5;
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
