// The Swin Transformer against timm's own (tests/data/timm-reference/swin_32_p2_w4_rgb.*: shifted
// windows in both stages, non-trivial weights everywhere): the same logits from both file formats,
// Microsoft's original layout mapped onto timm's, timm's parameter counts for the standard sizes,
// the window geometry timm uses, and the site list the runtime validates against; then Swin in the
// rest of the system: every recipe, import with timm's adaptations, export back, training and resume.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <filesystem>

#include "expect-error.h"
#include "format/safetensors.h"
#include "require-data.h"
#include "temp-dir.h"
#include "spec/sites.h"
#include "swin-reference.h"
#include "train/checkpoint.h"
#include "train/import.h"
#include "train/quant/quantizers.h"
#include "train/swin.h"
#include "train/trainer.h"

using namespace bitvit;

namespace {

// The reference model with the tensors of `sd` copied in; every name must match both ways.
Swin reference_model(const torch::OrderedDict<std::string, torch::Tensor> & sd) {
    Swin model(test_util::reference_swin_config());
    const TensorCopyReport report = copy_named_tensors(sd, *model, [](const std::string &) { return false; });
    EXPECT_TRUE(report.clean()) << "missing " << report.missing.size() << ", mismatched " << report.mismatched.size()
                                << ", unused " << report.unused.size()
                                << (report.missing.empty() ? "" : " (first missing " + report.missing[0] + ")")
                                << (report.unused.empty() ? "" : " (first unused " + report.unused[0] + ")");
    model->eval();
    return model;
}

double max_abs_diff(const torch::Tensor & a, const torch::Tensor & b) { return (a - b).abs().max().item<double>(); }

}  // namespace

TEST(Swin, LogitsEqualTimmsFromBothFormats) {
    const torch::Tensor input = test_util::reference_swin_io("input"), expected = test_util::reference_swin_io("logits");  // [5, 3, 32, 32], [5, 7]
    for (const char * file : {"swin_32_p2_w4_rgb.safetensors", "swin_32_p2_w4_rgb.pth"}) {
        Swin model = reference_model(read_state_dict(test_util::kTimmReference + file));
        torch::NoGradGuard no_grad;
        const torch::Tensor got = model->forward(input);
        ASSERT_EQ(got.sizes(), expected.sizes()) << file;
        EXPECT_LE(max_abs_diff(got, expected), 1e-5) << file;
    }
}

// The same check fails without the shift, the mask or the relative position bias: each one moves the
// logits at least ten times the tolerance, so the test above sees all three.
TEST(Swin, TheReferenceDependsOnShiftMaskAndPositionBias) {
    const torch::Tensor input = test_util::reference_swin_io("input"), expected = test_util::reference_swin_io("logits");
    const auto sd = read_state_dict(test_util::kTimmReference + "swin_32_p2_w4_rgb.safetensors");
    torch::NoGradGuard no_grad;
    auto blocks_of = [](Swin & m) {
        std::vector<SwinBlockImpl *> out;
        for (const auto & stage : *m->layers) {
            for (const auto & b : *stage->as<SwinStage>()->blocks) out.push_back(b->as<SwinBlock>());
        }
        return out;
    };
    {
        Swin m = reference_model(sd);
        for (auto & b : blocks_of(m)) b->attn_mask = torch::Tensor();
        EXPECT_GT(max_abs_diff(m->forward(input), expected), 1e-4) << "without the mask";
    }
    {
        Swin m = reference_model(sd);
        for (auto & b : blocks_of(m)) {
            b->shift = 0;
            b->attn_mask = torch::Tensor();
        }
        EXPECT_GT(max_abs_diff(m->forward(input), expected), 1e-4) << "without the shift";
    }
    {
        Swin m = reference_model(sd);
        for (auto & b : blocks_of(m)) b->attn->relative_position_bias_table.zero_();
        EXPECT_GT(max_abs_diff(m->forward(input), expected), 1e-4) << "without the position bias";
    }
}

// Microsoft's release puts patch merging at the end of stage i − 1, names the classifier "head" and
// stores the buffers timm rebuilds; mapped, it is timm's state dict again and gives timm's logits.
TEST(Swin, MicrosoftsOriginalLayoutMapsOntoTimms) {
    const auto timm = read_state_dict(test_util::kTimmReference + "swin_32_p2_w4_rgb.safetensors");
    torch::OrderedDict<std::string, torch::Tensor> original;
    for (const auto & item : timm) {
        std::string name = item.key();
        if (name.rfind("layers.1.downsample.", 0) == 0) name = "layers.0.downsample." + name.substr(20);
        if (name.rfind("head.fc.", 0) == 0) name = "head." + name.substr(8);
        original.insert(name, item.value());
    }
    original.insert("layers.0.blocks.0.attn.relative_position_index", torch::zeros({16, 16}, torch::kLong));
    original.insert("layers.0.blocks.1.attn_mask", torch::zeros({16, 16, 16}));
    bool converted = false;
    const auto mapped = swin_to_timm_layout(original, &converted);
    EXPECT_TRUE(converted);
    ASSERT_EQ(mapped.size(), timm.size());
    for (const auto & item : timm) {
        ASSERT_TRUE(mapped.contains(item.key())) << item.key();
        EXPECT_TRUE(torch::equal(mapped[item.key()], item.value())) << item.key();
    }
    const auto unchanged = swin_to_timm_layout(timm, &converted);
    EXPECT_FALSE(converted);
    EXPECT_EQ(unchanged.keys(), timm.keys());
    torch::NoGradGuard no_grad;
    EXPECT_LE(max_abs_diff(reference_model(mapped)->forward(test_util::reference_swin_io("input")), test_util::reference_swin_io("logits")), 1e-5);
}

TEST(Swin, StandardSizesHaveTimmsParameterCounts) {
    EXPECT_EQ(swin_config("swin_tiny_patch4_window7_224").parameter_count(), 28288354);
    EXPECT_EQ(swin_config("swin_small_patch4_window7_224").parameter_count(), 49606258);
    EXPECT_EQ(swin_config("swin_base_patch4_window7_224").parameter_count(), 87768224);
    // The closed form counts what the module allocates.
    for (const auto & name : {"swin_tiny_patch4_window7_224", "swin_nano_patch2_window7_28", "swin_micro_patch2_window7_28"}) {
        Swin model(swin_config(name));
        EXPECT_EQ(count_parameters(*model), model->config().parameter_count()) << name;
    }
    // And what timm's own model holds (its state dict has parameters only).
    int64_t timm_count = 0;
    for (const auto & t : read_state_dict(test_util::kTimmReference + "swin_32_p2_w4_rgb.safetensors").values()) timm_count += t.numel();
    EXPECT_EQ(test_util::reference_swin_config().parameter_count(), timm_count);
}

// timm clips the window to a stage's resolution and drops the shift where one window covers it.
TEST(Swin, WindowsAreClippedAndUnshiftedWhereOneCoversTheStage) {
    const SwinConfig tiny = swin_config("swin_tiny_patch4_window7_224");  // resolutions 56, 28, 14, 7
    EXPECT_EQ(tiny.stage_window(3), 7);
    EXPECT_EQ(tiny.block_shift(2, 1), 3);
    EXPECT_EQ(tiny.block_shift(3, 1), 0);
    SwinConfig c = test_util::reference_swin_config();
    c.window_size = 12;  // stage 0: 16 > 12, shifted by 6; stage 1: 8 ≤ 12, one 8×8 window
    EXPECT_EQ(c.stage_window(1), 8);
    EXPECT_EQ(c.block_shift(0, 1), 6);
    EXPECT_EQ(c.block_shift(1, 1), 0);
    Swin model(c);
    auto block = model->layers[1]->as<SwinStage>()->blocks[1]->as<SwinBlock>();
    EXPECT_EQ(block->window, 8);
    EXPECT_FALSE(block->attn_mask.defined());
    EXPECT_EQ(block->attn->relative_position_bias_table.size(0), 15 * 15);
    torch::NoGradGuard no_grad;
    EXPECT_EQ(model->forward(torch::randn({2, 3, 32, 32})).sizes(), (std::vector<int64_t>{2, 7}));
}

// The mask keeps apart the regions the cyclic shift brings together: none inside the first window,
// three regions (so two distinct label pairs per row) in the last one.
TEST(Swin, ShiftedWindowMaskSeparatesTheWrappedRegions) {
    SwinBlock block(8, 2, 8, 4, 2, 4.0, true, 0.0, BlockVariant{});  // 8×8 map, 4×4 windows, shift 2
    const torch::Tensor m = block->attn_mask;                       // [4, 16, 16]
    ASSERT_EQ(m.sizes(), (std::vector<int64_t>{4, 16, 16}));
    EXPECT_EQ(m[0].abs().sum().item<float>(), 0.0f);  // top-left window: one region
    EXPECT_TRUE(torch::equal(m, m.transpose(1, 2)));
    // Last window (bottom-right): 4 regions of 2×2 tokens; each token sees its own 4 tokens unmasked.
    EXPECT_EQ((m[3] == 0).sum().item<int64_t>(), 16 * 4);
    EXPECT_EQ((m[3] == -100).sum().item<int64_t>(), 16 * 12);
    // Top-right window: 2 regions of 8 tokens.
    EXPECT_EQ((m[1] == 0).sum().item<int64_t>(), 16 * 8);
}

TEST(Swin, WindowPartitionAndReverseAreInverse) {
    const torch::Tensor x = torch::randn({2, 12, 8, 5});
    const torch::Tensor windows = window_partition(x, 4);  // [2·3·2, 16, 5]
    EXPECT_EQ(windows.sizes(), (std::vector<int64_t>{12, 16, 5}));
    EXPECT_TRUE(torch::equal(windows[1][0], x[0][0][4]));  // window (0, 1) starts at column 4
    EXPECT_TRUE(torch::equal(window_reverse(windows, 4, 12, 8), x));
}

// A map that is not a multiple of the window is padded, as timm pads it; the output keeps its size.
TEST(Swin, UnevenResolutionsArePadded) {
    SwinConfig c = test_util::reference_swin_config();
    c.img_size = 20;  // stage 0: 10×10 tokens in 4×4 windows (padded to 12); stage 1: 5×5, shifted by 2
    Swin model(c);
    torch::NoGradGuard no_grad;
    EXPECT_EQ(model->forward(torch::randn({3, 3, 20, 20})).sizes(), (std::vector<int64_t>{3, 7}));
    EXPECT_EQ(model->layers[1]->as<SwinStage>()->blocks[1]->as<SwinBlock>()->attn_mask.size(0), 4);
}

TEST(Swin, SitesAreTheSpecsSites) {
    for (const auto & name : {"swin_nano_patch2_window7_28", "swin_micro_patch2_window7_28"}) {
        Swin model(swin_config(name));
        std::map<std::string, std::pair<spec::SiteClass, int64_t>> training, spec;
        for (const auto & site : model->site_names()) {
            const SiteInfo info = model->site_info(site);
            training[site] = {quant::site_class(info.kind), info.channels};
        }
        for (const auto & s : spec::swin_sites(model->config())) spec[s.name] = {s.site_class, s.channels};
        EXPECT_EQ(training, spec) << name;
        EXPECT_TRUE(spec.count("layers.1.downsample.reduction.input"));
        EXPECT_EQ(spec.at("layers.1.downsample.reduction.input").second, 4 * model->config().embed_dim);
    }
    Swin model(swin_config("swin_nano_patch2_window7_28"));
    test_util::expect_error<std::invalid_argument>([&] { model->site_info("blocks.0.attn.q"); },
                                                   {"unknown site 'blocks.0.attn.q'", "layers.0.blocks.1.attn.probs"});
}

TEST(Swin, ConfigurationsThatCannotBeBuiltAreRefused) {
    SwinConfig c = test_util::reference_swin_config();
    c.img_size = 36;  // 18×18, then 9×9: a third stage could not merge
    c.depths = {2, 2, 2};
    c.num_heads = {2, 4, 8};
    test_util::expect_error<std::invalid_argument>([&] { c.validate(); },
                                                   {"swin_32_p2_w4_rgb", "patch merging needs an even resolution", "9×9"});
    c = test_util::reference_swin_config();
    c.num_heads = {2};
    test_util::expect_error<std::invalid_argument>([&] { c.validate(); }, {"num_heads lists 1 stages but depths lists 2"});
    c = test_util::reference_swin_config();
    c.num_heads = {5, 4};
    test_util::expect_error<std::invalid_argument>([&] { c.validate(); }, {"stage 0", "width 24 is not divisible by num_heads 5"});
    test_util::expect_error<std::invalid_argument>([] { swin_config("swin_huge"); }, {"unknown model 'swin_huge'", "swin_tiny_patch4_window7_224"});
}

// Every shipped recipe builds on a Swin, every stage, and takes a training step: the quantizers
// initialise on the first batch and every trainable tensor gets a finite gradient. The window
// attention's sizes reach the method tensors (GSB's attention bias is [H, M², M²]).
TEST(Swin, EveryShippedRecipeBuildsAndTakesAStep) {
    const std::filesystem::path recipes = std::filesystem::path(BITVIT_SOURCE_DIR) / "recipes";
    int checked = 0;
    for (const auto & entry : std::filesystem::directory_iterator(recipes)) {
        if (entry.path().extension() != ".toml") continue;
        const TrainConfig config = load_config_file(entry.path().string(), {"model.name=swin_nano_patch2_window7_28"});
        for (size_t s = 0; s < config.stages.size(); ++s) {
            const std::string what = entry.path().stem().string() + " stage " + std::to_string(s);
            torch::manual_seed(1);
            VisionModel model = build_stage_model(config, DataShape{10, 1, 28}, s);
            model->train();
            model->forward_heads(torch::randn({4, 1, 28, 28})).logits.logsumexp(1).sum().backward();
            for (const auto & p : model->named_parameters()) {
                if (p.value().requires_grad() && p.value().grad().defined()) {
                    EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << what << ": " << p.key();
                }
            }
            ++checked;
        }
        if (entry.path().stem() == "bi-vit") {  // its [stage.swin] tables: Bi-ViT's Swin code
            VisionModel model = build_stage_model(config, DataShape{10, 1, 28}, 0);
            EXPECT_NE(model->site_transform("layers.1.downsample.reduction.weight"), nullptr);
            EXPECT_NE(model->site_transform("layers.1.downsample.reduction.input"), nullptr);
            EXPECT_FALSE(model->named_parameters().contains("layers.0.blocks.0.attn.norm_q.weight"));
            EXPECT_EQ(config.stages[0].distill.kind, "distribution");
        }
        if (entry.path().stem() == "gsb") {
            VisionModel model = build_stage_model(config, DataShape{10, 1, 28}, config.stages.size() - 1);
            const auto params = model->named_parameters();
            ASSERT_TRUE(params.contains("layers.1.blocks.0.attn.attn_bias"));
            EXPECT_EQ(params["layers.1.blocks.0.attn.attn_bias"].sizes(), (std::vector<int64_t>{2, 49, 49}));
        }
    }
    EXPECT_GE(checked, 12);
}

// Recipe patterns reach Swin's own sites: block-local names in every stage, and patch merging by its
// stage-local name.
TEST(Swin, RecipePatternsReachWindowBlocksAndPatchMerging) {
    const TrainConfig config = parse_config(R"(
[model]
name = "swin_nano_patch2_window7_28"
[[stage]]
epochs = 1
[stage.quantizers]
"attn.probs" = "sab"
"downsample.reduction.weight" = "xnor"
"layers.0.blocks.1.attn.q" = "sign"
)", "swin.toml");
    VisionModel model = build_stage_model(config, DataShape{10, 1, 28}, 0);
    for (const char * site : {"layers.0.blocks.0.attn.probs", "layers.1.blocks.1.attn.probs", "layers.1.downsample.reduction.weight",
                              "layers.0.blocks.1.attn.q"}) {
        EXPECT_NE(model->site_transform(site), nullptr) << site;
    }
    EXPECT_EQ(model->site_transform("layers.0.blocks.0.attn.q"), nullptr);
    EXPECT_EQ(model->site_transform("head.fc.weight"), nullptr);
    // DeiT's sizes do not apply, and say so.
    test_util::expect_error<std::invalid_argument>(
        [] { resolve_swin_config(parse_config("[model]\nname = \"swin_nano_patch2_window7_28\"\ndepth = 3\n", "x").model, DataShape{10, 1, 28}); },
        {"is a Swin", "model.depths"});
}

// A Swin imported from timm's files (both formats, and Microsoft's layout) is a bitvit checkpoint
// that evaluates to timm's logits; exported back to timm's names it gives the same tensors.
TEST(Swin, ImportsFromTimmAndExportsBack) {
    test_util::TempDir dir;
    const torch::Tensor input = test_util::reference_swin_io("input"), expected = test_util::reference_swin_io("logits");
    ImportOptions o;
    o.img_size = 32;  // not in the weights, and no registered Swin has them
    for (const char * file : {"swin_32_p2_w4_rgb.safetensors", "swin_32_p2_w4_rgb.pth"}) {
        const std::string out = dir.str(std::string(file) + ".pt");
        const ImportSummary s = import_checkpoint(test_util::kTimmReference + file, o, out);
        EXPECT_EQ(s.model->name(), "swin_tiny_patch4_window7_224-dim24-depths2_2-heads2_4-window4-img32-patch2-mlp4");
        LoadedModel m = load_model(out);
        torch::NoGradGuard no_grad;
        EXPECT_LE(max_abs_diff(m.model->forward(input), expected), 1e-5) << file;
        EXPECT_EQ(m.state.config.data.crop_pct, 0.9);  // timm's Swin eval transform
    }
    // Microsoft's layout, as a safetensors file.
    format::SafetensorsWriter w;
    const auto timm = read_state_dict(test_util::kTimmReference + "swin_32_p2_w4_rgb.safetensors");
    std::vector<torch::Tensor> keep;
    for (const auto & item : timm) {
        std::string name = item.key();
        if (name.rfind("layers.1.downsample.", 0) == 0) name = "layers.0.downsample." + name.substr(20);
        if (name.rfind("head.fc.", 0) == 0) name = "head." + name.substr(8);
        keep.push_back(item.value().contiguous());
        w.add(name, format::DType::F32, keep.back().sizes().vec(), keep.back().data_ptr(), keep.back().numel() * 4);
    }
    w.write(dir.str("original.safetensors"));
    const ImportSummary s = import_checkpoint(dir.str("original.safetensors"), o, dir.str("original.pt"));
    ASSERT_EQ(s.adaptations.size(), 1u);
    EXPECT_NE(s.adaptations[0].find("Microsoft's original Swin layout"), std::string::npos);
    {
        torch::NoGradGuard no_grad;
        EXPECT_LE(max_abs_diff(load_model(dir.str("original.pt")).model->forward(input), expected), 1e-5);
    }
    // Back to timm's names: the very tensors of the file.
    EXPECT_EQ(export_timm(dir.str("original.pt"), dir.str("back.safetensors")), timm.size());
    const auto back = read_state_dict(dir.str("back.safetensors"));
    for (const auto & item : timm) {
        ASSERT_TRUE(back.contains(item.key())) << item.key();
        EXPECT_TRUE(torch::equal(back[item.key()], item.value())) << item.key();
    }
    // Code that needs DeiT's members says so for a Swin.
    test_util::expect_error<std::invalid_argument>([&] { as_deit(load_model(dir.str("original.pt")).model, "this step"); },
                                                   {"this step needs a DeiT", "is a Swin"});
}

// timm's adaptations on a Swin: RGB to one channel, another class count, another input size.
TEST(Swin, ImportAdaptsChannelsClassesAndInputSize) {
    test_util::TempDir dir;
    ImportOptions o;
    o.img_size = 16;
    o.in_chans = 1;
    o.num_classes = 10;
    const ImportSummary s = import_checkpoint(test_util::kTimmReference + "swin_32_p2_w4_rgb.pth", o, dir.str("gray.pt"));
    EXPECT_EQ(s.adaptations.size(), 2u);  // channels, classes (16 px is the input size asked for, not an adaptation)
    LoadedModel m = load_model(dir.str("gray.pt"));
    const auto original = read_state_dict(test_util::kTimmReference + "swin_32_p2_w4_rgb.pth");
    const auto params = m.model->named_parameters();
    EXPECT_TRUE(torch::allclose(params["patch_embed.proj.weight"], original["patch_embed.proj.weight"].sum(1, true)));
    EXPECT_EQ(params["head.fc.weight"].size(0), 10);
    torch::NoGradGuard no_grad;
    // 16 px: 8×8 tokens in 4×4 windows, then one 4×4 window (unshifted).
    EXPECT_EQ(m.model->forward(torch::zeros({2, 1, 16, 16})).sizes(), (std::vector<int64_t>{2, 10}));
    ImportOptions bad;
    test_util::expect_error<ImportError>([&] { import_checkpoint(test_util::kTimmReference + "swin_32_p2_w4_rgb.pth", bad, dir.str("x.pt")); },
                                         {"input size is not in its weights", "--img-size"});
    bad.model = "swin_tiny_patch4_window7_224";
    test_util::expect_error<ImportError>([&] { import_checkpoint(test_util::kTimmReference + "swin_32_p2_w4_rgb.pth", bad, dir.str("x.pt")); },
                                         {"the weights are not swin_tiny_patch4_window7_224's"});
}

// Another window: each relative position bias table is resampled to the new window's offsets (a
// constant table stays constant), the windows and shifts follow, and the model runs.
TEST(Swin, ImportResamplesPositionBiasForAnotherWindow) {
    test_util::TempDir dir;
    const auto original = read_state_dict(test_util::kTimmReference + "swin_32_p2_w4_rgb.safetensors");
    format::SafetensorsWriter w;
    std::vector<torch::Tensor> keep;
    for (const auto & item : original) {
        const bool table = item.key().find("relative_position_bias_table") != std::string::npos;
        keep.push_back(table ? torch::full_like(item.value(), 0.625) : item.value().contiguous());
        w.add(item.key(), format::DType::F32, keep.back().sizes().vec(), keep.back().data_ptr(), keep.back().numel() * 4);
    }
    w.write(dir.str("constant.safetensors"));
    ImportOptions o;
    o.img_size = 32;
    o.window_size = 8;  // stage 0: 16×16 in 8×8 windows, shifted by 4; stage 1: one 8×8 window
    const ImportSummary s = import_checkpoint(dir.str("constant.safetensors"), o, dir.str("w8.pt"));
    ASSERT_EQ(s.adaptations.size(), 1u);
    EXPECT_NE(s.adaptations[0].find("window 4 -> 8"), std::string::npos);
    LoadedModel m = load_model(dir.str("w8.pt"));
    const auto params = m.model->named_parameters();
    for (const char * name : {"layers.0.blocks.1.attn.relative_position_bias_table", "layers.1.blocks.0.attn.relative_position_bias_table"}) {
        EXPECT_EQ(params[name].sizes(), (std::vector<int64_t>{15 * 15, name[7] == '0' ? 2 : 4})) << name;
        EXPECT_LE((params[name] - 0.625).abs().max().item<float>(), 1e-5) << name;
    }
    torch::NoGradGuard no_grad;
    EXPECT_EQ(m.model->forward(torch::zeros({1, 3, 32, 32})).sizes(), (std::vector<int64_t>{1, 7}));
    o.window_size = 4;  // the file's own: nothing to resample
    EXPECT_TRUE(import_checkpoint(test_util::kTimmReference + "swin_32_p2_w4_rgb.safetensors", o, dir.str("w4.pt")).adaptations.empty());
    ImportOptions deit;
    deit.window_size = 7;
    test_util::expect_error<ImportError>([&] { import_checkpoint(test_util::kTimmReference + "deit_32_p4_d48_rgb.pth", deit, dir.str("x.pt")); },
                                         {"--window-size: a DeiT has no windows"});
}

// A Swin trains through the same trainer, and a killed and resumed run equals the uninterrupted one.
TEST(Swin, TrainsAndResumesExactly) {
    BITVIT_REQUIRE_FASHION_MNIST();
    test_util::TempDir dir;
    const TrainConfig config = parse_config(R"(
[model]
name = "swin_nano_patch2_window7_28"
drop_path = 0.1
[data]
train_subset = 256
test_subset = 200
[optim]
lr = 2e-3
warmup_epochs = 0.5
[train]
epochs = 2
batch_size = 64
threads = 1
seed = 5
)", "swin-run");
    Trainer straight(config, dir.str("straight"), load_train_test(config));
    const auto history = straight.fit();
    ASSERT_EQ(history.size(), 2u);
    EXPECT_LT(history.back().train_loss, history.front().train_loss);
    {
        Trainer interrupted(config, dir.str("resumed"), load_train_test(config));
        interrupted.fit(1);
    }
    auto resumed = Trainer::resume(dir.str("resumed"), {}, load_train_test);
    resumed->fit();
    const auto a = straight.model()->named_parameters();
    const auto b = resumed->model()->named_parameters();
    ASSERT_EQ(a.size(), b.size());
    for (const auto & item : a) EXPECT_TRUE(torch::equal(item.value(), b[item.key()])) << item.key();
}
