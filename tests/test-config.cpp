#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <unistd.h>

#include "train/config.h"

using namespace bitvit;

namespace {
template <class Fn>
std::string config_error(Fn fn) {
    try {
        fn();
    } catch (const ConfigError & e) {
        return e.what();
    }
    return "(no error)";
}
}  // namespace

TEST(Config, ParsesSectionsAndAppliesOverrides) {
    const auto c = parse_config(R"(
[model]
name = "deit_nano_patch7_28"
[optim]
lr = 5e-4
[train]
epochs = 3
)", "r.toml", {"train.batch_size=64", "data.name=mnist", "optim.weight_decay=0"});
    EXPECT_EQ(c.model.name, "deit_nano_patch7_28");
    EXPECT_DOUBLE_EQ(c.optim.lr, 5e-4);
    EXPECT_EQ(c.train.epochs, 3);
    EXPECT_EQ(c.train.batch_size, 64);
    EXPECT_EQ(c.data.name, "mnist");  // bare word taken as a string
    EXPECT_EQ(c.optim.weight_decay, 0.0);  // integer accepted as a number
}

TEST(Config, RoundTripsThroughToml) {
    auto c = parse_config("", "x", {"optim.lr=0.00123456789012345", "data.mean=[0.1,0.2,0.3]",
                                    "data.std=[0.5,0.25,0.125]", "train.seed=42", "data.hflip=false"});
    const auto again = parse_config(c.to_toml(), "roundtrip");
    EXPECT_EQ(again.to_toml(), c.to_toml());
    EXPECT_EQ(again.optim.lr, c.optim.lr);
    EXPECT_EQ(again.data.mean, c.data.mean);
    EXPECT_EQ(again.train.seed, 42u);
    EXPECT_FALSE(again.data.hflip);
}

TEST(Config, ErrorsNameTheKeyAndOrigin) {
    EXPECT_NE(config_error([] { parse_config("[train]\nepochz = 3\n", "r.toml"); }).find("r.toml: train.epochz is not a known setting"),
              std::string::npos);
    EXPECT_NE(config_error([] { parse_config("[trian]\n", "r.toml"); }).find("unknown section [trian]"), std::string::npos);
    EXPECT_NE(config_error([] { parse_config("[train]\nepochs = \"3\"\n", "r.toml"); }).find("train.epochs must be an integer"),
              std::string::npos);
    EXPECT_NE(config_error([] { parse_config("", "r", {"optim.lr=-1"}); }).find("optim.lr must be a number in (0, 10]"),
              std::string::npos);
    EXPECT_NE(config_error([] { parse_config("", "r", {"optim.optimizer=sgd"}); }).find("optim.optimizer"), std::string::npos);
    EXPECT_NE(config_error([] { parse_config("", "r", {"lr=1"}); }).find("section.key=value"), std::string::npos);
    EXPECT_NE(config_error([] { parse_config("[train\n", "r.toml"); }).find("r.toml:1"), std::string::npos);
    EXPECT_NE(config_error([] { parse_config("", "r", {"data.std=[1,2]"}); }).find("equal length"), std::string::npos);
    EXPECT_NE(config_error([] { load_config_file("/nonexistent.toml"); }).find("/nonexistent.toml"), std::string::npos);
}

namespace {

// Writes recipe files into a fresh directory for one test.
class RecipeDir {
  public:
    RecipeDir() : path_(std::filesystem::temp_directory_path() / ("bitvit-config-" + std::to_string(::getpid()) + "-" +
                                                                  std::to_string(counter_++))) {
        std::filesystem::create_directories(path_ / "base");
    }
    ~RecipeDir() { std::filesystem::remove_all(path_); }
    std::string write(const std::string & name, const std::string & text) const {
        const auto p = (path_ / name).string();
        std::ofstream(p) << text;
        return p;
    }

  private:
    std::filesystem::path path_;
    static inline int counter_ = 0;
};

}  // namespace

TEST(Config, RecipesStartFromABaseFile) {
    RecipeDir dir;
    dir.write("base/common.toml", "[data]\ncrop_padding = 3\nhflip = false\n[optim]\nlr = 2e-4\nweight_decay = 0.1\n");
    dir.write("base/middle.toml", "base = \"common.toml\"\n[optim]\nweight_decay = 0.0\n");
    const auto path = dir.write("r.toml", "base = \"base/middle.toml\"\n[data]\nhflip = true\n[train]\nepochs = 2\n");
    const TrainConfig c = load_config_file(path, {"optim.lr=1e-3"});
    EXPECT_EQ(c.data.crop_padding, 3);           // from the base's base
    EXPECT_TRUE(c.data.hflip);                   // the recipe's own key wins
    EXPECT_DOUBLE_EQ(c.optim.weight_decay, 0.0); // the nearer base wins over the farther
    EXPECT_DOUBLE_EQ(c.optim.lr, 1e-3);          // --set wins over all
    EXPECT_EQ(c.train.epochs, 2);
    // The stored config stands alone: no base left in it.
    EXPECT_EQ(c.to_toml().find("base"), std::string::npos);
    // A cycle, a missing base, a base in text that is no file, an unknown key inside a base.
    dir.write("loop.toml", "base = \"loop.toml\"\n");
    EXPECT_NE(config_error([&] { load_config_file(dir.write("cyc.toml", "base = \"loop.toml\"\n")); }).find("nest more than 8"), std::string::npos);
    EXPECT_NE(config_error([&] { load_config_file(dir.write("m.toml", "base = \"nope.toml\"\n")); }).find("nope.toml: cannot read"), std::string::npos);
    EXPECT_NE(config_error([] { parse_config("base = \"x.toml\"\n", "text"); }).find("resolved only in recipe files"), std::string::npos);
    dir.write("base/typo.toml", "[optim]\nlrr = 1\n");
    EXPECT_NE(config_error([&] { load_config_file(dir.write("t.toml", "base = \"base/typo.toml\"\n")); }).find("optim.lrr"), std::string::npos);
}

TEST(Config, AStageCanExtendThePreviousStage) {
    const auto c = parse_config(R"(
[optim]
lr = 1e-3
warmup_epochs = 2
[train]
epoch_scale = 0.5
[[stage]]
name = "one"
epochs = 4
init = "fp"
[stage.optim]
lr = 5e-4
[stage.model]
qk_norm = true
[stage.quantizers]
"attn.q" = "sign"
"attn.k" = "sign"
"mlp.fc1.weight" = { name = "lsq", bits = 4 }
[stage.distill]
teacher = "t.pt"
kind = "hard"
[[stage]]
name = "two"
epochs = 8
extends = "previous"
[stage.quantizers]
"attn.k" = "fp"
"mlp.fc1.weight" = "xnor"
"mlp.fc2.weight" = "xnor"
[stage.distill]
alpha = 0.25
)", "r");
    ASSERT_EQ(c.stages.size(), 2u);
    const StageSection & two = c.stages[1];
    EXPECT_EQ(two.init, "previous");
    EXPECT_DOUBLE_EQ(two.optim.lr, 5e-4);      // the previous stage's optimiser
    EXPECT_TRUE(two.variant.qk_norm);         // and block variant
    EXPECT_EQ(two.distill.kind, "hard");      // and distillation, with its own override
    EXPECT_EQ(two.distill.teacher, "t.pt");
    EXPECT_DOUBLE_EQ(two.distill.alpha, 0.25);
    std::map<std::string, std::string> map;
    for (const auto & a : two.quantizers) map[a.pattern] = a.quantizer;
    EXPECT_EQ(map, (std::map<std::string, std::string>{
                       {"attn.q", "sign"}, {"attn.k", "fp"}, {"mlp.fc1.weight", "xnor"}, {"mlp.fc2.weight", "xnor"}}));
    for (const auto & a : two.quantizers) {
        if (a.pattern == "mlp.fc1.weight") EXPECT_TRUE(a.options.empty());  // replaced whole, options included
    }
    // epoch_scale applies once to each stage, also to one copied from its predecessor: 8 → 4 epochs,
    // warm-up 2 → 1.
    EXPECT_EQ(two.epochs, 4);
    EXPECT_DOUBLE_EQ(two.optim.warmup_epochs, 1.0);
    EXPECT_EQ(c.stages[0].epochs, 2);
    EXPECT_NE(config_error([] { parse_config("[[stage]]\nepochs = 1\nextends = \"previous\"\n", "r"); }).find("needs a stage before"),
              std::string::npos);
    EXPECT_NE(config_error([] { parse_config("[[stage]]\nepochs = 1\n[[stage]]\nepochs = 1\nextends = \"first\"\n", "r"); })
                  .find("must be \"previous\""),
              std::string::npos);
}

// Values that would parse but could never train (or would fail late: a NaN loss at step 0, memory
// exhausted after a minute) are refused when the recipe is read, naming the key.
// A stage's [stage.swin.*] tables apply on a Swin only, on top of the stage's own (and are what a
// following stage extends); on a DeiT they are ignored but still checked.
TEST(Config, SwinTablesApplyToSwinModelsOnly) {
    const std::string recipe = R"(
[[stage]]
epochs = 1
[stage.model]
qk_norm = true
[stage.quantizers]
"attn.q" = "actbi"
[stage.distill]
teacher = "fp"
kind = "hard"
rank = 1.0
[stage.swin.model]
qk_norm = false
[stage.swin.quantizers]
"downsample.reduction.weight" = "linear_bi"
[stage.swin.distill]
kind = "distribution"
rank = 0.0
[[stage]]
extends = "previous"
epochs = 1
)";
    const TrainConfig deit = parse_config(recipe, "r.toml");
    EXPECT_TRUE(deit.stages[0].variant.qk_norm);
    EXPECT_EQ(deit.stages[0].quantizers.size(), 1u);
    EXPECT_EQ(deit.stages[0].distill.kind, "hard");
    const TrainConfig swin = parse_config(recipe, "r.toml", {"model.name=\"swin_nano_patch2_window7_28\""});
    for (const auto & st : swin.stages) {
        EXPECT_FALSE(st.variant.qk_norm);
        ASSERT_EQ(st.quantizers.size(), 2u);
        EXPECT_EQ(st.quantizers[1].pattern, "downsample.reduction.weight");
        EXPECT_EQ(st.distill.kind, "distribution");
        EXPECT_EQ(st.distill.rank, 0.0);
    }
    // The resolved config keeps what was applied and no swin tables: it parses back to the same.
    EXPECT_EQ(parse_config(swin.to_toml(), "stored").to_toml(), swin.to_toml());
    try {
        parse_config("[[stage]]\nepochs = 1\n[stage.swin.distil]\nkind = \"hard\"\n", "typo.toml");
        FAIL() << "a misspelt table under [stage.swin] was accepted on a DeiT";
    } catch (const ConfigError & e) {
        EXPECT_NE(std::string(e.what()).find("stage[0].swin.distil"), std::string::npos) << e.what();
    }
}

TEST(Config, ImpossibleValuesAreRefusedUpFront) {
    const std::pair<const char *, const char *> cases[] = {
        {"data.mean=nan", "data.mean values must be numbers in [-16, 16]"},
        {"data.std=1e-320", "data.std values must be numbers in [0.001, 1000]"},
        {"data.std=0", "data.std values"},
        {"model.depth=100000", "model.depth must be in [0, 256]"},
        {"model.embed_dim=-3", "model.embed_dim must be in"},
        {"train.epochs=9223372036854775807", "train.epochs must be in [1, 100000]"},
        {"train.batch_size=0", "train.batch_size must be in"},
        {"train.epoch_scale=inf", "train.epoch_scale must be in (0, 1000]"},
        {"optim.lr=nan", "optim.lr must be a number"},
        {"data.crop_padding=100000", "data.crop_padding must be in"},
    };
    for (const auto & [set, needle] : cases) {
        EXPECT_NE(config_error([&] { parse_config("", "r", {set}); }).find(needle), std::string::npos) << set;
    }
}
