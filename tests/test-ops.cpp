// OPs and size accounting: reproduces BiViT's Table 3 (DeiT-T 0.39 G, DeiT-B 5.81 G, Swin-T 1.62 G,
// Swin-S 3.04 G OPs with attention W1A1 and MLP W1A32) within 3 %, the FP totals of docs/methods.md §8
// and §9, and GSB's superposed-group factor.
#include <gtest/gtest.h>

#include <filesystem>

#include "train/checkpoint.h"
#include "train/ops.h"

namespace fs = std::filesystem;
using namespace bitvit;

namespace {
VisionModel swin_recipe_model(const std::string & recipe, const std::string & arch) {
    const auto config = load_config_file((fs::path(BITVIT_SOURCE_DIR) / "recipes" / (recipe + ".toml")).string(),
                                         {"model.name=" + arch});
    return build_stage_model(config, DataShape{1000, 3, 224}, config.stages.size() - 1);
}

Deit recipe_model(const std::string & recipe, const std::string & arch, size_t stage) {
    const auto config = load_config_file((fs::path(BITVIT_SOURCE_DIR) / "recipes" / (recipe + ".toml")).string(),
                                         {"model.name=" + arch});
    const auto base = deit_config(arch);
    return as_deit(build_stage_model(config, DataShape{1000, base.in_chans, base.img_size}, stage), "test");
}
}  // namespace

TEST(Ops, FullPrecisionDeitTotals) {
    Deit tiny(deit_config("deit_tiny_patch16_224"));
    const auto r = count_ops(tiny);
    EXPECT_NEAR(r.macs / 1e9, 1.254, 0.002);  // docs/methods.md §8
    EXPECT_DOUBLE_EQ(r.flops, r.macs);
    EXPECT_EQ(r.bops, 0);
    EXPECT_DOUBLE_EQ(r.fp32_bytes, 5717416.0 * 4);
    EXPECT_DOUBLE_EQ(r.packed_bytes, r.fp32_bytes);
    Deit base(deit_config("deit_base_patch16_224"));
    EXPECT_NEAR(count_ops(base).macs / 1e9, 17.56, 0.02);
}

TEST(Ops, ReproducesBiVitTable3) {
    // The bivit recipe's last stage: attention W1A1 (qkv, proj, q·kᵀ, P·v), MLP W1A32, patch embed and head FP.
    Deit tiny = recipe_model("bivit", "deit_tiny_patch16_224", 1);
    const auto t = count_ops(tiny);
    EXPECT_NEAR(t.ops() / 1e9, 0.39, 0.39 * 0.03);
    Deit base = recipe_model("bivit", "deit_base_patch16_224", 1);
    EXPECT_NEAR(count_ops(base).ops() / 1e9, 5.81, 5.81 * 0.03);
    for (const auto & l : t.layers) {
        if (l.name == "blocks.0.attn.qkv" || l.name == "blocks.0.attn.p@v") EXPECT_EQ(l.flops, 0) << l.name;
        if (l.name == "blocks.0.mlp.fc1") {
            EXPECT_EQ(l.precision, "W1A32");
            EXPECT_DOUBLE_EQ(l.flops, l.macs / 2);
        }
        if (l.name == "patch_embed") EXPECT_EQ(l.precision, "FP");
    }
    // 1-bit block weights: the packed file is ~10x smaller than FP32 (BiViT reports 22.8 -> 2.22 MB).
    EXPECT_LT(t.packed_bytes / 1e6, 2.5);
    EXPECT_GT(t.packed_bytes / 1e6, 2.0);
}

// Bi-ViT's DeiT-Tiny claim, 61.5x fewer OPs than FP, under our convention (OPs = FLOPs + BOPs/64) on
// Bi-ViT's own student, the distilled DeiT-T (cls and dist tokens, two FP heads): reached with the
// patch embedding binarized too (docs/methods.md §8), 62.8x; with it in full precision, 26x.
TEST(Ops, ReproducesBiVitFactorWithABinaryPatchEmbedding) {
    const std::string arch = "deit_tiny_patch16_224_distilled";
    Deit fp(deit_config(arch));
    const double fp_ops = count_ops(fp).ops();
    Deit binary_embed = recipe_model("bi-vit-binary-embed", arch, 0);
    const auto r = count_ops(binary_embed);
    EXPECT_NEAR(fp_ops / r.ops(), 61.5, 61.5 * 0.03);
    EXPECT_EQ(r.layers.front().name, "patch_embed");
    EXPECT_EQ(r.layers.front().precision, "W1A1");
    Deit fp_embed = recipe_model("bi-vit", arch, 0);
    EXPECT_NEAR(fp_ops / count_ops(fp_embed).ops(), 26.0, 0.5);
}

TEST(Ops, GroupsAndBitWidthsMultiplyBops) {
    Deit gsb = recipe_model("gsb", "deit_tiny_patch16_224", 1);
    const auto r = count_ops(gsb);
    for (const auto & l : r.layers) {
        if (l.name == "blocks.0.attn.p@v") {
            EXPECT_DOUBLE_EQ(l.bops, l.macs * 9);  // 3 attention groups × 3 value groups
            EXPECT_EQ(l.precision, "A1x3·A1x3");
        }
        if (l.name == "blocks.0.attn.q@k") EXPECT_DOUBLE_EQ(l.bops, l.macs);
    }
    Deit ter = recipe_model("tervit", "deit_tiny_patch16_224", 1);
    for (const auto & l : count_ops(ter).layers) {
        if (l.name == "blocks.0.mlp.fc2") {
            EXPECT_EQ(l.precision, "W2A8");
            EXPECT_DOUBLE_EQ(l.bops, l.macs * 16);
        }
    }
}

// Swin (docs/methods.md §9): timm's 4.49 G MACs for Swin-T; BiViT's Table 3 with attention W1A1 and MLP
// W1A32 (patch embedding, merging and head FP) within 3 %; the fully binary model is every block MAC as
// a BOP plus the FP patch embedding, merging and head — 0.256 G and 0.322 G, 5 % under the table's
// 0.27 G and 0.34 G (docs/results.md discusses the gap).
TEST(Ops, ReproducesBiVitTable3OnSwin) {
    Swin fp(swin_config("swin_tiny_patch4_window7_224"));
    const auto full = count_ops(fp);
    EXPECT_NEAR(full.macs / 1e9, 4.49, 0.005);
    EXPECT_NEAR(count_ops(swin_recipe_model("bivit", "swin_tiny_patch4_window7_224")).ops() / 1e9, 1.62, 1.62 * 0.03);
    EXPECT_NEAR(count_ops(swin_recipe_model("bivit", "swin_small_patch4_window7_224")).ops() / 1e9, 3.04, 3.04 * 0.03);
    for (const char * arch : {"swin_tiny_patch4_window7_224", "swin_small_patch4_window7_224"}) {
        const auto binary = count_ops(swin_recipe_model("bivit-w1a1", arch));
        double fp_macs = 0, block_macs = 0;
        for (const auto & l : binary.layers) {
            const bool kept_fp = l.name == "patch_embed" || l.name == "head" || l.name.find("downsample") != std::string::npos;
            (kept_fp ? fp_macs : block_macs) += l.macs;
            EXPECT_EQ(l.precision, kept_fp ? "FP" : (l.name.find('@') != std::string::npos ? "A1·A1" : "W1A1")) << l.name;
        }
        EXPECT_DOUBLE_EQ(binary.macs, fp_macs + block_macs);
        EXPECT_NEAR(binary.ops(), fp_macs + block_macs / 64, 1e-6 * binary.ops()) << arch;
    }
    EXPECT_NEAR(count_ops(swin_recipe_model("bivit-w1a1", "swin_tiny_patch4_window7_224")).ops() / 1e9, 0.256, 0.001);
}
