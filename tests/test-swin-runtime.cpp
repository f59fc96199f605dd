// Swin in the packed format and the bit-wise runtime: timm's reference Swin (shifted windows in both
// stages) exported and run gives timm's logits; a padded map with shifted windows gives LibTorch's;
// every shipped recipe's Swin model exports, loads and predicts what LibTorch predicts; attention's
// fast paths equal the generic path on windows; a Swin file with a wrong window, depth, merge shape,
// version or family is refused with its cause.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "format/safetensors.h"
#include "runtime/model.h"
#include "spec/windows.h"
#include "swin-reference.h"
#include "temp-dir.h"
#include "train/checkpoint.h"
#include "train/export.h"
#include "train/import.h"
#include "train/quant/quantizers.h"
#include "train/swin.h"

namespace fs = std::filesystem;
using namespace bitvit;
using format::DType;

namespace {

// The runtime's logits of normalised images [B, C, H, W]: [B, classes].
torch::Tensor runtime_logits(const runtime::PackedModel & packed, const torch::Tensor & images, int threads = 1) {
    const torch::Tensor x = images.contiguous();
    const int64_t B = x.size(0), per_image = x[0].numel();
    torch::Tensor out = torch::empty({B, packed.num_classes()});
    for (int64_t i = 0; i < B; ++i) {
        const std::vector<float> logits = packed.forward(x.data_ptr<float>() + i * per_image, threads);
        std::copy(logits.begin(), logits.end(), out[i].data_ptr<float>());
    }
    return out;
}

std::string export_to(VisionModel model, const test_util::TempDir & dir, const std::string & name, int64_t channels) {
    const std::string path = dir.str(name + ".safetensors");
    export_packed(model, ExportOptions{name, std::vector<double>(channels, 0.5), std::vector<double>(channels, 0.25)}, path);
    return path;
}

double max_abs_diff(const torch::Tensor & a, const torch::Tensor & b) { return (a - b).abs().max().item<double>(); }

}  // namespace

// The brute-force definition: after the cyclic shift, two tokens of one window may attend to each
// other only when they are neighbours in the image, i.e. their unshifted coordinates differ by less
// than the window on both axes (no wrap-around).
TEST(SwinWindows, ShiftMaskIsTheNeighbourRelationOfTheUnshiftedTokens) {
    for (const auto & [R, M, s] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{8, 4, 2}, {14, 7, 3}, {12, 4, 2}, {9, 3, 1}}) {
        const std::vector<float> mask = spec::swin_shift_mask(R, M, s);
        const int64_t per = R / M, T = M * M;
        ASSERT_EQ(static_cast<int64_t>(mask.size()), per * per * T * T);
        for (int64_t w = 0; w < per * per; ++w) {
            for (int64_t a = 0; a < T; ++a) {
                for (int64_t b = 0; b < T; ++b) {
                    auto original = [&](int64_t t, bool row) {
                        const int64_t shifted = (row ? w / per * M + t / M : w % per * M + t % M);
                        return (shifted + s) % R;
                    };
                    const bool near = std::abs(original(a, true) - original(b, true)) < M &&
                                      std::abs(original(a, false) - original(b, false)) < M;
                    ASSERT_EQ(mask[static_cast<size_t>((w * T + a) * T + b)], near ? 0.0f : -100.0f)
                        << "R " << R << " M " << M << " window " << w << " tokens " << a << ", " << b;
                }
            }
        }
    }
}

TEST(SwinWindows, RelativePositionIndexIsItsDefinition) {
    const int64_t M = 5, T = M * M;
    const std::vector<int64_t> index = spec::swin_relative_position_index(M);
    for (int64_t a = 0; a < T; ++a) {
        for (int64_t b = 0; b < T; ++b) {
            const int64_t dy = a / M - b / M, dx = a % M - b % M;
            ASSERT_EQ(index[static_cast<size_t>(a * T + b)], (dy + M - 1) * (2 * M - 1) + dx + M - 1);
        }
    }
    EXPECT_EQ(index[0], (M - 1) * (2 * M - 1) + M - 1);  // a token with itself: the table's centre
}

// timm's own reference model, through export and the runtime: timm's logits.
TEST(SwinRuntime, TimmsReferenceRunsWithTimmsLogits) {
    test_util::TempDir dir;
    ImportOptions o;
    o.img_size = 32;  // not in the weights, and no registered Swin has them
    ImportSummary imported = import_checkpoint(test_util::kTimmReference + "swin_32_p2_w4_rgb.safetensors", o, dir.str("reference.pt"));
    imported.model->eval();
    const std::string path = export_to(imported.model, dir, "reference", 3);
    const auto packed = runtime::PackedModel::load(path);
    ASSERT_TRUE(packed.is_swin());
    EXPECT_LE(max_abs_diff(runtime_logits(packed, test_util::reference_swin_io("input")), test_util::reference_swin_io("logits")), 1e-4);
    EXPECT_LE(max_abs_diff(runtime_logits(packed, test_util::reference_swin_io("input"), 3), test_util::reference_swin_io("logits")), 1e-4);
}

// A map that is not a multiple of the window (10×10 in 4×4 windows, then 5×5 shifted by 2), padded
// as training pads it.
TEST(SwinRuntime, PaddedShiftedWindowsMatchLibTorch) {
    test_util::TempDir dir;
    SwinConfig c = test_util::reference_swin_config();  // its stages, heads and window on a 20×20 input
    c.name = "swin_padded";
    c.img_size = 20;
    torch::manual_seed(3);
    Swin model(c);
    {
        torch::NoGradGuard no_grad;
        for (auto & p : model->parameters()) p.add_(torch::randn_like(p) * 0.05);  // biases and tables away from 0
    }
    model->eval();
    const auto packed = runtime::PackedModel::load(export_to(model, dir, "padded", 3));
    const torch::Tensor images = torch::randn({4, 3, 20, 20});
    torch::NoGradGuard no_grad;
    EXPECT_LE(max_abs_diff(runtime_logits(packed, images), model->forward(images)), 1e-4);
}

// Every shipped recipe's last stage on the nano Swin, its quantizers initialised on a first batch:
// export, load, and the runtime's predictions against LibTorch's on the same normalised images.
TEST(SwinRuntime, EveryShippedRecipeExportsAndMatchesLibTorch) {
    test_util::TempDir dir;
    int checked = 0;
    for (const auto & entry : fs::directory_iterator(fs::path(BITVIT_SOURCE_DIR) / "recipes")) {
        if (entry.path().extension() != ".toml") continue;
        const std::string name = entry.path().stem().string();
        const TrainConfig config = load_config_file(entry.path().string(), {"model.name=swin_nano_patch2_window7_28"});
        torch::manual_seed(5);
        VisionModel model = build_stage_model(config, DataShape{10, 1, 28}, config.stages.size() - 1);
        {
            torch::NoGradGuard no_grad;
            model->train();
            model->forward(torch::randn({8, 1, 28, 28}));  // first-batch initialisation of every quantizer
        }
        model->eval();
        const auto packed = runtime::PackedModel::load(export_to(model, dir, name, 1));
        const torch::Tensor images = torch::randn({32, 1, 28, 28});
        torch::NoGradGuard no_grad;
        const torch::Tensor expected = model->forward(images), got = runtime_logits(packed, images);
        const double agree = (expected.argmax(1) == got.argmax(1)).to(torch::kDouble).mean().item<double>();
        // A sign that float rounding flips moves a binary model's logits, rarely its top class. GSB's
        // three bands (0.7 and 0.9 of each window's max) cut untrained, near-uniform tensors where
        // many values sit at a threshold, so rounding moves whole bands: its untrained parity is
        // loose (an untrained DeiT's is looser still, 56 % here); trained parity is RecipeRun's.
        // Bi-ViT's per-column ActBi on the binarized merge is nearly as sensitive: on one machine
        // here its untrained agreement was 28/32 where others give 30/32 (open: issue 16's note).
        const bool gsb = name == "gsb";
        EXPECT_GE(agree, gsb ? 0.75 : name == "bi-vit" ? 0.85 : 0.9) << name;
        const double scale = expected.abs().max().item<double>();
        EXPECT_LE((expected - got).abs().median().item<double>(), (gsb ? 0.2 : 0.02) * scale + 1e-4) << name;
        if (name == "fp") EXPECT_LE(max_abs_diff(expected, got), 1e-4 * scale + 1e-5) << name;
        ++checked;
    }
    EXPECT_GE(checked, 12);
}

// Attention's fast paths on windows (shifted, with their mask) equal the generic path.
TEST(SwinRuntime, FastPathsEqualTheGenericPathOnWindows) {
    test_util::TempDir dir;
    const TrainConfig config = load_config_file((fs::path(BITVIT_SOURCE_DIR) / "recipes/bivit-w1a1.toml").string(),
                                                {"model.name=swin_nano_patch2_window7_28"});
    torch::manual_seed(7);
    VisionModel model = build_stage_model(config, DataShape{10, 1, 28}, config.stages.size() - 1);
    {
        torch::NoGradGuard no_grad;
        model->train();
        model->forward(torch::randn({4, 1, 28, 28}));
    }
    model->eval();
    const auto packed = runtime::PackedModel::load(export_to(model, dir, "paths", 1));
    const torch::Tensor pixels = torch::randint(0, 256, {5, 1, 28, 28}, torch::kUInt8).contiguous();
    for (int threads : {1, 3}) {
        const auto fast = packed.predict(pixels.data_ptr<uint8_t>(), 5, threads);
        runtime::set_attention_fast_paths(false);
        const auto generic = packed.predict(pixels.data_ptr<uint8_t>(), 5, threads);
        runtime::set_attention_fast_paths(true);
        EXPECT_EQ(fast, generic) << "threads " << threads;
    }
}

namespace {

// The tensors and metadata of a packed file, edited and parsed again (checksum recomputed, as a
// crafted file would carry a matching one).
void expect_refused(const std::string & path, const std::function<void(std::map<std::string, std::string> &,
                                                                        std::map<std::string, std::pair<format::TensorInfo, std::vector<uint8_t>>> &)> & edit,
                    const std::string & needle) {
    const auto file = format::SafetensorsFile::load(path);
    std::map<std::string, std::string> metadata = file.metadata();
    std::map<std::string, std::pair<format::TensorInfo, std::vector<uint8_t>>> tensors;
    for (const auto & [name, info] : file.tensors()) {
        const uint8_t * data = file.data(name);
        tensors[name] = {info, std::vector<uint8_t>(data, data + (info.end - info.begin))};
    }
    edit(metadata, tensors);
    format::SafetensorsWriter w;
    for (const auto & [k, v] : metadata) w.set_metadata(k, v);
    for (const auto & [name, t] : tensors) w.add(name, t.first.dtype, t.first.shape, t.second.data(), t.second.size());
    w.set_metadata("checksum", "sha256:" + w.content_digest("checksum"));
    try {
        runtime::PackedModel::from_file(format::SafetensorsFile::parse(w.serialize(), "edited.safetensors"));
        ADD_FAILURE() << "accepted a file that should fail with: " << needle;
    } catch (const format::FormatError & err) {
        EXPECT_NE(std::string(err.what()).find(needle), std::string::npos) << err.what();
        EXPECT_NE(std::string(err.what()).find("edited.safetensors"), std::string::npos) << err.what();
    }
}

void edit_architecture(std::map<std::string, std::string> & metadata, const std::function<void(nlohmann::json &)> & edit) {
    nlohmann::json arch = nlohmann::json::parse(metadata.at("architecture"));
    edit(arch);
    metadata["architecture"] = arch.dump();
}

}  // namespace

TEST(SwinRuntime, CorruptSwinFilesAreRefusedWithTheirCause) {
    test_util::TempDir dir;
    torch::manual_seed(9);
    Swin model(swin_config("swin_nano_patch2_window7_28"));
    model->eval();
    const std::string path = export_to(model, dir, "nano", 1);
    using Meta = std::map<std::string, std::string>;
    using Tensors = std::map<std::string, std::pair<format::TensorInfo, std::vector<uint8_t>>>;
    // A registered name with other sizes; then a customised one whose tensors do not fit.
    expect_refused(path, [](Meta & m, Tensors &) { edit_architecture(m, [](auto & a) { a["window_size"] = 4; }); },
                   "sizes differ from the registered 'swin_nano_patch2_window7_28'");
    expect_refused(path,
                   [](Meta & m, Tensors &) {
                       edit_architecture(m, [](auto & a) {
                           a["window_size"] = 4;
                           a["name"] = "my_swin";
                       });
                   },
                   "tensor 'layers.0.blocks.0.attn.relative_position_bias_table' has shape [169, 1], expected [49, 1]");
    expect_refused(path,
                   [](Meta & m, Tensors &) {
                       edit_architecture(m, [](auto & a) {
                           a["depths"] = {2, 3};
                           a["name"] = "my_swin";
                       });
                   },
                   "missing tensor 'layers.1.blocks.2.norm1.weight'");
    expect_refused(path, [](Meta &, Tensors & t) { t["layers.1.downsample.reduction.weight"].first.shape = {64, 32}; },
                   "tensor 'layers.1.downsample.reduction.weight' has shape [64, 32], expected [32, 64]");
    expect_refused(path, [](Meta &, Tensors & t) { t.erase("layers.1.downsample.norm.bias"); }, "missing tensor 'layers.1.downsample.norm.bias'");
    expect_refused(path, [](Meta & m, Tensors &) { m["format_version"] = "3"; }, "a Swin model needs format_version 4");
    expect_refused(path, [](Meta & m, Tensors &) { edit_architecture(m, [](auto & a) { a["family"] = "vit"; }); },
                   "architecture.family must be \"swin\"");
    expect_refused(path, [](Meta & m, Tensors &) { edit_architecture(m, [](auto & a) { a["depths"] = nlohmann::json::array(); }); },
                   "architecture.depths must be an array of 1 to 8 integers");
    expect_refused(path,
                   [](Meta & m, Tensors &) {
                       auto sites = nlohmann::json::parse(m.at("sites"));
                       sites["blocks.0.attn.q"] = {{"quantizer", "sign"}};
                       m["sites"] = sites.dump();
                   },
                   "sites.'blocks.0.attn.q' names no site of 'swin_nano_patch2_window7_28'");
}
