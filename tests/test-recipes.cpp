// The shipped recipes: each parses, builds every stage's model, and trains (on the nano model and a
// Fashion-MNIST subset of 640 images, batch 64, from a freshly trained nano teacher) for the recipe's
// own number of epochs — 200 to 240 optimiser steps — with a falling loss; the trained model then
// exports and runs in the bit-wise runtime with the same predictions as LibTorch.
#include <gtest/gtest.h>

#include "require-data.h"

#include <filesystem>

#include "train/export.h"
#include "train/trainer.h"
#include "train/verify.h"

namespace fs = std::filesystem;
using namespace bitvit;

namespace {

std::vector<std::string> shipped_recipes() {
    std::vector<std::string> names;
    for (const auto & entry : fs::directory_iterator(fs::path(BITVIT_SOURCE_DIR) / "recipes")) {
        if (entry.path().extension() == ".toml") names.push_back(entry.path().stem().string());
    }
    std::sort(names.begin(), names.end());
    return names;
}

std::string recipe_path(const std::string & name) {
    return (fs::path(BITVIT_SOURCE_DIR) / "recipes" / (name + ".toml")).string();
}

class RecipeRun : public ::testing::TestWithParam<std::string> {
  protected:
    static void SetUpTestSuite() {
        if (!fs::exists(data::default_root("fashion-mnist"))) return;
        dir_ = fs::temp_directory_path() / ("bitvit-recipes-" + std::to_string(::getpid()));
        auto fp = load_config_file(recipe_path("fp"), {"model.name=deit_nano_patch7_28", "data.train_subset=640",
                                                       "data.test_subset=100", "train.epochs=2", "train.batch_size=64",
                                                       "optim.lr=3e-3", "model.drop_path=0",
                                                       "train.data_parallel=1"});
        Trainer teacher(fp, (dir_ / "teacher").string(), load_train_test(fp));
        teacher.fit();
    }
    static void TearDownTestSuite() { fs::remove_all(dir_); }
    static inline fs::path dir_;
};

}  // namespace

TEST(Recipes, AllShippedRecipesParseAndBuild) {
    const auto names = shipped_recipes();
    for (const char * expected : {"fp", "lsq-w8a8", "bnn", "bibert", "bit", "reactnet", "twn", "bivit", "bivit-w1a1",
                                  "tervit", "bi-vit", "gsb"}) {
        EXPECT_NE(std::find(names.begin(), names.end(), expected), names.end()) << expected;
    }
    for (const auto & name : names) {
        const auto config = load_config_file(recipe_path(name));
        for (size_t s = 0; s < config.stages.size(); ++s) {
            EXPECT_NO_THROW(build_stage_model(config, DataShape{10, 1, 28}, s)) << name << " stage " << s;
        }
    }
}

TEST_P(RecipeRun, TrainsAndLowersItsLoss) {
    BITVIT_REQUIRE_FASHION_MNIST();
    const std::string name = GetParam();
    auto config = load_config_file(recipe_path(name),
                                   {"model.name=deit_nano_patch7_28", "data.train_subset=640", "data.test_subset=100",
                                    "train.batch_size=64", "train.data_parallel=1", "train.fp_checkpoint=\"" + (dir_ / "teacher/checkpoint.pt").string() + "\""});
    Trainer trainer(config, (dir_ / name).string(), load_train_test(config));
    const auto history = trainer.fit();
    ASSERT_EQ(static_cast<int64_t>(history.size()), config.total_epochs());
    for (const auto & m : history) ASSERT_TRUE(std::isfinite(m.train_loss)) << name << " epoch " << m.epoch;
    // Within the last stage (its quantizers fixed), the training loss falls.
    const auto & last_stage = history.back().stage;
    const auto first = std::find_if(history.begin(), history.end(), [&](const EpochMetrics & m) { return m.stage == last_stage; });
    EXPECT_LT(history.back().train_loss, first->train_loss) << name;

    const std::string packed_path = (dir_ / (name + ".safetensors")).string();
    Deit model = as_deit(trainer.model(), "test");
    export_packed(model, ExportOptions{name, config.data.mean, config.data.std}, packed_path);
    const auto packed = runtime::PackedModel::load(packed_path);
    const VerifyReport r = verify_packed(model, packed, trainer.data().test, make_preprocess(config.data), 50, 1);
    EXPECT_EQ(r.count, 100);
    EXPECT_GE(r.agreement(), 0.99) << name << ": max |logit difference| " << r.max_abs_logit_diff;
    EXPECT_NEAR(r.runtime_accuracy, r.torch_accuracy, 0.011) << name;

    // verify --blocks locates a departure: shifting the last block's MLP norm in the checkpoint's model
    // moves only the last block's divergence.
    const Preprocess pre = make_preprocess(config.data);
    const std::vector<BlockDivergence> before = block_divergence(model, packed, trainer.data().test, pre, 8);
    ASSERT_EQ(static_cast<int64_t>(before.size()), model->config().depth) << name;
    {
        torch::NoGradGuard no_grad;
        model->blocks[before.size() - 1]->as<Block>()->norm2->bias.add_(1.0);  // moves the signs of binary inputs too
    }
    const std::vector<BlockDivergence> after = block_divergence(model, packed, trainer.data().test, pre, 8);
    for (size_t b = 0; b + 1 < before.size(); ++b) EXPECT_EQ(after[b].max_abs, before[b].max_abs) << name << " block " << b;
    EXPECT_GT(after.back().mean_abs, before.back().mean_abs + 1e-3) << name;
}

INSTANTIATE_TEST_SUITE_P(Shipped, RecipeRun, ::testing::ValuesIn(shipped_recipes()),
                         [](const ::testing::TestParamInfo<std::string> & info) {
                             std::string n = info.param;
                             std::replace(n.begin(), n.end(), '-', '_');
                             return n;
                         });
