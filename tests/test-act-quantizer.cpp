// The runtime's activation quantizers: each one's encoded operand decodes to the values its training
// counterpart's forward pass gives (written out here from the formulas of docs/quantization.md),
// including the ties (sign(0) = +1, round half to even, thresholds with ≥ or >), and bad parameters are
// rejected with the site's name.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "runtime/quant/act-quantizer.h"

using namespace bitvit::runtime;

namespace {

ActQuantizer make(const std::string & name, std::map<std::string, std::vector<float>> params = {},
                  std::map<std::string, double> options = {}) {
    return ActQuantizer::named(name, std::move(params), std::move(options));
}

// Encodes x (rows × k) and returns the decoded values.
std::vector<float> roundtrip(const ActQuantizer & q, const std::vector<float> & x, int64_t rows, SiteScope scope,
                             int64_t head = 0, float range_max = 0, float range_min = 0) {
    const int64_t k = static_cast<int64_t>(x.size()) / rows;
    return q.encode(x.data(), rows, k, k, scope, head, range_max, range_min).decode();
}

}  // namespace

TEST(ActQuantizer, SignFamilies) {
    const std::vector<float> x = {-2.0f, -0.0f, 0.0f, 0.3f, -0.1f, 5.0f};
    EXPECT_EQ(roundtrip(make("sign"), x, 2, SiteScope::token), (std::vector<float>{-1, 1, 1, 1, -1, 1}));
    // rsign: sign(x + shift[c]) with c the column (3 columns).
    const auto rsign = make("rsign", {{"shift", {1.0f, 0.0f, -0.5f}}});
    EXPECT_EQ(roundtrip(rsign, x, 2, SiteScope::token), (std::vector<float>{-1, 1, -1, 1, -1, 1}));
    // elastic signed: α·sign(x + shift).
    const auto elastic = make("elastic_signed", {{"shift", {0, 0, 0}}, {"alpha", {0.5f}}});
    EXPECT_EQ(roundtrip(elastic, x, 2, SiteScope::token), (std::vector<float>{-0.5f, 0.5f, 0.5f, 0.5f, -0.5f, 0.5f}));
}

TEST(ActQuantizer, ElasticUnsignedRoundsHalfToEven) {
    // α·round(clamp(x/α, 0, 1)) with α = 2: x = 1 gives 0.5, which rounds to 0.
    const auto q = make("elastic_unsigned", {{"shift", {0, 0, 0, 0}}, {"alpha", {2.0f}}});
    EXPECT_EQ(roundtrip(q, {-1.0f, 1.0f, 1.001f, 7.0f}, 1, SiteScope::token), (std::vector<float>{0, 0, 2, 2}));
}

TEST(ActQuantizer, BoolAndSoftmaxAwareThresholds) {
    EXPECT_EQ(roundtrip(make("bool"), {-1.0f, 0.0f, 1e-9f}, 1, SiteScope::per_head), (std::vector<float>{0, 0, 1}));
    // SAB: 1 where p ≥ β·max of the row (β = 0.25): row 0 max 0.8 -> threshold 0.2 (0.2 itself is kept).
    const auto sab = make("sab", {}, {{"beta", 0.25}});
    EXPECT_EQ(roundtrip(sab, {0.8f, 0.2f, 0.0f, 0.1f, 0.1f, 0.05f}, 2, SiteScope::per_head),
              (std::vector<float>{1, 1, 0, 1, 1, 1}));
}

TEST(ActQuantizer, LsqCodesAndZeroPoints) {
    // (round(clamp(x/s + z, qn, qp)) − z)·s with s = 0.5, z = 3, qn = −8, qp = 7: ties go to even.
    const auto q = make("lsq", {{"step", {0.5f}}, {"zero_point", {3.0f}}}, {{"qn", -8}, {"qp", 7}});
    const std::vector<float> x = {0.25f, 0.75f, -10.0f, 10.0f, -1.5f};
    // x/s + z = 3.5 -> 4, 4.5 -> 4, −17 -> −8, 23 -> 7, 0 -> 0; minus z, times s.
    EXPECT_EQ(roundtrip(q, x, 1, SiteScope::token), (std::vector<float>{0.5f, 0.5f, -5.5f, 2.0f, -1.5f}));
    const Operand op = q.encode(x.data(), 1, 5, 5, SiteScope::token, 0);
    EXPECT_EQ(op.kind, Operand::Kind::int8);
    // A per-column step cannot scale rows: the operand falls back to FP32 with the same values.
    const auto per_column = make("lsq", {{"step", {0.5f, 0.5f, 1.0f}}}, {{"qn", -8}, {"qp", 7}});
    const Operand f = per_column.encode(x.data(), 1, 3, 3, SiteScope::token, 0);
    EXPECT_EQ(f.kind, Operand::Kind::f32);
    // x/s = 0.5 -> 0 (tie to even), 1.5 -> 2, −10 -> clamped to −8; times s.
    EXPECT_EQ(f.values, (std::vector<float>{0.0f, 1.0f, -8.0f}));
}

TEST(ActQuantizer, LsqInt8CodesMatchNearbyintOnEveryTieAndNaN) {
    // The int8 path rounds with an add/subtract of 1.5·2^23: the same codes as std::nearbyint (ties to
    // even) over a row long enough to be vectorised with a remainder, ties of both signs, values
    // clamped at both ends, and NaN (code 0).
    const auto q = make("lsq", {{"step", {0.5f}}}, {{"qn", -128}, {"qp", 127}});
    std::vector<float> x;
    for (int i = -140; i <= 140; ++i) x.push_back(0.25f * static_cast<float>(i));  // x/s = i/2: every half
    x.push_back(std::numeric_limits<float>::quiet_NaN());
    x.push_back(1e30f);
    x.push_back(-1e30f);
    const int64_t k = static_cast<int64_t>(x.size());
    const Operand op = q.encode(x.data(), 1, k, k, SiteScope::token, 0);
    ASSERT_EQ(op.kind, Operand::Kind::int8);
    for (int64_t j = 0; j < k; ++j) {
        const float want = std::isnan(x[j]) ? 0.0f : std::nearbyint(std::min(std::max(x[j] / 0.5f, -128.0f), 127.0f));
        EXPECT_EQ(op.codes[j], static_cast<int8_t>(want)) << "x = " << x[j];
    }
}

TEST(ActQuantizer, BiVitActUsesThePerHeadScaleAndZeroPoint) {
    // (sign(x/α + z) − z)·α for head 1: α = 2, z = 1 -> levels 0 and −4.
    const auto q = make("actbi", {{"alpha", {1.0f, 2.0f}}, {"zero_point", {0.0f, 1.0f}}});
    EXPECT_EQ(roundtrip(q, {-3.0f, -2.0f, 0.0f, 5.0f}, 2, SiteScope::per_head, 1), (std::vector<float>{-4, 0, 0, 0}));
}

TEST(ActQuantizer, BiVitActWithPerChannelScalesDecodesToFloats) {
    // Bi-ViT's Swin patch merging: one α and z per input channel, which no row scale can carry.
    // (sign(x/α_j + z_j) − z_j)·α_j with α = (1, 2, 0.5), z = (0, 1, −1).
    const auto q = make("actbi", {{"alpha", {1.0f, 2.0f, 0.5f}}, {"zero_point", {0.0f, 1.0f, -1.0f}}});
    const std::vector<float> x = {-0.5f, -3.0f, 0.6f, 0.0f, 1.0f, 0.4f};
    const Operand op = q.encode(x.data(), 2, 3, 3, SiteScope::token, 0);
    EXPECT_EQ(op.kind, Operand::Kind::f32);
    // x/α + z: −0.5, −0.5, 0.2 | 0, 1.5, −0.2 -> signs −, −, + | +, +, −.
    EXPECT_EQ(op.values, (std::vector<float>{-1.0f, -4.0f, 1.0f, 1.0f, 0.0f, -0.0f}));
}

TEST(ActQuantizer, TokenOperandIsTheKindEncodeGives) {
    // A linear layer prepares its weight once for token_operand(); encode() must then give that kind.
    struct Case {
        ActQuantizer q;
        LayerInputs want;
    };
    const std::vector<Case> cases = {
        {make(""), LayerInputs::f32},
        {make("sign"), LayerInputs::planes},
        {make("rsign", {{"shift", {0.1f, -0.2f, 0.3f, 0.0f}}}), LayerInputs::planes},
        {make("elastic_unsigned", {{"shift", {0, 0, 0, 0}}, {"alpha", {2.0f}}}), LayerInputs::planes},
        {make("lsq", {{"step", {0.5f}}, {"zero_point", {3.0f}}}, {{"qn", -8}, {"qp", 7}}), LayerInputs::int8},
        {make("lsq", {{"step", {0.5f}}}, {{"qn", -8}, {"qp", 255}}), LayerInputs::f32},
        {make("lsq", {{"step", {0.5f, 1, 1, 1}}}, {{"qn", -8}, {"qp", 7}}), LayerInputs::f32},
        {make("actbi", {{"alpha", {2.0f}}, {"zero_point", {1.0f}}}), LayerInputs::planes},
        {make("actbi", {{"alpha", {1, 2, 3, 4}}, {"zero_point", {0, 1, 0, 1}}}), LayerInputs::f32},
    };
    const std::vector<float> x = {-1.5f, 0.25f, 3.0f, -0.0f, 0.7f, -2.0f, 1.0f, 9.0f};
    for (const Case & c : cases) {
        const Operand op = c.q.encode(x.data(), 2, 4, 4, SiteScope::token, 0);
        const Operand::Kind kind = c.want == LayerInputs::f32    ? Operand::Kind::f32
                                   : c.want == LayerInputs::int8 ? Operand::Kind::int8
                                                                 : Operand::Kind::planes;
        EXPECT_EQ(c.q.token_operand(), c.want) << "quantizer '" << c.q.name() << "'";
        EXPECT_EQ(op.kind, kind) << "quantizer '" << c.q.name() << "'";
    }
}

TEST(ActQuantizer, GsbGroupsFollowTheSampleRange) {
    // v̂ = α1·sign(v) + α2·sign(v)·1{beyond 0.7·max/min} + α3·sign(v)·1{beyond 0.9·max/min}.
    const auto v = make("gsb_value", {{"alphas", {1.0f, 0.5f, 0.25f}}});
    EXPECT_EQ(roundtrip(v, {-10.0f, -7.5f, 0.0f, 6.0f, 9.5f}, 1, SiteScope::per_head, 0, 10.0f, -10.0f),
              (std::vector<float>{-1.75f, -1.5f, 1.0f, 1.0f, 1.75f}));
    // Â = α1·round(clamp(p/α1, 0, 1)) + α2·1{p > 0.7·max} + α3·1{p > 0.9·max}, α1 = 0.2.
    const auto a = make("gsb_attention", {{"alphas", {0.2f, 0.5f, 0.25f}}});
    EXPECT_EQ(roundtrip(a, {0.05f, 0.15f, 0.75f, 1.0f}, 1, SiteScope::per_head, 0, 1.0f, 0.0f),
              (std::vector<float>{0.0f, 0.2f, 0.7f, 0.95f}));
}

TEST(ActQuantizer, ValidationNamesTheSiteAndTheProblem) {
    using bitvit::spec::SiteClass;
    auto rejects = [](const std::string & name, std::map<std::string, std::vector<float>> params,
                      std::map<std::string, double> options, int64_t channels, const std::string & needle,
                      SiteClass cls = bitvit::spec::kHeadSite) {
        try {
            make(name, std::move(params), std::move(options)).validate("blocks.2.attn.q", cls, channels);
            FAIL() << "accepted: " << needle;
        } catch (const std::invalid_argument & e) {
            if (name != "sign_magic" && name != "pws") {
                EXPECT_NE(std::string(e.what()).find("blocks.2.attn.q"), std::string::npos) << e.what();
            }
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        }
    };
    rejects("sign_magic", {}, {}, 3, "unknown activation quantizer");
    rejects("pws", {}, {}, 3, "quantizes weights");
    rejects("sab", {}, {{"beta", 0.25}}, 3, "cannot quantize q/k/v");
    rejects("gsb_value", {{"alphas", {1, 1, 1}}}, {}, 3, "cannot quantize linear inputs", bitvit::spec::kTokenSite);
    rejects("rsign", {}, {}, 3, "needs parameter 'shift'");
    rejects("rsign", {{"shift", {0, 0}}}, {}, 3, "has 2 values");
    rejects("rsign", {{"shift", {0, 0, 0}}, {"bogus", {1}}}, {}, 3, "no parameter 'bogus'");
    rejects("elastic_signed", {{"shift", {0, 0, 0}}, {"alpha", {std::nanf("")}}}, {}, 3, "non-finite");
    rejects("elastic_signed", {{"shift", {0, 0, 0}}, {"alpha", {-1.0f}}}, {}, 3, "positive");
    rejects("sab", {}, {{"beta", 1.5}}, 3, "beta", bitvit::spec::kAttentionSite);
    rejects("sab", {}, {}, 3, "needs option 'beta'", bitvit::spec::kAttentionSite);
    rejects("sab", {}, {{"beta", 0.25}, {"gamma", 1}}, 3, "no option 'gamma'", bitvit::spec::kAttentionSite);
    rejects("lsq", {{"step", {1.0f}}}, {{"qn", 5}, {"qp", 2}}, 3, "qn < qp");
    rejects("lsq", {{"step", {1.0f}}}, {{"qn", -8.5}, {"qp", 7}}, 3, "out of range");
    rejects("actbi", {{"alpha", {1, 1, 1}}, {"zero_point", {0.5f, 0, 0}}}, {}, 3, "integers");
    rejects("", {{"alpha", {1, 1, 1}}}, {}, 3, "full-precision site has quantizer parameters");
    EXPECT_NO_THROW(make("gsb_value", {{"alphas", {1, 1, 1}}}).validate("s", bitvit::spec::kHeadSite, 3));
}
