// The torch-free descriptions both halves read: the quantizer table is consistent and is what the
// docs show, the architecture's JSON form round-trips and refuses what it must, the site list has
// every site once.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "spec/architecture.h"
#include "spec/quantizers.h"
#include "spec/sites.h"

using namespace bitvit::spec;

TEST(QuantizerTable, RowsAreConsistent) {
    std::set<std::string> names;
    for (size_t i = 0; i < quantizer_table().size(); ++i) {
        const QuantizerRow & row = quantizer_table()[i];
        EXPECT_EQ(static_cast<size_t>(row.id), i) << row.name;
        EXPECT_TRUE(names.insert(row.name).second) << "duplicate " << row.name;
        EXPECT_NE(row.sites, 0u) << row.name;
        EXPECT_EQ(find_quantizer(row.name), &row);
        EXPECT_EQ(&quantizer_row(row.id), &row);
        const bool weights_only = row.sites == kWeightSite;
        // Weight quantizers deploy through their output (bits, codes), never as parameters.
        if (weights_only) EXPECT_TRUE(row.deployed_params.empty()) << row.name;
        for (const auto & o : row.options) {
            EXPECT_TRUE(o.fallback >= o.lo && o.fallback <= o.hi) << row.name << "." << o.name;
        }
    }
    EXPECT_EQ(find_quantizer("bivit_act"), nullptr);
    EXPECT_STREQ(renamed_quantizer("bivit_act"), "actbi");
}

TEST(QuantizerTable, DocsCarryTheGeneratedTable) {
    std::ifstream in(std::string(BITVIT_SOURCE_DIR) + "/docs/quantization.md");
    std::stringstream text;
    text << in.rdbuf();
    const std::string doc = text.str(), begin = "<!-- quantizer-table:begin -->\n", end = "<!-- quantizer-table:end -->";
    const size_t b = doc.find(begin), e = doc.find(end);
    ASSERT_NE(b, std::string::npos);
    ASSERT_NE(e, std::string::npos);
    EXPECT_EQ(doc.substr(b + begin.size(), e - b - begin.size()), quantizer_table_markdown())
        << "docs/quantization.md's table is stale: regenerate it with `bitvit quantizers --markdown`";
}

TEST(Architecture, JsonRoundTripsAndRefusesWhatItMust) {
    DeitConfig c = deit_config("deit_nano_patch7_28_distilled");
    c.variant.linear_bias = false;
    c.variant.mlp_act = "relu";
    const DeitConfig back = architecture_from_json(architecture_json(c));
    EXPECT_EQ(back.variant, c.variant);
    EXPECT_EQ(back.num_tokens(), c.num_tokens());
    auto refuses = [&](const char * key, nlohmann::json value, const std::string & needle) {
        nlohmann::json j = architecture_json(c);
        if (value.is_discarded()) {
            j.erase(key);
        } else {
            j[key] = value;
        }
        try {
            architecture_from_json(j);
            ADD_FAILURE() << "accepted " << key;
        } catch (const std::invalid_argument & e) {
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        }
    };
    refuses("num_heads", 3, "not divisible");
    refuses("depth", 0, "architecture.depth must be an integer");
    refuses("depth", 7, "architecture.depth is 7 but 'deit_nano_patch7_28_distilled' has 4");
    refuses("mlp_act", "tanh", "mlp_act");
    refuses("mlp_clip", -1.0, "mlp_clip");
    refuses("softmax", "yes", "true or false");
    refuses("extra", 1, "unknown field ('extra')");
    refuses("name", std::string(300, 'x'), "at most 256 characters");
    refuses("img_size", nlohmann::json::value_t::discarded, "lacks 'img_size'");
    // Files of version ≤ 2 have no linear_bias: it was always true.
    nlohmann::json old = architecture_json(deit_config("deit_nano_patch7_28"));
    old.erase("linear_bias");
    EXPECT_TRUE(architecture_from_json(old).variant.linear_bias);
}

TEST(Sites, EverySiteOnceWithItsClassAndChannels) {
    const DeitConfig c = deit_config("deit_nano_patch7_28_distilled");  // D 64, 4 blocks, 2 heads
    const auto sites = deit_sites(c);
    std::set<std::string> names;
    for (const auto & s : sites) EXPECT_TRUE(names.insert(s.name).second) << s.name;
    EXPECT_EQ(sites.size(), 2 + 4 * 12 + 2 + 2u);
    for (const auto & s : sites) {
        if (s.name == "blocks.3.attn.probs") EXPECT_EQ(s.site_class, kAttentionSite);
        if (s.name == "blocks.0.attn.v") EXPECT_EQ(s.channels, 2);
        if (s.name == "blocks.1.mlp.fc2.input") EXPECT_EQ(s.channels, 256);
        if (s.name == "patch_embed.proj.input") EXPECT_EQ(s.channels, 49);
        if (s.name == "head_dist.weight") EXPECT_EQ(s.channels, 10);
    }
}
