// DeiT: output shapes, timm parameter names, the site mechanism, distilled eval averaging.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>

#include <map>

#include "spec/sites.h"
#include "train/checkpoint.h"
#include "train/deit.h"
#include "train/quant/quantizers.h"

using namespace bitvit;

namespace {

// A site transform that counts its calls and scales its input, so a test can see it was applied.
class ScaleBy : public SiteTransformImpl {
  public:
    explicit ScaleBy(double factor) : factor_(factor) {}
    torch::Tensor forward(const torch::Tensor & x) override {
        ++calls;
        last_shape = x.sizes().vec();
        last_input = x.detach().clone();
        return x * factor_;
    }
    int calls = 0;
    std::vector<int64_t> last_shape;
    torch::Tensor last_input;

  private:
    double factor_;
};

std::set<std::string> parameter_names(torch::nn::Module & m) {
    std::set<std::string> names;
    for (const auto & p : m.named_parameters()) names.insert(p.key());
    return names;
}

}  // namespace

TEST(Deit, TimmParameterNamesAndCount) {
    Deit model(deit_config("deit_tiny_patch16_224"));
    const auto names = parameter_names(*model);
    for (const char * n :
         {"patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "pos_embed", "blocks.0.norm1.weight",
          "blocks.0.norm1.bias", "blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias", "blocks.0.attn.proj.weight",
          "blocks.0.attn.proj.bias", "blocks.0.norm2.weight", "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc1.bias",
          "blocks.11.mlp.fc2.weight", "blocks.11.mlp.fc2.bias", "norm.weight", "norm.bias", "head.weight", "head.bias"}) {
        EXPECT_TRUE(names.count(n)) << n;
    }
    EXPECT_FALSE(names.count("dist_token"));
    // timm: deit_tiny_patch16_224 has 5,717,416 parameters.
    EXPECT_EQ(count_parameters(*model), 5717416);
    // The closed form (used to size a model before allocating it) agrees, with and without
    // distillation token and linear biases.
    for (const char * name : {"deit_tiny_patch16_224", "deit_nano_patch7_28_distilled", "deit_micro_patch4_28"}) {
        for (bool bias : {true, false}) {
            DeitConfig c = deit_config(name);
            c.variant.linear_bias = bias;
            Deit m(c);
            EXPECT_EQ(c.parameter_count(), count_parameters(*m)) << name << (bias ? "" : " without linear biases");
        }
    }
    EXPECT_EQ(model->pos_embed.sizes(), (std::vector<int64_t>{1, 197, 192}));
}

TEST(Deit, DistilledHasDistTokenAndAveragesHeadsAtEval) {
    Deit model(deit_config("deit_nano_patch7_28_distilled"));
    const auto names = parameter_names(*model);
    EXPECT_TRUE(names.count("dist_token"));
    EXPECT_TRUE(names.count("head_dist.weight"));
    EXPECT_EQ(model->pos_embed.size(1), 16 + 2);
    model->eval();
    torch::NoGradGuard no_grad;
    auto x = torch::randn({3, 1, 28, 28});
    auto heads = model->forward_heads(x);
    EXPECT_EQ(heads.logits.sizes(), (std::vector<int64_t>{3, 10}));
    EXPECT_EQ(heads.dist_logits.sizes(), (std::vector<int64_t>{3, 10}));
    EXPECT_TRUE(torch::allclose(model->forward(x), (heads.logits + heads.dist_logits) / 2));
}

TEST(Deit, OutputShapesAndInputValidation) {
    Deit model(deit_config("deit_micro_patch4_28"));
    auto y = model->forward(torch::randn({2, 1, 28, 28}));
    EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 10}));
    EXPECT_EQ(model->forward_features(torch::randn({2, 1, 28, 28})).sizes(), (std::vector<int64_t>{2, 50, 96}));
    EXPECT_THROW(model->forward(torch::randn({2, 3, 28, 28})), c10::Error);
    EXPECT_THROW(model->forward(torch::randn({2, 1, 32, 32})), c10::Error);
}

TEST(Deit, DropPathIsIdentityAtEvalAndRandomInTraining) {
    auto config = deit_config("deit_nano_patch7_28");
    config.drop_path = 0.5;
    Deit model(config);
    auto x = torch::randn({8, 1, 28, 28});
    model->eval();
    EXPECT_TRUE(torch::equal(model->forward(x), model->forward(x)));
    model->train();
    EXPECT_FALSE(torch::equal(model->forward(x), model->forward(x)));
}

TEST(Deit, ConfigValidation) {
    EXPECT_THROW(deit_config("deit_huge"), std::invalid_argument);
    auto c = deit_config("deit_nano_patch7_28");
    c.patch_size = 5;
    EXPECT_THROW(Deit{c}, std::invalid_argument);
    c = deit_config("deit_nano_patch7_28");
    c.num_heads = 3;
    EXPECT_THROW(Deit{c}, std::invalid_argument);
}

TEST(Deit, SitesAreNamedAndInstalledTransformsApply) {
    Deit model(deit_config("deit_nano_patch7_28"));
    const auto sites = model->site_names();
    const std::set<std::string> all(sites.begin(), sites.end());
    for (const char * s : {"blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.input", "blocks.0.attn.q", "blocks.0.attn.k",
                           "blocks.0.attn.v", "blocks.0.attn.probs", "blocks.0.attn.proj.weight",
                           "blocks.0.attn.proj.input", "blocks.3.mlp.fc1.weight", "blocks.3.mlp.fc1.input",
                           "blocks.3.mlp.fc2.weight", "blocks.3.mlp.fc2.input", "patch_embed.proj.weight",
                           "patch_embed.proj.input", "head.weight", "head.input"}) {
        EXPECT_TRUE(all.count(s)) << s;
    }
    EXPECT_EQ(sites.size(), 4u * 12 + 4);
    model->eval();
    torch::NoGradGuard no_grad;
    auto x = torch::randn({2, 1, 28, 28});
    const auto before = model->forward(x);

    auto probs = std::make_shared<ScaleBy>(1.0);
    model->install("blocks.1.attn.probs", probs);
    EXPECT_TRUE(torch::equal(model->forward(x), before));  // identity transform changes nothing
    EXPECT_EQ(probs->calls, 1);
    EXPECT_EQ(probs->last_shape, (std::vector<int64_t>{2, 2, 17, 17}));  // [B, H, N, N]

    auto fc2_weight = std::make_shared<ScaleBy>(0.0);
    model->install("blocks.3.mlp.fc2.weight", fc2_weight);
    EXPECT_FALSE(torch::allclose(model->forward(x), before));  // a zeroed weight changes the output
    EXPECT_EQ(fc2_weight->last_shape, (std::vector<int64_t>{64, 256}));

    // Replacing a site's transform swaps it; its parameters join the model's under a stable name.
    model->install("blocks.3.mlp.fc2.weight", std::make_shared<ScaleBy>(1.0));
    EXPECT_TRUE(torch::equal(model->forward(x), before));
    bool found = false;
    for (const auto & m : model->named_modules()) found |= m.key() == "blocks.3.mlp.fc2.weight_quantizer";
    EXPECT_TRUE(found);

    EXPECT_THROW(model->install("blocks.9.attn.q", probs), std::invalid_argument);
    EXPECT_THROW(model->install("blocks.0.attn.qq", probs), std::invalid_argument);
}

// A transform at patch_embed.proj.input sees each patch as a token, in the conv weight's (channel,
// row, column) order, and the im2col product it switches to computes what the convolution computes.
TEST(Deit, PatchEmbeddingInputSiteSeesPatchesAsTokens) {
    Deit model(deit_config("deit_nano_patch7_28"));
    model->eval();
    torch::NoGradGuard no_grad;
    const auto x = torch::randn({2, 1, 28, 28});
    const auto before = model->forward(x);
    auto patches = std::make_shared<ScaleBy>(1.0);
    model->install("patch_embed.proj.input", patches);
    EXPECT_TRUE(torch::allclose(model->forward(x), before, 1e-5, 1e-5));
    ASSERT_EQ(patches->last_shape, (std::vector<int64_t>{2, 16, 49}));  // [B, 4·4 patches, 1·7·7]
    // Patch 6 (grid row 1, column 2) of image 1 is pixels [7, 14) × [14, 21), row by row.
    const auto expected = x[1][0].slice(0, 7, 14).slice(1, 14, 21).flatten();
    EXPECT_TRUE(torch::equal(patches->last_input[1][6], expected));
    model->install("patch_embed.proj.input", std::make_shared<ScaleBy>(0.0));  // zero patches: bias only
    const auto embedded = model->patch_embed->forward(x);
    EXPECT_TRUE(torch::equal(embedded[0][5], model->patch_embed->proj->bias));
}

TEST(Deit, BlockVariantsAddTheirParametersAndChangeTheForward) {
    auto config = deit_config("deit_nano_patch7_28");
    config.variant.qk_norm = true;
    config.variant.qkv_shift = true;
    config.variant.attn_bias = true;
    config.variant.softmax = false;
    config.variant.mlp_act = "relu";
    config.variant.mlp_clip = 10;
    Deit model(config);
    const auto names = parameter_names(*model);
    for (const char * n : {"blocks.0.attn.norm_q.weight", "blocks.0.attn.norm_k.bias", "blocks.0.attn.shift_q",
                           "blocks.0.attn.shift_v", "blocks.0.attn.attn_bias"}) {
        EXPECT_TRUE(names.count(n)) << n;
        EXPECT_TRUE(is_method_tensor(n)) << n;
    }
    EXPECT_FALSE(is_method_tensor("blocks.0.attn.qkv.weight"));
    EXPECT_EQ(model->blocks[0]->as<Block>()->attn->attn_bias.sizes(), (std::vector<int64_t>{2, 17, 17}));
    // Without softmax the probs site sees raw scores: rows no longer sum to 1.
    auto probe = std::make_shared<ScaleBy>(1.0);
    model->install("blocks.0.attn.probs", probe);
    model->eval();
    torch::NoGradGuard no_grad;
    model->forward(torch::randn({2, 1, 28, 28}));
    EXPECT_EQ(probe->calls, 1);
    Deit plain(deit_config("deit_nano_patch7_28"));
    auto plain_probe = std::make_shared<ScaleBy>(1.0);
    plain->install("blocks.0.attn.probs", plain_probe);
    plain->eval();
    plain->forward(torch::randn({2, 1, 28, 28}));
    EXPECT_EQ(plain_probe->last_shape, probe->last_shape);
    const auto ones = torch::ones({2, 2, 17});
    EXPECT_TRUE(torch::allclose(plain_probe->last_input.sum(-1), ones, 1e-5, 1e-5));
    EXPECT_FALSE(torch::allclose(probe->last_input.sum(-1), ones, 1e-2, 1e-2));
    auto c = deit_config("deit_nano_patch7_28");
    c.variant.mlp_act = "tanh";
    EXPECT_THROW(Deit{c}, std::invalid_argument);
}

TEST(Deit, RpreluValuesGradientsAndParameters) {
    // y = (x + γ) if x + γ ≥ 0 else β·(x + γ), then + ζ; per channel of the last dimension.
    const auto x = torch::tensor({{-2.0f, 0.5f, -0.25f}}).requires_grad_(true);
    const auto shift = torch::tensor({1.0f, -1.0f, 0.25f}).requires_grad_(true);
    const auto slope = torch::tensor({0.25f, 0.5f, 0.1f}).requires_grad_(true);
    const auto bias = torch::tensor({0.0f, 1.0f, -1.0f}).requires_grad_(true);
    const auto y = rprelu(x, shift, slope, bias);
    // x + γ = −1, −0.5, 0 -> −0.25, −0.25 + 1, 0 − 1.
    EXPECT_TRUE(torch::allclose(y, torch::tensor({{-0.25f, 0.75f, -1.0f}})));
    y.sum().backward();
    // dy/dx = dy/dγ = 1 on the non-negative side, β below; dy/dβ = x + γ below, 0 above; dy/dζ = 1.
    EXPECT_TRUE(torch::allclose(x.grad(), torch::tensor({{0.25f, 0.5f, 1.0f}})));
    EXPECT_TRUE(torch::allclose(shift.grad(), torch::tensor({0.25f, 0.5f, 1.0f})));
    EXPECT_TRUE(torch::allclose(slope.grad(), torch::tensor({-1.0f, -0.5f, 0.0f})));
    EXPECT_TRUE(torch::allclose(bias.grad(), torch::ones({3})));

    auto config = deit_config("deit_nano_patch7_28");
    config.variant.mlp_act = "rprelu";
    Deit model(config);
    const auto names = parameter_names(*model);
    for (const char * n : {"blocks.0.mlp.act_shift", "blocks.0.mlp.act_slope", "blocks.3.mlp.act_bias"}) {
        EXPECT_TRUE(names.count(n)) << n;
        EXPECT_TRUE(is_method_tensor(n)) << n;  // a model without them (the FP teacher) still loads into it
    }
    EXPECT_TRUE(torch::allclose(model->blocks[0]->as<Block>()->mlp->act_slope, torch::full({256}, 0.25)));
}

// Training's modules and the torch-free site list (spec/sites.h, which the runtime validates packed
// files against) name the same sites with the same classes and channel counts.
TEST(Deit, SitesAreTheSpecsSites) {
    for (const char * name : {"deit_nano_patch7_28", "deit_micro_patch4_28_distilled"}) {
        Deit model(deit_config(name));
        std::map<std::string, std::pair<bitvit::spec::SiteClass, int64_t>> training, spec;
        for (const auto & site : model->site_names()) {
            const SiteInfo info = model->site_info(site);
            training[site] = {quant::site_class(info.kind), info.channels};
        }
        for (const auto & s : bitvit::spec::deit_sites(model->config())) spec[s.name] = {s.site_class, s.channels};
        EXPECT_EQ(training, spec) << name;
    }
}

TEST(Deit, AModelTooLargeForThisMachineIsRefusedBeforeAllocation) {
    ModelSection m;
    m.name = "deit_base_patch16_224";
    m.embed_dim = 16384;
    m.depth = 256;
    m.num_heads = 128;  // ~825 G parameters: 13 TB to train
    try {
        resolve_model_config(m, DataShape{10, 3, 224});
        FAIL() << "accepted a model that cannot fit";
    } catch (const std::invalid_argument & e) {
        EXPECT_NE(std::string(e.what()).find("this machine has"), std::string::npos) << e.what();
    }
}
