// Quantizers: forward values and gradients (inputs and every learnable parameter) against the
// closed-form formulas of methods.md, on small tensors whose expected values are derived here by
// hand or by plain loops; finite differences where the function is smooth in the parameter.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "runtime/kernels/bgemm.h"
#include "train/quant/quantizers.h"
#include "train/quant/ste.h"

using namespace bitvit;
using namespace bitvit::quant;
using torch::Tensor;

namespace {

Tensor t(std::initializer_list<float> v) { return torch::tensor(std::vector<float>(v)); }

void expect_close(const Tensor & got, const Tensor & want, double tol = 1e-5) {
    ASSERT_EQ(got.sizes(), want.sizes());
    EXPECT_TRUE(torch::allclose(got, want, tol, tol)) << "got\n" << got << "\nwant\n" << want;
}

// Forward value and d(Σ out·g)/dx of fn at x.
std::pair<Tensor, Tensor> value_and_grad(const Tensor & x0, const Tensor & g, const std::function<Tensor(const Tensor &)> & fn) {
    Tensor x = x0.clone().requires_grad_(true);
    Tensor y = fn(x);
    (y * g).sum().backward();
    return {y.detach(), x.grad()};
}

SiteInfo weight_site(int64_t out) { return {SiteKind::weight, out}; }

}  // namespace

TEST(Sign, ZeroIsPlusOneAndMatchesRuntimePacking) {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const Tensor x = t({-2.0f, -0.0f, 0.0f, 0.5f, nan, -1e-20f});
    expect_close(sign_pm1(x), t({-1, 1, 1, 1, 1, -1}));
    // Training and the runtime's bit packing agree value by value (the convention is defined once).
    uint64_t bits = 0;
    runtime::pack_b1_rows_ref(x.data_ptr<float>(), 1, 6, 6, &bits);
    const Tensor s = sign_pm1(x);
    for (int i = 0; i < 6; ++i) EXPECT_EQ(((bits >> i) & 1) != 0, s[i].item<float>() < 0) << i;
}

TEST(Sign, ClippedApproxAndIdentityGradients) {
    const Tensor x = t({-1.5f, -1.0f, -0.5f, 0.0f, 0.25f, 1.0f, 1.5f});
    const Tensor g = t({1, 2, 3, 4, 5, 6, 7});
    auto [y, dx] = value_and_grad(x, g, sign_clipped);
    expect_close(y, t({-1, -1, -1, 1, 1, 1, 1}));
    expect_close(dx, t({0, 0, 3, 4, 5, 0, 0}));  // g·1{|x| < 1}
    auto [ya, dxa] = value_and_grad(x, g, sign_approx);
    expect_close(ya, y);
    expect_close(dxa, t({0, 0, 3 * 1.0f, 4 * 2.0f, 5 * 1.5f, 0, 0}));  // g·(2 − 2|x|) inside
    auto [yi, dxi] = value_and_grad(x, g, sign_identity);
    expect_close(yi, y);
    expect_close(dxi, g);
}

TEST(Sign, BoolForAttentionScores) {
    const Tensor x = t({-2.0f, -0.5f, 0.0f, 0.5f, 3.0f});
    auto [y, dx] = value_and_grad(x, t({1, 2, 3, 4, 5}), bool_clipped);
    expect_close(y, t({0, 0, 0, 1, 1}));
    expect_close(dx, t({0, 2, 3, 4, 0}));
}

TEST(Lsq, ValuesAndGradientsOfInputStepAndZeroPoint) {
    const Tensor x0 = t({0.3f, -1.2f, 2.6f, 10.0f});
    Tensor x = x0.clone().requires_grad_(true);
    Tensor s = torch::full({1}, 0.5).requires_grad_(true);
    // x/s = 0.6, −2.4, 5.2, 20 → clamp to [−4, 3] → round: 1, −2, 3, 3.
    Tensor y = lsq(x, s, Tensor(), -4, 3);
    expect_close(y.detach(), t({0.5f, -1.0f, 1.5f, 1.5f}));
    y.sum().backward();
    expect_close(x.grad(), t({1, 1, 0, 0}));
    // ds = Σ (round(u) − u inside, Qp above) · 1/sqrt(numel·Qp) = (0.4 + 0.4 + 3 + 3)/sqrt(12).
    expect_close(s.grad(), torch::full({1}, 6.8 / std::sqrt(12.0)));

    x = x0.clone().requires_grad_(true);
    s = torch::full({1}, 0.5).requires_grad_(true);
    Tensor z = torch::full({1}, 0.6).requires_grad_(true);  // rounds to 1
    // u + z = 1.6, −1.4, 6.2, 21 → clamp → round: 2, −1, 3, 3; minus z: 1, −2, 2, 2; times s.
    y = lsq(x, s, z, -4, 3);
    expect_close(y.detach(), t({0.5f, -1.0f, 1.0f, 1.0f}));
    y.sum().backward();
    // dz: 0 where the clamp passes (z cancels), −s where it saturates; scaled by 1/sqrt(12).
    expect_close(z.grad(), torch::full({1}, -1.0 / std::sqrt(12.0)));
}

TEST(Elastic, SignedBitAndGsbGradients) {
    const Tensor x0 = t({-2.0f, -0.5f, 0.3f, 1.5f});
    const Tensor g = t({1, 2, 3, 4});
    for (auto mode : {ElasticGradient::bit, ElasticGradient::gsb}) {
        Tensor x = x0.clone().requires_grad_(true);
        Tensor a = torch::full({1}, 1.0).requires_grad_(true);
        Tensor y = elastic_sign(x, a, mode);
        expect_close(y.detach(), t({-1, -1, 1, 1}));
        (y * g).sum().backward();
        expect_close(x.grad(), t({0, 2, 3, 0}));
        // BiT: Σ sign·g / sqrt(4) = (−1 − 2 + 3 + 4)/2.  GSB: Σ (sign − x·1{|x|≤1})·g / 2
        //   = (−1 + (−1 + 0.5)·2 + (1 − 0.3)·3 + 4)/2.
        const double want = mode == ElasticGradient::bit ? 2.0 : (-1 - 1 + 2.1 + 4) / 2.0;
        EXPECT_NEAR(a.grad().item<double>(), want, 1e-5);
    }
}

TEST(Elastic, UnsignedLevelsAndLsqGradient) {
    Tensor x = t({-0.5f, 0.2f, 1.2f, 3.0f}).requires_grad_(true);
    Tensor a = torch::full({1}, 2.0).requires_grad_(true);
    Tensor y = elastic_unsigned(x, a);  // u = −0.25, 0.1, 0.6, 1.5
    expect_close(y.detach(), t({0, 0, 2, 2}));
    y.sum().backward();
    expect_close(x.grad(), t({0, 1, 1, 0}));
    EXPECT_NEAR(a.grad().item<double>(), (-0.1 + 0.4 + 1.0) / 2.0, 1e-5);  // Qn = 0, Qp = 1, 1/sqrt(4)
}

TEST(Ternary, TwnLayerAndChannelWise) {
    const Tensor w0 = torch::tensor({{1.0f, -0.1f, 0.5f, -2.0f}, {0.2f, 0.2f, -0.2f, 0.05f}});
    // Row 0: Δ = 0.7·0.9 = 0.63, kept |1|, |−2| → α = 1.5. Row 1: Δ = 0.7·0.1625, kept 0.2 ×3 → α = 0.2.
    expect_close(ternary_twn(w0, true), torch::tensor({{1.5f, 0.0f, 0.0f, -1.5f}, {0.2f, 0.2f, -0.2f, 0.0f}}));
    // Whole tensor: mean|W| = 0.53125, Δ = 0.371875; kept 1, 0.5, −2 → α = 3.5/3.
    const float a = 3.5f / 3;
    expect_close(ternary_twn(w0, false), torch::tensor({{a, 0.0f, a, -a}, {0.0f, 0.0f, 0.0f, 0.0f}}));
    const Tensor g = torch::arange(8, torch::kFloat).view({2, 4});
    auto [y, dw] = value_and_grad(w0, g, [](const Tensor & w) { return ternary_twn(w, true); });
    expect_close(dw, g);  // identity STE
}

TEST(Sab, RowThresholdAndGradientIntoProbabilities) {
    const Tensor p = torch::tensor({{0.5f, 0.2f, 0.1f, 0.2f}, {0.05f, 0.9f, 0.02f, 0.03f}});
    const Tensor g = torch::arange(8, torch::kFloat).view({2, 4});
    auto [y, dp] = value_and_grad(p, g, [](const Tensor & x) { return softmax_aware_binarize(x, 0.25); });
    // Thresholds 0.125 and 0.225.
    expect_close(y, torch::tensor({{1.0f, 1.0f, 0.0f, 1.0f}, {0.0f, 1.0f, 0.0f, 0.0f}}));
    expect_close(dp, g);
}

TEST(StraightThrough, ForwardValuesAreExactlyTheQuantizedValues) {
    // x + (q − x).detach() gives q only up to rounding; a deployed model computes q exactly, so every
    // STE must return q bit for bit (a later sign() of an exact 0 depends on it).
    torch::manual_seed(0);
    const Tensor x = torch::rand({64, 33}).requires_grad_(true);
    const Tensor binary = (x >= 0.25 * std::get<0>(x.max(-1, true))).to(torch::kFloat);
    EXPECT_TRUE(torch::equal(softmax_aware_binarize(x, 0.25), binary));
    EXPECT_TRUE(torch::equal(sign_identity(x - 0.5), sign_pm1(x - 0.5)));
    EXPECT_TRUE(torch::equal(round_pass(x * 7), (x * 7).round()));
    EXPECT_TRUE(torch::equal(grad_scale(x, 0.37), x));
    const Tensor w = torch::randn({8, 16}).requires_grad_(true);
    const Tensor ternary = ternary_twn(w, true);
    EXPECT_TRUE(torch::equal(ternary.abs(), std::get<0>(ternary.abs().max(1, true)).expand_as(ternary) * (ternary != 0)));
    const auto bwn = make_quantizer({"bwn", {}}, weight_site(8));
    const Tensor wb = bwn->forward(w);
    EXPECT_TRUE(torch::equal(wb.abs(), torch::full_like(wb, wb.abs().max().item<float>())));
}

TEST(QLinear, CodesFirstProductHasTheGradientsOfThePlainProduct) {
    // QLinear multiplies binary codes first and scales afterwards (the runtime's order); values and
    // every gradient must equal those of F::linear on the quantized tensors.
    torch::manual_seed(3);
    for (const char * input : {"sign", "elastic_signed", "elastic_unsigned", "rsign"}) {
        QLinear layer(40, 24, true);
        layer->sites.install("weight", make_quantizer({"pws", {}}, {SiteKind::weight, 24}));
        layer->sites.install("input", make_quantizer({input, {}}, {SiteKind::token_activation, 40}));
        const Tensor x = torch::randn({3, 5, 40}).requires_grad_(true);
        layer->forward(x);  // first-batch initialisation
        const Tensor y = layer->forward(x);
        const Tensor g = torch::randn_like(y);
        std::vector<Tensor> inputs = {x};
        for (const auto & p : layer->parameters()) inputs.push_back(p);  // weight, bias, PWS scale, α, shifts
        const auto grads = torch::autograd::grad({(y * g).sum()}, inputs, {}, true, false, true);
        const Tensor plain = torch::nn::functional::linear(layer->sites.apply("input", x), layer->sites.apply("weight", layer->weight), layer->bias);
        const auto plain_grads = torch::autograd::grad({(plain * g).sum()}, inputs, {}, false, false, true);
        expect_close(y.detach(), plain.detach(), 1e-5);
        ASSERT_GE(grads.size(), 4u);  // x, weight, bias, PWS scale (+ the input quantizer's)
        for (size_t i = 0; i < grads.size(); ++i) {
            ASSERT_EQ(grads[i].defined(), plain_grads[i].defined()) << input << " gradient " << i;
            if (grads[i].defined()) expect_close(grads[i], plain_grads[i], 1e-4);
        }
    }
}

TEST(SiteMatmul, ActBiCodesSumToExactZerosWithThePlainGradients) {
    // Bi-ViT's ±1 attention map times ±1 values over 50 tokens sums to exactly 0 where the signs
    // balance; the runtime's popcount gives 0 there and a later sign() gives +1. The product on codes
    // must give 0 too (the scaled float sum need not), with torch::matmul's values and gradients.
    torch::manual_seed(5);
    const SiteInfo heads{SiteKind::head_activation, 2};
    auto probs_q = make_quantizer({"bivit_act", {}}, heads), v_q = make_quantizer({"bivit_act", {}}, heads);
    const int64_t N = 50, d = 6;
    Tensor probs = torch::softmax(torch::randn({1, 2, N, N}), -1);
    // v: column j of head h has 25 + j positive entries and 25 − j negative ones (column 0 balances).
    Tensor v = torch::empty({1, 2, N, d});
    for (int64_t j = 0; j < d; ++j) {
        const Tensor signs = torch::cat({torch::ones({25 + j}), -torch::ones({25 - j})});
        v.select(3, j).copy_(signs * (0.5 + torch::rand({N})));
    }
    probs_q->forward(probs);  // first-batch initialisation
    v_q->forward(v);
    {
        torch::NoGradGuard no_grad;
        for (auto & p : probs_q->named_parameters()) p.value().copy_(p.key() == "alpha" ? t({0.1f, 0.7f}) : torch::zeros({2}));
        for (auto & p : v_q->named_parameters()) p.value().copy_(p.key() == "alpha" ? t({0.3f, 0.9f}) : torch::zeros({2}));
    }
    const Tensor pr = probs.clone().requires_grad_(true), vr = v.clone().requires_grad_(true);
    const Tensor pq = probs_q->forward(pr), vq = v_q->forward(vr);
    const Tensor out = site_matmul(pq, probs_q, vq, v_q);  // [1, 2, N, d]
    const Tensor plain = torch::matmul(pq, vq);
    // z = 0: every probability codes to +1, so each output is α_p·α_v·(2j) in column j.
    const float alpha_probs[] = {0.1f, 0.7f}, alpha_v[] = {0.3f, 0.9f};
    for (int64_t h = 0; h < 2; ++h) {
        const double ap = alpha_probs[h], av = alpha_v[h];
        for (int64_t j = 0; j < d; ++j) {
            const Tensor col = out[0][h].select(1, j);
            if (j == 0) EXPECT_TRUE(torch::equal(col, torch::zeros({N}))) << "head " << h << ": " << col.slice(0, 0, 4);
            EXPECT_NEAR(col[0].item<double>(), ap * av * 2 * j, 1e-5);
        }
    }
    expect_close(out.detach(), plain.detach(), 1e-5);
    const Tensor g = torch::randn_like(out);
    std::vector<Tensor> inputs = {pr, vr};
    for (const auto & q : {probs_q, v_q}) for (const auto & p : q->parameters()) inputs.push_back(p);
    const auto grads = torch::autograd::grad({(out * g).sum()}, inputs, {}, true, false, true);
    const auto plain_grads = torch::autograd::grad({(plain * g).sum()}, inputs, {}, false, false, true);
    for (size_t i = 0; i < grads.size(); ++i) {
        ASSERT_EQ(grads[i].defined(), plain_grads[i].defined()) << "gradient " << i;
        if (grads[i].defined()) expect_close(grads[i], plain_grads[i], 1e-4);
    }
}

TEST(Gsb, EvaluationThresholdsArePerSample) {
    // In training the bands use the batch's max/min (as the reference); at evaluation each sample's
    // own, so a prediction does not depend on the other images in its batch.
    torch::manual_seed(1);
    const SiteInfo head{SiteKind::head_activation, 2};
    for (const char * name : {"gsb_value", "gsb_attention"}) {
        auto q = make_quantizer({name, {}}, head);
        Tensor x = torch::rand({3, 2, 5, 5});
        x[1] = x[1] * 10;  // sample 1 sets the batch-wide max
        q->forward(x);  // initialisation
        q->eval();
        const Tensor alone = q->forward(x.slice(0, 0, 1));
        const Tensor in_batch = q->forward(x).slice(0, 0, 1);
        EXPECT_TRUE(torch::equal(alone, in_batch)) << name;
        q->train();
        EXPECT_FALSE(torch::equal(q->forward(x.slice(0, 0, 1)), q->forward(x).slice(0, 0, 1))) << name;
    }
}

TEST(Gsb, ValueForwardAndGradientsMatchLoops) {
    const Tensor v0 = t({-1.0f, -0.8f, -0.2f, 0.1f, 0.5f, 0.75f, 0.95f, 1.0f});
    const Tensor a0 = t({0.3f, 0.2f, 0.1f});
    const Tensor g = t({1, -1, 2, -2, 3, -3, 0.5, 4});
    Tensor v = v0.clone().requires_grad_(true), a = a0.clone().requires_grad_(true);
    Tensor y = gsb_value(v, a);
    (y * g).sum().backward();
    // Independent loop over the §5.3 definitions (max 1, min −1: band 1 |v| > 0.7, band 2 |v| > 0.9).
    const float al[3] = {0.3f, 0.2f, 0.1f};
    std::vector<float> want_y, want_dv;
    double da[3] = {0, 0, 0}, count[3] = {8, 0, 0};
    for (int i = 0; i < 8; ++i) {
        const float x = v0[i].item<float>();
        const bool in[3] = {true, x > 0.7f || x < -0.7f, x > 0.9f || x < -0.9f};
        const float s = x < 0 ? -1.0f : 1.0f;
        float yi = 0, dvi = 0;
        for (int k = 0; k < 3; ++k) {
            const float masked = in[k] ? x : 0.0f;
            const float u = masked / al[k];
            yi += in[k] ? al[k] * s : 0.0f;
            dvi += std::fabs(u) <= 1 ? g[i].item<float>() : 0.0f;
            da[k] += ((in[k] ? s : 0.0f) - (std::fabs(u) <= 1 ? u : 0.0f)) * g[i].item<float>();
            if (k > 0 && in[k]) count[k] += 1;
        }
        want_y.push_back(yi);
        want_dv.push_back(dvi);
    }
    expect_close(y.detach(), torch::tensor(want_y));
    expect_close(v.grad(), torch::tensor(want_dv));
    for (int k = 0; k < 3; ++k) EXPECT_NEAR(a.grad()[k].item<double>(), da[k] / std::sqrt(count[k]), 1e-5) << k;
}

TEST(Gsb, AttentionForwardGradientsAndFiniteDifference) {
    const Tensor p0 = t({0.01f, 0.05f, 0.3f, 0.75f, 0.95f, 1.0f});
    const Tensor a0 = t({0.1f, 0.2f, 0.3f});
    const Tensor g = t({1, 2, 3, 4, 5, 6});
    Tensor p = p0.clone().requires_grad_(true), a = a0.clone().requires_grad_(true);
    Tensor y = gsb_attention(p, a);
    (y * g).sum().backward();
    // u = p/0.1 = 0.1, 0.5, 3, 7.5, 9.5, 10; round(clamp) = 0, 1 (0.5 rounds to even: 0), 1, 1, 1, 1.
    // M1 = p > 0.7: last three; M2 = p > 0.9: last two.
    const Tensor want = t({0.0f, 0.0f, 0.1f, 0.1f + 0.2f, 0.1f + 0.2f + 0.3f, 0.1f + 0.2f + 0.3f});
    expect_close(y.detach(), want);
    // dP = g·1{0 ≤ u ≤ 1} + g·α2·M1 + g·α3·M2.
    expect_close(p.grad(), t({1, 2, 0, 4 * 0.2f, 5 * 0.5f, 6 * 0.5f}));
    // dα1 = Σ (1{u > 1} + 1{0 ≤ u ≤ 1}(round u − u))·g / sqrt(6) = (−0.1 − 1.0 + 3 + 4 + 5 + 6)/sqrt(6).
    EXPECT_NEAR(a.grad()[0].item<double>(), (-0.1 - 1.0 + 18) / std::sqrt(6.0), 1e-5);
    // The output is linear in α2 and α3, so central differences give Σ M·g; GSB scales by 1/sqrt(ΣM).
    for (int k = 1; k < 3; ++k) {
        const double h = 1e-3;
        Tensor up = a0.clone(), down = a0.clone();
        up[k] += h;
        down[k] -= h;
        const double fd = ((gsb_attention(p0, up) * g).sum().item<double>() - (gsb_attention(p0, down) * g).sum().item<double>()) / (2 * h);
        const double count = k == 1 ? 3 : 2;
        EXPECT_NEAR(a.grad()[k].item<double>() * std::sqrt(count), fd, 1e-2) << k;
    }
}

TEST(Modules, PwsInitialisesOnceAndScaleGradientIsExact) {
    const Tensor w0 = torch::tensor({{0.5f, -0.3f, 0.1f}, {-1.0f, 2.0f, 0.4f}});
    auto q = std::dynamic_pointer_cast<QuantizerImpl>(make_quantizer({"pws", {}}, weight_site(2)));
    ASSERT_TRUE(q);
    Tensor w = w0.clone().requires_grad_(true);
    Tensor y = q->forward(w);
    EXPECT_TRUE(q->initialized());
    auto scale = q->named_parameters()["scale"];
    expect_close(scale.detach(), t({0.3f, 3.4f / 3}));  // mean |W| per row, un-centred
    // Row means 0.1 and 0.4667: centred signs (+, −, +) and (−, +, −).
    expect_close(y.detach(), torch::tensor({{0.3f, -0.3f, 0.3f}, {-3.4f / 3, 3.4f / 3, -3.4f / 3}}));
    const Tensor g = torch::tensor({{1.0f, 2.0f, 3.0f}, {4.0f, 5.0f, 6.0f}});
    (y * g).sum().backward();
    expect_close(scale.grad(), t({1 - 2 + 3, -4 + 5 - 6}));  // Σ_in g·sign(W_c)
    // Finite difference in the scale (the output is linear in it).
    const double h = 1e-3;
    torch::NoGradGuard no_grad;
    scale[0] += h;
    const double up = (q->forward(w0) * g).sum().item<double>();
    scale[0] -= 2 * h;
    const double down = (q->forward(w0) * g).sum().item<double>();
    EXPECT_NEAR((up - down) / (2 * h), 2.0, 1e-2);
    // A second batch does not re-initialise.
    scale.fill_(7.0f);
    q->forward(w0 * 100);
    EXPECT_FLOAT_EQ(scale[0].item<float>(), 7.0f);
}

TEST(Modules, InitialisationSurvivesSaveAndLoad) {
    auto a = make_quantizer({"bivit_act", {}}, {SiteKind::head_activation, 3});
    a->forward(torch::randn({2, 3, 4, 5}));
    torch::serialize::OutputArchive out;
    a->save(out);
    std::stringstream buffer;
    out.save_to(buffer);
    auto b = make_quantizer({"bivit_act", {}}, {SiteKind::head_activation, 3});
    torch::serialize::InputArchive in;
    in.load_from(buffer);
    b->load(in);
    const Tensor alpha_before = b->named_parameters()["alpha"].clone();
    b->forward(torch::randn({2, 3, 4, 5}) * 50);  // would change alpha if it re-initialised
    expect_close(b->named_parameters()["alpha"], alpha_before);
    expect_close(b->named_parameters()["alpha"], a->named_parameters()["alpha"]);
}

TEST(Modules, BiVitActHasTwoLevelsPerHead) {
    auto q = make_quantizer({"bivit_act", {}}, {SiteKind::head_activation, 2});
    q->forward(torch::randn({1, 2, 3, 4}));
    {
        torch::NoGradGuard no_grad;
        q->named_parameters()["alpha"].copy_(t({0.5f, 2.0f}));
        q->named_parameters()["zero_point"].copy_(t({-1.0f, 0.2f}));  // rounds to −1 and 0
    }
    const Tensor y = q->forward(torch::randn({1, 2, 3, 4}));
    // Head 0: (±1 + 1)·0.5 ∈ {0, 1}; head 1: ±1·2 ∈ {−2, 2}.
    EXPECT_TRUE(((y[0][0] == 0) | (y[0][0] == 1)).all().item<bool>());
    EXPECT_TRUE(((y[0][1] == -2) | (y[0][1] == 2)).all().item<bool>());
}

TEST(Modules, RegistryRejectsBadSpecs) {
    EXPECT_THROW(make_quantizer({"binaryish", {}}, weight_site(2)), std::invalid_argument);
    EXPECT_THROW(make_quantizer({"pws", {}}, {SiteKind::token_activation, 4}), std::invalid_argument);
    EXPECT_THROW(make_quantizer({"sab", {}}, weight_site(4)), std::invalid_argument);
    EXPECT_THROW(make_quantizer({"lsq", {{"bits", 1}}}, weight_site(4)), std::invalid_argument);
    EXPECT_THROW(make_quantizer({"lsq", {{"bitz", 4}}}, weight_site(4)), std::invalid_argument);
    for (const auto & name : quantizer_names()) EXPECT_FALSE(name.empty());
}

TEST(Modules, EveryQuantizerRunsInTheModelAndPassesGradients) {
    // Install each quantizer at every site it can serve in a nano DeiT; one training step must give
    // finite gradients to the model weights and to the quantizer's own parameters.
    for (const auto & name : quantizer_names()) {
        torch::manual_seed(0);
        Deit model(deit_config("deit_nano_patch7_28"));
        int installed = 0;
        for (const auto & site : model->site_names()) {
            if (site.rfind("blocks.", 0) != 0) continue;  // patch embed and head stay full precision
            const bool is_probs = site.size() > 6 && site.compare(site.size() - 6, 6, ".probs") == 0;
            const SiteInfo info = model->site_info(site);
            if ((name == "sab" || name == "gsb_attention" || name == "bool") != is_probs) continue;
            try {
                model->install(site, make_quantizer({name, {}}, info));
                ++installed;
            } catch (const std::invalid_argument &) {
                // not a site kind this quantizer serves
            }
        }
        ASSERT_GT(installed, 0) << name;
        model->train();
        auto loss = model->forward(torch::randn({4, 1, 28, 28})).logsumexp(1).mean();
        loss.backward();
        ASSERT_TRUE(std::isfinite(loss.item<double>())) << name;
        for (const auto & p : model->named_parameters()) {
            if (p.value().grad().defined()) {
                EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << name << " " << p.key();
            }
        }
    }
}
