// Multi-stage recipes: parsing, quantizer placement by site pattern, distillation losses, and a
// quantized two-stage run with a teacher that trains, and resumes exactly at any epoch.
#include <gtest/gtest.h>

#include "temp-dir.h"
#include "require-data.h"
#include "two-stage-recipe.h"
#include <torch/torch.h>

#include <filesystem>

#include "train/distill.h"
#include "train/optimizer.h"
#include "train/quant/quantizers.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using namespace bitvit;

namespace {

const std::string kTwoStages = bitvit::test_util::two_stage_recipe();

template <class Fn>
std::string error_of(Fn fn) {
    try {
        fn();
    } catch (const std::exception & e) {
        return e.what();
    }
    return "(no error)";
}

bool has_module(VisionModel & model, const std::string & name) {
    for (const auto & m : model->named_modules()) {
        if (m.key() == name) return true;
    }
    return false;
}

using bitvit::test_util::TempDir;

}  // namespace

TEST(Stages, ParseAndRoundTrip) {
    const auto c = parse_config(kTwoStages, "two.toml");
    ASSERT_TRUE(c.staged);
    ASSERT_EQ(c.stages.size(), 2u);
    EXPECT_EQ(c.total_epochs(), 3);
    EXPECT_EQ(c.stages[0].name, "attention");
    EXPECT_DOUBLE_EQ(c.stages[0].optim.lr, 2e-3);
    EXPECT_DOUBLE_EQ(c.stages[1].optim.lr, c.optim.lr);  // inherits the top-level [optim]
    EXPECT_EQ(c.stages[1].init, "previous");
    EXPECT_EQ(c.stages[0].quantizers.size(), 7u);
    const auto again = parse_config(c.to_toml(), "roundtrip");
    EXPECT_EQ(again.to_toml(), c.to_toml());
    ASSERT_EQ(again.stages[1].quantizers.size(), 2u);
    // Options survive, booleans as 1/0.
    for (const auto & a : again.stages[1].quantizers) {
        if (a.pattern == "mlp.fc1.weight") {
            EXPECT_EQ(a.quantizer, "lsq");
            EXPECT_EQ(a.options.at("bits"), 4);
            EXPECT_EQ(a.options.at("per_channel"), 1);
        }
    }
    // epoch_scale shrinks every stage (at least 1 epoch) once; the stored config is already scaled.
    const auto quick = parse_config(kTwoStages, "two.toml", {"train.epoch_scale=0.4"});
    EXPECT_EQ(quick.stages[0].epochs, 1);  // round(0.8)
    EXPECT_EQ(quick.stages[1].epochs, 1);  // max(1, round(0.4))
    EXPECT_EQ(parse_config(quick.to_toml(), "again").total_epochs(), 2);
    EXPECT_EQ(parse_config("[train]\nepochs = 10\n", "p", {"train.epoch_scale=0.25"}).total_epochs(), 3);
    // ... and each stage's warm-up by the factor its epochs were scaled by: the schedule keeps its shape.
    const auto warm = parse_config("[optim]\nwarmup_epochs = 2\n[train]\nepochs = 20\n", "p", {"train.epoch_scale=0.05"});
    EXPECT_EQ(warm.total_epochs(), 1);
    EXPECT_DOUBLE_EQ(warm.stages[0].optim.warmup_epochs, 0.1);
    EXPECT_DOUBLE_EQ(warm.optim.warmup_epochs, 0.1);
    EXPECT_DOUBLE_EQ(quick.stages[0].optim.warmup_epochs, 0.0);  // 0 stays 0
    const auto staged_warm = parse_config(kTwoStages + "[stage.optim]\nwarmup_epochs = 1\n", "two.toml",
                                          {"train.epoch_scale=0.4"});
    EXPECT_DOUBLE_EQ(staged_warm.stages[1].optim.warmup_epochs, 1.0);  // 1 epoch stayed 1: warm-up unchanged
    EXPECT_DOUBLE_EQ(parse_config(staged_warm.to_toml(), "again").stages[1].optim.warmup_epochs, 1.0);

    // A recipe without stages is one implicit stage that does not appear in its TOML.
    const auto plain = parse_config("[train]\nepochs = 4\n", "plain");
    EXPECT_FALSE(plain.staged);
    ASSERT_EQ(plain.stages.size(), 1u);
    EXPECT_EQ(plain.stages[0].epochs, 4);
    EXPECT_EQ(plain.to_toml().find("[[stage]]"), std::string::npos);
}

TEST(Stages, ConfigErrorsNameTheStage) {
    EXPECT_NE(error_of([] { parse_config("[[stage]]\nepochs = 0\n", "r"); }).find("stage[0].epochs must be in [1, 100000]"),
              std::string::npos);
    EXPECT_NE(error_of([] { parse_config("[[stage]]\nepochs = 1\n[stage.distill]\nkind = \"hard\"\n", "r"); })
                  .find("stage[0].distill.teacher is required"),
              std::string::npos);
    EXPECT_NE(error_of([] { parse_config("[[stage]]\nepochs = 1\n[stage.distill]\nkind = \"magic\"\nteacher = \"t\"\n", "r"); })
                  .find("must be none, distribution, hard or soft"),
              std::string::npos);
    EXPECT_NE(error_of([] { parse_config("[[stage]]\nepochs = 1\nlr = 3\n", "r"); }).find("stage[0].lr is not a known setting"),
              std::string::npos);
    EXPECT_NE(error_of([] { parse_config("[[stage]]\nepochs = 1\n[stage.quantizers]\n\"attn.q\" = { bits = 2 }\n", "r"); })
                  .find("needs name"),
              std::string::npos);
}

TEST(Stages, QuantizersGoWherePatternsSay) {
    const auto c = parse_config(kTwoStages, "two.toml");
    const DataShape shape{10, 1, 28};
    VisionModel attention = build_stage_model(c, shape, 0);
    EXPECT_TRUE(has_module(attention, "blocks.1.attn.probs_quantizer"));
    EXPECT_FALSE(has_module(attention, "blocks.0.attn.probs_quantizer"));  // the full name's "fp" wins
    EXPECT_TRUE(has_module(attention, "blocks.0.attn.q_quantizer"));
    EXPECT_TRUE(has_module(attention, "blocks.3.attn.qkv.weight_quantizer"));
    EXPECT_FALSE(has_module(attention, "blocks.0.mlp.fc1.weight_quantizer"));
    VisionModel mlp = build_stage_model(c, shape, 1);
    EXPECT_TRUE(has_module(mlp, "blocks.2.mlp.fc1.weight_quantizer"));

    auto bad = c;
    bad.stages[0].quantizers.push_back({"attn.qq", "sign", {}});
    EXPECT_NE(error_of([&] { build_stage_model(bad, shape, 0); }).find("'attn.qq' matches no site"), std::string::npos);
    bad = c;
    bad.stages[0].quantizers.push_back({"mlp.fc2.input", "pws", {}});
    EXPECT_NE(error_of([&] { build_stage_model(bad, shape, 0); }).find("cannot quantize linear inputs"),
              std::string::npos);
    bad = c;
    bad.stages[0].quantizers.push_back({"attn.v", "binarish", {}});
    EXPECT_NE(error_of([&] { build_stage_model(bad, shape, 0); }).find("unknown quantizer 'binarish'"), std::string::npos);
}

TEST(Distillation, LossesMatchTheirDefinitions) {
    const auto labels = torch::tensor({0, 2}, torch::kInt64);
    const auto teacher = torch::tensor({{2.0f, 0.0f, 1.0f}, {0.0f, 3.0f, 0.5f}});  // argmax 0, 1
    ModelOutput s{torch::tensor({{1.0f, 0.5f, 0.0f}, {0.2f, 0.1f, 0.9f}}), torch::tensor({{0.0f, 1.0f, 0.0f}, {1.0f, 0.0f, 2.0f}})};
    auto ce = [](const torch::Tensor & z, const torch::Tensor & y) { return torch::nn::functional::cross_entropy(z, y); };
    DistillSection d;
    d.alpha = 0.25;
    d.tau = 2.0;
    d.kind = "hard";
    EXPECT_NEAR(logit_loss(s, labels, teacher, d, 0).item<double>(),
                (0.75 * ce(s.logits, labels) + 0.25 * ce(s.dist_logits, torch::tensor({0, 1}, torch::kInt64))).item<double>(), 1e-6);
    d.kind = "distribution";
    auto soft_ce = [&](const torch::Tensor & z) {
        return -(torch::softmax(teacher / 2.0, 1) * torch::log_softmax(z / 2.0, 1)).sum(1).mean();
    };
    EXPECT_NEAR(logit_loss(s, labels, teacher, d, 0).item<double>(),
                ((soft_ce(s.logits) + soft_ce(s.dist_logits)) / 2).item<double>(), 1e-6);
    d.kind = "soft";
    const auto pt = torch::softmax(teacher / 2.0, 1);
    const auto kl = (pt * (pt.log() - torch::log_softmax(s.dist_logits / 2.0, 1))).sum() * 4.0 / 6.0;
    EXPECT_NEAR(logit_loss(s, labels, teacher, d, 0).item<double>(),
                (0.75 * ce(s.logits, labels) + 0.25 * kl).item<double>(), 1e-6);
}

namespace {
BlockTaps taps_with(const torch::Tensor & probs, const torch::Tensor & scores) {
    BlockTaps t;
    t.probs = probs;
    t.scores = scores;
    return t;
}
}  // namespace

TEST(Distillation, RankingLossPenalisesOrderViolations) {
    // Teacher order 0 > 1 > 2; student scores 1, 2, 0: pairs (0,1) violated by 1, (0,2) and (1,2) kept.
    const auto teacher = taps_with(torch::tensor({0.5f, 0.3f, 0.2f}).view({1, 1, 1, 3}), torch::zeros({1, 1, 1, 3}));
    auto scores = torch::tensor({1.0f, 2.0f, 0.0f}).view({1, 1, 1, 3}).requires_grad_(true);
    const auto student = taps_with(torch::zeros({1, 1, 1, 3}), scores);
    auto sp = [](double x) { return std::log1p(std::exp(x)); };
    const auto loss = ranking_loss({student}, {teacher}, 16, 1.0);
    EXPECT_NEAR(loss.item<double>(), (sp(1.0) + sp(-1.0) + sp(-2.0)) / 3, 1e-6);
    // Smooth in the scores: the gradient matches central differences.
    loss.backward();
    for (int j = 0; j < 3; ++j) {
        auto up = scores.detach().clone(), down = scores.detach().clone();
        up.view(-1)[j] += 1e-3;
        down.view(-1)[j] -= 1e-3;
        const double fd = (ranking_loss({taps_with(student.probs, up)}, {teacher}, 16, 1.0).item<double>() -
                           ranking_loss({taps_with(student.probs, down)}, {teacher}, 16, 1.0).item<double>()) / 2e-3;
        EXPECT_NEAR(scores.grad().view(-1)[j].item<double>(), fd, 1e-3) << j;
    }
    // Ties in the teacher's map are not ordered pairs; top_k limits the keys considered.
    const auto tied = taps_with(torch::tensor({0.4f, 0.4f, 0.2f}).view({1, 1, 1, 3}), torch::zeros({1, 1, 1, 3}));
    const auto flat = taps_with(torch::zeros({1, 1, 1, 3}), torch::zeros({1, 1, 1, 3}));
    EXPECT_NEAR(ranking_loss({flat}, {tied}, 16, 1.0).item<double>(), sp(0.0), 1e-6);  // 2 pairs, margin 0
    EXPECT_NEAR(ranking_loss({student}, {teacher}, 2, 1.0).item<double>(), sp(1.0), 1e-6);  // only (0,1)
}

TEST(Distillation, DirectionMatchingIgnoresScaleAndSeesDirection) {
    BlockTaps a, b;
    a.q = torch::randn({2, 2, 5, 4});
    a.k = torch::randn({2, 2, 5, 4});
    a.v = torch::randn({2, 2, 5, 4});
    a.probs = torch::zeros({1});
    b = a;
    b.q = a.q * 3;  // Gram matrices scale by 9: same direction
    EXPECT_NEAR(direction_matching_loss({a}, {b}).item<double>(), 0.0, 1e-5);
    b.v = torch::randn({2, 2, 5, 4});
    EXPECT_GT(direction_matching_loss({a}, {b}).item<double>(), 0.1);
    EXPECT_THROW(direction_matching_loss({a, a}, {b}), c10::Error);  // depth mismatch
}

TEST(Distillation, FeatureLossesAreTheirClosedForms) {
    torch::manual_seed(21);
    auto taps = [] {
        BlockTaps t;
        t.q = torch::randn({2, 2, 5, 4});
        t.k = torch::randn({2, 2, 5, 4});
        t.v = torch::randn({2, 2, 5, 4});
        t.scores = torch::randn({2, 2, 5, 5});
        t.probs = torch::softmax(t.scores, -1);
        t.hidden = torch::randn({2, 5, 8});
        return t;
    };
    const std::vector<BlockTaps> s = {taps(), taps()}, t = {taps(), taps()};
    auto mse = [](const torch::Tensor & a, const torch::Tensor & b) { return (a - b).pow(2).mean().item<double>(); };
    const double attn = mse(s[0].scores, t[0].scores) + mse(s[1].scores, t[1].scores);
    const double hidden = mse(s[0].hidden, t[0].hidden) + mse(s[1].hidden, t[1].hidden);
    EXPECT_NEAR(attention_mse_loss(s, t).item<double>(), attn, 1e-6);
    EXPECT_NEAR(hidden_mse_loss(s, t).item<double>(), hidden, 1e-6);
    // BiBERT's direction matching, written out with plain loops: G = x·xᵀ/√d per (b, h), Frobenius
    // norms over the whole [B, H, N, N] tensor.
    auto gram = [](const torch::Tensor & x) {
        torch::Tensor g = torch::zeros({2, 2, 5, 5});
        for (int b = 0; b < 2; ++b)
            for (int h = 0; h < 2; ++h)
                for (int i = 0; i < 5; ++i)
                    for (int j = 0; j < 5; ++j) g[b][h][i][j] = (x[b][h][i] * x[b][h][j]).sum() / 2.0;  // √4
        return g;
    };
    double dmd = 0;
    for (int l = 0; l < 2; ++l) {
        for (auto member : {&BlockTaps::q, &BlockTaps::k, &BlockTaps::v}) {
            const torch::Tensor gs = gram(s[l].*member), gt = gram(t[l].*member);
            dmd += (gs / gs.norm() - gt / gt.norm()).norm().item<double>();
        }
    }
    EXPECT_NEAR(direction_matching_loss(s, t).item<double>(), dmd, 1e-5);
    // feature_loss weights each enabled term.
    DistillSection d;
    d.attn_mse = 0.5;
    d.hidden_mse = 2.0;
    d.dmd = 0.25;
    EXPECT_NEAR(feature_loss(s, t, d).item<double>(), 0.5 * attn + 2.0 * hidden + 0.25 * dmd, 1e-5);
    d.rank = 3.0;
    d.rank_top_k = 3;
    EXPECT_NEAR(feature_loss(s, t, d).item<double>(),
                0.5 * attn + 2.0 * hidden + 0.25 * dmd + 3.0 * ranking_loss(s, t, 3, 1.0).item<double>(), 1e-5);
}

TEST(Distillation, LabelSmoothingAppliesToTheLabelTermsOnly) {
    const auto labels = torch::tensor({0, 2}, torch::kInt64);
    const auto teacher = torch::tensor({{2.0f, 0.0f, 1.0f}, {0.0f, 3.0f, 0.5f}});  // argmax 0, 1
    ModelOutput s{torch::tensor({{1.0f, 0.5f, 0.0f}, {0.2f, 0.1f, 0.9f}}), torch::tensor({{0.0f, 1.0f, 0.0f}, {1.0f, 0.0f, 2.0f}})};
    // Smoothed CE with ε over C = 3 classes: (1 − ε)·(−log p_y) + ε·mean_c(−log p_c), batch mean.
    auto smoothed = [](const torch::Tensor & z, const torch::Tensor & y, double eps) {
        const torch::Tensor logp = torch::log_softmax(z, 1);
        return ((1 - eps) * -logp.gather(1, y.unsqueeze(1)).squeeze(1) + eps * -logp.mean(1)).mean().item<double>();
    };
    DistillSection d;
    EXPECT_NEAR(logit_loss(s, labels, {}, d, 0.1).item<double>(),
                (smoothed(s.logits, labels, 0.1) + smoothed(s.dist_logits, labels, 0.1)) / 2, 1e-6);
    d.kind = "hard";
    d.alpha = 0.25;
    EXPECT_NEAR(logit_loss(s, labels, teacher, d, 0.1).item<double>(),
                0.75 * smoothed(s.logits, labels, 0.1) + 0.25 * smoothed(s.dist_logits, torch::tensor({0, 1}, torch::kInt64), 0.0),
                1e-6);
}

TEST(Stages, DistilledTwoStageRunTrainsAndResumesExactly) {
    BITVIT_REQUIRE_FASHION_MNIST();
    TempDir dir;
    // A small FP teacher first.
    auto fp = parse_config("[model]\nname = \"deit_nano_patch7_28\"\n[data]\ntest_subset = 300\n"
                           "[optim]\nlr = 3e-3\nwarmup_epochs = 0.3\n[train]\nepochs = 2\nbatch_size = 64\nthreads = 1\n",
                           "teacher", {"data.train_subset=1500"});
    Trainer teacher(fp, dir.str("teacher"), load_train_test(fp));
    teacher.fit();

    // Students: attention binarized (stage 1, from the teacher's weights, distilled), then MLP.
    std::string recipe = kTwoStages;
    recipe.replace(recipe.find("init = \"scratch\""), 16, "init = \"" + dir.str("teacher/checkpoint.pt") + "\"");
    recipe += "\n[stage.distill]\nteacher = \"" + dir.str("teacher/checkpoint.pt") + "\"\nkind = \"hard\"\n";
    auto student = parse_config(recipe, "student", {"data.train_subset=512", "data.test_subset=300"});
    student.stages[0].distill = student.stages[1].distill;
    student.stages[0].distill.kind = "distribution";
    student.stages[0].distill.rank = 1.0;  // feature distillation in the loop too
    student.stages[0].distill.dmd = 0.1;

    Trainer straight(student, dir.str("straight"), load_train_test(student));
    const auto history = straight.fit();
    ASSERT_EQ(history.size(), 3u);
    EXPECT_EQ(history[0].stage, "attention");
    EXPECT_EQ(history[2].stage, "mlp");
    for (const auto & m : history) EXPECT_TRUE(std::isfinite(m.train_loss));
    EXPECT_LT(history[1].train_loss, history[0].train_loss);  // the first stage learns

    // Killed after epoch 1 (mid-stage) and after epoch 2 (at the stage boundary): same final weights.
    for (int64_t stop : {1, 2}) {
        const std::string run = dir.str("resumed" + std::to_string(stop));
        {
            Trainer first(student, run, load_train_test(student));
            first.fit(stop);
        }
        auto resumed = Trainer::resume(run, {}, load_train_test);
        resumed->fit();
        auto a = straight.model()->named_parameters();
        auto b = resumed->model()->named_parameters();
        ASSERT_EQ(a.size(), b.size());
        for (const auto & item : a) EXPECT_TRUE(torch::equal(item.value(), b[item.key()])) << "stop " << stop << " " << item.key();
    }
    // The final checkpoint loads as the quantized model it is.
    auto loaded = load_model(straight.checkpoint_path());
    EXPECT_EQ(loaded.state.stage, 1);
    EXPECT_TRUE(has_module(loaded.model, "blocks.0.mlp.fc1.weight_quantizer"));
}

// A Trainer alone cannot stand in for several ranks: the recipe's rank count must be the group's.
TEST(Stages, DataParallelNeedsThatManyRanks) {
    BITVIT_REQUIRE_FASHION_MNIST();
    TempDir dir;
    auto c = parse_config(kTwoStages, "dp", {"data.train_subset=256", "data.test_subset=100", "train.data_parallel=2"});
    EXPECT_NE(error_of([&] { Trainer(c, dir.str("run"), load_train_test(c)); }).find("--nproc 2"), std::string::npos);
    EXPECT_NE(error_of([] { parse_config("[train]\nbatch_size = 10\ndata_parallel = 4\n", "r"); }).find("must divide train.batch_size 10"),
              std::string::npos);
}

TEST(Stages, MissingTeacherOrInitFailsBeforeTraining) {
    BITVIT_REQUIRE_FASHION_MNIST();
    TempDir dir;
    std::string recipe = kTwoStages + "\n[stage.distill]\nteacher = \"/no/such/teacher.pt\"\nkind = \"hard\"\n";
    auto c = parse_config(recipe, "r", {"data.train_subset=256", "data.test_subset=100"});
    EXPECT_NE(error_of([&] { Trainer(c, dir.str("run"), load_train_test(c)); }).find("/no/such/teacher.pt"), std::string::npos);
    EXPECT_FALSE(fs::exists(dir.str("run/checkpoint.pt")));
}
