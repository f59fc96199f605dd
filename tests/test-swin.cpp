// The Swin Transformer against timm's own (tests/data/timm-reference/swin_32_p2_w4_rgb.*: shifted
// windows in both stages, non-trivial weights everywhere): the same logits from both file formats,
// Microsoft's original layout mapped onto timm's, timm's parameter counts for the standard sizes,
// the window geometry timm uses, and the site list the runtime validates against.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "expect-error.h"
#include "format/safetensors.h"
#include "spec/sites.h"
#include "train/checkpoint.h"
#include "train/import.h"
#include "train/quant/quantizers.h"
#include "train/swin.h"

using namespace bitvit;

namespace {

const std::string kReference = std::string(BITVIT_SOURCE_DIR) + "/tests/data/timm-reference/";

// SwinTransformer(img_size=32, patch_size=2, in_chans=3, num_classes=7, embed_dim=24, depths=(2, 2),
// num_heads=(2, 4), window_size=4), as tests/data/timm-reference/README.md records.
SwinConfig reference_config() {
    SwinConfig c;
    c.name = "swin_32_p2_w4_rgb";
    c.img_size = 32;
    c.patch_size = 2;
    c.in_chans = 3;
    c.num_classes = 7;
    c.embed_dim = 24;
    c.depths = {2, 2};
    c.num_heads = {2, 4};
    c.window_size = 4;
    return c;
}

torch::Tensor io_tensor(const std::string & name) {
    const auto file = format::SafetensorsFile::load(kReference + "swin_32_p2_w4_rgb.io.safetensors");
    const auto & info = file.info(name);
    return torch::from_blob(const_cast<uint8_t *>(file.data(name)), info.shape, torch::kFloat).clone();
}

// The reference model with the tensors of `sd` copied in; every name must match both ways.
Swin reference_model(const torch::OrderedDict<std::string, torch::Tensor> & sd) {
    Swin model(reference_config());
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
    const torch::Tensor input = io_tensor("input"), expected = io_tensor("logits");  // [5, 3, 32, 32], [5, 7]
    for (const char * file : {"swin_32_p2_w4_rgb.safetensors", "swin_32_p2_w4_rgb.pth"}) {
        Swin model = reference_model(read_state_dict(kReference + file));
        torch::NoGradGuard no_grad;
        const torch::Tensor got = model->forward(input);
        ASSERT_EQ(got.sizes(), expected.sizes()) << file;
        EXPECT_LE(max_abs_diff(got, expected), 1e-5) << file;
    }
}

// The same check fails without the shift, the mask or the relative position bias: each one moves the
// logits at least ten times the tolerance, so the test above sees all three.
TEST(Swin, TheReferenceDependsOnShiftMaskAndPositionBias) {
    const torch::Tensor input = io_tensor("input"), expected = io_tensor("logits");
    const auto sd = read_state_dict(kReference + "swin_32_p2_w4_rgb.safetensors");
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
    const auto timm = read_state_dict(kReference + "swin_32_p2_w4_rgb.safetensors");
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
    EXPECT_LE(max_abs_diff(reference_model(mapped)->forward(io_tensor("input")), io_tensor("logits")), 1e-5);
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
    for (const auto & t : read_state_dict(kReference + "swin_32_p2_w4_rgb.safetensors").values()) timm_count += t.numel();
    EXPECT_EQ(reference_config().parameter_count(), timm_count);
}

// timm clips the window to a stage's resolution and drops the shift where one window covers it.
TEST(Swin, WindowsAreClippedAndUnshiftedWhereOneCoversTheStage) {
    const SwinConfig tiny = swin_config("swin_tiny_patch4_window7_224");  // resolutions 56, 28, 14, 7
    EXPECT_EQ(tiny.stage_window(3), 7);
    EXPECT_EQ(tiny.block_shift(2, 1), 3);
    EXPECT_EQ(tiny.block_shift(3, 1), 0);
    SwinConfig c = reference_config();
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
    SwinConfig c = reference_config();
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
    SwinConfig c = reference_config();
    c.img_size = 36;  // 18×18, then 9×9: a third stage could not merge
    c.depths = {2, 2, 2};
    c.num_heads = {2, 4, 8};
    test_util::expect_error<std::invalid_argument>([&] { c.validate(); },
                                                   {"swin_32_p2_w4_rgb", "patch merging needs an even resolution", "9×9"});
    c = reference_config();
    c.num_heads = {2};
    test_util::expect_error<std::invalid_argument>([&] { c.validate(); }, {"num_heads lists 1 stages but depths lists 2"});
    c = reference_config();
    c.num_heads = {5, 4};
    test_util::expect_error<std::invalid_argument>([&] { c.validate(); }, {"stage 0", "width 24 is not divisible by num_heads 5"});
    test_util::expect_error<std::invalid_argument>([] { swin_config("swin_huge"); }, {"unknown model 'swin_huge'", "swin_tiny_patch4_window7_224"});
}
