#include <gtest/gtest.h>

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
    EXPECT_NE(config_error([] { parse_config("", "r", {"optim.lr=-1"}); }).find("optim.lr must be a positive number"),
              std::string::npos);
    EXPECT_NE(config_error([] { parse_config("", "r", {"optim.optimizer=sgd"}); }).find("optim.optimizer"), std::string::npos);
    EXPECT_NE(config_error([] { parse_config("", "r", {"lr=1"}); }).find("section.key=value"), std::string::npos);
    EXPECT_NE(config_error([] { parse_config("[train\n", "r.toml"); }).find("r.toml:1"), std::string::npos);
    EXPECT_NE(config_error([] { parse_config("", "r", {"data.std=[1,2]"}); }).find("equal length"), std::string::npos);
    EXPECT_NE(config_error([] { load_config_file("/nonexistent.toml"); }).find("/nonexistent.toml"), std::string::npos);
}
