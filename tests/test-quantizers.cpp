// Quantizers: forward values and gradients (inputs and every learnable parameter) against the
// closed-form formulas of methods.md, on small tensors whose expected values are derived here by
// hand or by plain loops; finite differences where the function is smooth in the parameter.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <limits>

#include "runtime/kernels/bgemm.h"
#include "train/quant/quantizers.h"

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
    // Through the module: a per-channel shift b, then α·sign(x + b) with α = 0.8 (not 1).
    const Tensor x0 = torch::tensor({{-2.0f, -0.5f, 0.3f}, {1.5f, 0.9f, -0.1f}});  // [tokens 2, channels 3]
    const Tensor g = torch::tensor({{1.0f, 2.0f, 3.0f}, {4.0f, -1.0f, 0.5f}});
    const Tensor b0 = t({0.5f, -0.2f, 0.0f});
    for (bool gsb : {false, true}) {
        auto q = make_quantizer({"elastic_signed", {{"gsb_gradient", gsb ? 1.0 : 0.0}}}, {SiteKind::token_activation, 3});
        q->forward(x0);  // initialises α
        auto params = q->named_parameters();
        {
            torch::NoGradGuard no_grad;
            params["alpha"].fill_(0.8f);
            params["shift"].copy_(b0);
        }
        Tensor x = x0.clone().requires_grad_(true);
        const Tensor y = q->forward(x);
        (y * g).sum().backward();
        const Tensor v = x0 + b0, u = v / 0.8;
        const Tensor inside = (u.abs() <= 1).to(torch::kFloat), s = torch::where(v < 0, -1.0f, 1.0f);
        expect_close(y.detach(), 0.8 * s);
        expect_close(x.grad(), g * inside);
        expect_close(params["shift"].grad(), (g * inside).sum(0));
        // BiT: Σ sign·g / sqrt(n); GSB: Σ (sign − u·1{|u| ≤ 1})·g / sqrt(n), n = 6.
        const Tensor terms = gsb ? s - u * inside : s;
        EXPECT_NEAR(params["alpha"].grad().item<double>(), (terms * g).sum().item<double>() / std::sqrt(6.0), 1e-5);
        // BiT's α-gradient is the exact derivative of the (linear in α) output, grad-scaled: central
        // differences of Σ y·g in α give Σ sign·g.
        if (!gsb) {
            torch::NoGradGuard no_grad;
            const double h = 1e-3;
            params["alpha"].fill_(0.8f + h);
            const double up = (q->forward(x0) * g).sum().item<double>();
            params["alpha"].fill_(0.8f - h);
            const double down = (q->forward(x0) * g).sum().item<double>();
            EXPECT_NEAR((up - down) / (2 * h), (s * g).sum().item<double>(), 1e-2);
        }
    }
}

TEST(Rsign, ShiftedSignWithApproxSignGradients) {
    auto q = make_quantizer({"rsign", {}}, {SiteKind::token_activation, 3});
    const Tensor b0 = t({0.25f, -0.5f, 1.0f});
    {
        torch::NoGradGuard no_grad;
        q->named_parameters()["shift"].copy_(b0);
    }
    const Tensor x0 = torch::tensor({{-0.25f, 0.2f, -3.0f}, {0.5f, 1.0f, -0.5f}});
    const Tensor g = torch::tensor({{1.0f, 2.0f, 3.0f}, {-1.0f, 0.5f, 4.0f}});
    Tensor x = x0.clone().requires_grad_(true);
    const Tensor y = q->forward(x);
    (y * g).sum().backward();
    const Tensor v = x0 + b0;  // 0 (sign +1), −0.3, −2, 0.75, 0.5, 0.5
    expect_close(y.detach(), torch::where(v < 0, -1.0f, 1.0f));
    const Tensor d = (2 - 2 * v.abs()) * (v.abs() < 1).to(torch::kFloat);
    expect_close(x.grad(), g * d);
    expect_close(q->named_parameters()["shift"].grad(), (g * d).sum(0));
}

TEST(ActBi, ValuesAndGradientsOfInputScaleAndZeroPoint) {
    // Per head: α = (0.5, 2), z = (−0.6 → −1, 0.4 → 0). x [1, 2 heads, 2, 3].
    auto q = make_quantizer({"actbi", {}}, {SiteKind::head_activation, 2});
    q->forward(torch::ones({1, 2, 2, 3}));
    auto params = q->named_parameters();
    {
        torch::NoGradGuard no_grad;
        params["alpha"].copy_(t({0.5f, 2.0f}));
        params["zero_point"].copy_(t({-0.6f, 0.4f}));
    }
    const Tensor x0 = torch::tensor({{{{0.2f, 1.5f, -0.3f}, {0.0f, 0.9f, 0.6f}}, {{-3.0f, 1.0f, 2.0f}, {-0.5f, 5.0f, 0.0f}}}});
    const Tensor g = torch::arange(1, 13, torch::kFloat).view({1, 2, 2, 3}) * torch::tensor({1.0f, -1.0f, 0.5f});
    Tensor x = x0.clone().requires_grad_(true);
    const Tensor y = q->forward(x);
    (y * g).sum().backward();
    const Tensor a = t({0.5f, 2.0f}).view({1, 2, 1, 1}), z = t({-1.0f, 0.0f}).view({1, 2, 1, 1});
    const Tensor u = x0 / a + z;
    const Tensor inside = ((u >= -1) & (u <= 1)).to(torch::kFloat);
    const Tensor b = torch::where(u.clamp(-1, 1) < 0, -1.0f, 1.0f);
    expect_close(y.detach(), (b - z) * a);
    expect_close(x.grad(), g * inside);
    // d/dα of (b(x/α + z) − z)·α with the identity STE through the clamp: (b − z) − 1{inside}·x/α;
    // d/dz: α·(1{inside} − 1). Both grad-scaled by 1/sqrt(numel(x)) = 1/sqrt(12), summed per head.
    const double gs = 1.0 / std::sqrt(12.0);
    expect_close(params["alpha"].grad(), ((b - z - inside * x0 / a) * g).sum({0, 2, 3}) * gs);
    expect_close(params["zero_point"].grad(), (a * (inside - 1) * g).sum({0, 2, 3}) * gs);
}

// Bi-ViT's LinearBi (its Swin patch merging): α_row·sign(clamp(W/α_row, −1, 1)); the weight's
// gradient is the clip's indicator (no α), α's is Σ_in (sign − u·1{|u| ≤ 1})·g/√n per row. The
// rows' α differ from 1 and from each other, and entries sit inside, on and beyond the clip.
TEST(LinearBi, ValuesAndGradientsOfWeightAndRowScales) {
    auto q = make_quantizer({"linear_bi", {}}, weight_site(3));
    const Tensor w0 = torch::tensor({{3.0f, -1.0f, 0.5f, -0.25f}, {0.2f, -0.1f, 0.6f, -2.2f}, {1.0f, 1.5f, -0.9f, 0.0f}});
    q->forward(w0);
    auto params = q->named_parameters();
    expect_close(params["alpha"].detach(), torch::full({3}, 2 * w0.abs().mean().item<float>()));  // 2·mean|W|, every row
    {
        torch::NoGradGuard no_grad;
        params["alpha"].copy_(t({0.7f, 2.2f, 1.5f}));
    }
    const Tensor g = torch::tensor({{1.0f, -2.0f, 3.0f, 0.5f}, {-1.5f, 2.5f, 1.0f, -3.0f}, {2.0f, 1.0f, -1.0f, 4.0f}});
    Tensor w = w0.clone().requires_grad_(true);
    const Tensor y = q->forward(w);
    (y * g).sum().backward();
    const Tensor a = t({0.7f, 2.2f, 1.5f}).unsqueeze(1), u = w0 / a;
    const Tensor inside = (u.abs() <= 1).to(torch::kFloat), b = torch::where(w0 < 0, -1.0f, 1.0f);
    expect_close(y.detach(), b * a);
    expect_close(w.grad(), g * inside);
    expect_close(params["alpha"].grad(), ((b - inside * u) * g).sum(1) / std::sqrt(12.0f));
    // Codes first: the scale is α per row, the codes ±1.
    expect_close(q->code_scale(y), t({0.7f, 2.2f, 1.5f}));
}

TEST(Lsq, PerChannelStepsWithZeroPointsAtAWeightSite) {
    // Weight [2 rows, 4], steps (0.5, 0.25), zero points (0.6 → 1, −1.2 → −1), signed 4 bits [−8, 7].
    auto q = make_quantizer({"lsq", {{"bits", 4}, {"per_channel", 1}, {"zero_point", 1}}}, weight_site(2));
    q->forward(torch::ones({2, 4}));
    auto params = q->named_parameters();
    {
        torch::NoGradGuard no_grad;
        params["step"].copy_(t({0.5f, 0.25f}));
        params["zero_point"].copy_(t({0.6f, -1.2f}));
    }
    const Tensor w0 = torch::tensor({{0.3f, -5.0f, 3.2f, 1.25f}, {0.1f, 2.0f, -1.5f, 0.0f}});
    const Tensor g = torch::tensor({{1.0f, 2.0f, -1.0f, 3.0f}, {0.5f, -2.0f, 4.0f, 1.0f}});
    Tensor w = w0.clone().requires_grad_(true);
    const Tensor y = q->forward(w);
    (y * g).sum().backward();
    const Tensor s = t({0.5f, 0.25f}).view({2, 1}), z = t({1.0f, -1.0f}).view({2, 1});
    const Tensor u = w0 / s + z;  // row 0: 1.6, −9, 7.4, 3.5; row 1: −0.6, 7, −7, −1
    const Tensor inside = ((u >= -8) & (u <= 7)).to(torch::kFloat);
    const Tensor code = u.clamp(-8, 7).round();  // 3.5 rounds to even: 4
    expect_close(y.detach(), (code - z) * s);
    expect_close(w.grad(), g * inside);
    // ds = (q − z) − 1{inside}·x/s; dz = s·(1{inside} − 1); scaled by 1/sqrt(numel·Qp) = 1/sqrt(56).
    const double gs = 1.0 / std::sqrt(8.0 * 7.0);
    expect_close(params["step"].grad(), ((code - z - inside * w0 / s) * g).sum(1) * gs);
    expect_close(params["zero_point"].grad(), (s * (inside - 1) * g).sum(1) * gs);
    // Where every value saturates the output is s·(Qp − z) or s·(Qn − z), linear in s: central
    // differences of Σ y·g in s give what LSQ's gradient gives before its scale.
    {
        torch::NoGradGuard no_grad;
        const Tensor far = torch::tensor({{100.0f, -100.0f, 100.0f, 100.0f}, {-100.0f, -100.0f, 100.0f, 100.0f}});
        const double h = 1e-3;
        params["step"].copy_(t({0.5f + h, 0.25f}));
        const double up = (q->forward(far) * g).sum().item<double>();
        params["step"].copy_(t({0.5f - h, 0.25f}));
        const double down = (q->forward(far) * g).sum().item<double>();
        EXPECT_NEAR((up - down) / (2 * h), ((7 - 1) * 1.0 + (-8 - 1) * 2.0 + (7 - 1) * -1.0 + (7 - 1) * 3.0), 1e-2);
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
    auto probs_q = make_quantizer({"actbi", {}}, heads), v_q = make_quantizer({"actbi", {}}, heads);
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
    for (const char * name : {"gsb_value", "gsb_attention"}) {
        const SiteInfo head{std::string(name) == "gsb_value" ? SiteKind::head_activation : SiteKind::attention_map, 2};
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

TEST(WeightBinarizers, GradientsAreTheReferenceClosedForms) {
    // Rows whose mean |W| is far from 1 (so a scale left in the chain shows), with entries inside,
    // exactly on and beyond the clip at ±1, before and after row centring.
    const Tensor w0 = torch::tensor({{3.0f, -1.0f, 0.5f, -0.25f}, {0.2f, -0.1f, 0.6f, -2.2f}, {1.0f, 1.5f, -0.9f, 0.8f}});
    const Tensor g = torch::tensor({{1.0f, -2.0f, 3.0f, 0.5f}, {-1.5f, 2.5f, 1.0f, -3.0f}, {2.0f, 1.0f, -1.0f, 4.0f}});
    auto grad_of = [&](const char * name) {
        return value_and_grad(w0, g, [&](const Tensor & w) { return make_quantizer({name, {}}, weight_site(3))->forward(w); });
    };
    const Tensor inside = (w0.abs() <= 1).to(torch::kFloat);
    // xnor (XNOR-Net, ReActNet, Bi-ViT's BiLinearBiReal): g·1{|W| ≤ 1}, no α.
    auto [xnor_y, xnor_dw] = grad_of("xnor");
    expect_close(xnor_dw, g * inside);
    expect_close(xnor_y, w0.abs().mean(1, true) * torch::where(w0 < 0, -1.0f, 1.0f));
    // row_centred (BiBERT): u = g·1{|W_c| ≤ 1} through the centring, u − mean_row u.
    const Tensor centred = w0 - w0.mean(1, true);
    const Tensor u = g * (centred.abs() <= 1).to(torch::kFloat);
    auto [rc_y, rc_dw] = grad_of("row_centred");
    expect_close(rc_dw, u - u.mean(1, true));
    expect_close(rc_y, w0.abs().mean(1, true) * torch::where(centred < 0, -1.0f, 1.0f));
    // bwn (BiT, GSB): identity.
    expect_close(grad_of("bwn").second, g);
    // pws (BiViT): s·BinaryQuantizer(W_c), so u = s·g·1{|W_c| < 1} through the centring.
    auto pws = make_quantizer({"pws", {}}, weight_site(3));
    pws->forward(w0);  // initialise s to mean_row |W| (0.55 … 1.3: not 1)
    const Tensor s = pws->named_parameters()["scale"].detach().unsqueeze(1);
    const Tensor us = s * g * (centred.abs() < 1).to(torch::kFloat);
    expect_close(value_and_grad(w0, g, [&](const Tensor & w) { return pws->forward(w); }).second, us - us.mean(1, true));
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
    auto a = make_quantizer({"actbi", {}}, {SiteKind::head_activation, 3});
    a->forward(torch::randn({2, 3, 4, 5}));
    torch::serialize::OutputArchive out;
    a->save(out);
    std::stringstream buffer;
    out.save_to(buffer);
    auto b = make_quantizer({"actbi", {}}, {SiteKind::head_activation, 3});
    torch::serialize::InputArchive in;
    in.load_from(buffer);
    b->load(in);
    const Tensor alpha_before = b->named_parameters()["alpha"].clone();
    b->forward(torch::randn({2, 3, 4, 5}) * 50);  // would change alpha if it re-initialised
    expect_close(b->named_parameters()["alpha"], alpha_before);
    expect_close(b->named_parameters()["alpha"], a->named_parameters()["alpha"]);
}

TEST(Modules, BiVitActHasTwoLevelsPerHead) {
    auto q = make_quantizer({"actbi", {}}, {SiteKind::head_activation, 2});
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

namespace {

// Wraps a site's quantizer to keep the tensor it receives, so a test can see the gradient that
// reaches the site's input.
class InputRecorder : public SiteTransformImpl {
  public:
    explicit InputRecorder(SiteTransform inner) : inner_(register_module("inner", std::move(inner))) {}
    Tensor forward(const Tensor & x) override {
        if (x.requires_grad()) x.retain_grad();
        seen = x;
        return inner_->forward(x);
    }
    Tensor code_scale(const Tensor & q) const override { return inner_->code_scale(q); }
    Tensor seen;

  private:
    SiteTransform inner_;
};

}  // namespace

TEST(Modules, EveryQuantizerRunsInTheModelAndPassesGradients) {
    // Each quantizer, alone, at each site of block 1 it serves in a nano DeiT (alone, so what reaches
    // it is the full-precision model's gradient). One backward pass must bring a non-zero gradient
    // to the site's input — a quantizer that cuts the gradient fails here — and to each of the
    // quantizer's learnable parameters, which must be exactly those the table lists.
    const torch::Tensor images = torch::randn({4, 1, 28, 28}), g = torch::randn({4, 10});
    for (const auto & row : spec::quantizer_table()) {
        int tried = 0;
        for (const auto & site : Deit(deit_config("deit_nano_patch7_28"))->site_names()) {
            if (site.rfind("blocks.1.", 0) != 0) continue;
            torch::manual_seed(0);
            Deit model(deit_config("deit_nano_patch7_28"));
            {
                // Sharper attention than the near-uniform maps of timm's 0.02-std initialisation, so
                // the attention map's quantizers see entries on both sides of their thresholds.
                torch::NoGradGuard no_grad;
                for (auto & p : model->named_parameters()) {
                    if (p.key().find("attn.qkv.weight") != std::string::npos) p.value().mul_(20);
                }
            }
            const SiteInfo info = model->site_info(site);
            if (!spec::serves(row, site_class(info.kind))) continue;
            ++tried;
            auto recorder = std::make_shared<InputRecorder>(make_quantizer({row.name, {}}, info));
            model->install(site, recorder);
            model->train();
            model->forward(images);  // first-batch initialisation
            const Tensor loss = (model->forward(images) * g).sum();
            loss.backward();
            ASSERT_TRUE(std::isfinite(loss.item<double>())) << row.name << " at " << site;
            const Tensor x_grad = info.kind == SiteKind::weight ? model->named_parameters()[site].grad() : recorder->seen.grad();
            ASSERT_TRUE(x_grad.defined()) << row.name << " at " << site;
            EXPECT_GT(x_grad.abs().sum().item<double>(), 0.0) << row.name << " cuts the gradient at " << site;
            for (const auto & p : recorder->named_parameters()) {
                const std::string param = p.key().substr(p.key().find('.') + 1);  // "inner.alpha" -> "alpha"
                bool listed = false;
                for (const char * l : row.learned) listed = listed || param == l;
                EXPECT_TRUE(listed) << row.name << ": parameter '" << param << "' is not in the table's learned list";
                ASSERT_TRUE(p.value().grad().defined()) << row.name << " " << param << " at " << site;
                EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << row.name << " " << param << " at " << site;
            }
        }
        EXPECT_GT(tried, 0) << row.name;
    }
}

// The one-pass kernels (pointwise.h) against the op-by-op chains they replaced, written out here
// with torch's operators: forward values and input gradients bit for bit (the same float operations
// in the same order), parameter gradients — whose per-element terms the chains reduced separately
// before adding — to float rounding. Odd shapes, a permuted (non-contiguous) input as q/k/v are,
// per-head scales ≠ 1, non-zero zero points, and values inside, on and beyond every clamp.
namespace {

Tensor chain_sign(const Tensor & x) { return torch::where(x < 0, torch::full({}, -1.0f), torch::full({}, 1.0f)); }
Tensor chain_straight_through(const Tensor & v, const Tensor & s) { return v.detach() + (s - s.detach()); }
Tensor chain_affine(const Tensor & x, const Tensor & s, const Tensor & z, double lo, double hi, bool round) {
    const Tensor c = torch::clamp(z.defined() ? x / s + z : x / s, lo, hi);
    const Tensor q = chain_straight_through(round ? c.detach().round() : chain_sign(c.detach()), c);
    return (z.defined() ? q - z : q) * s;
}

// [2, 3 heads, 7 tokens, 5] as a permuted view of [2, 7, 3, 5], spread over ±4, with edge values.
Tensor per_head_input() {
    torch::manual_seed(3);
    Tensor x = (torch::randn({2, 7, 3, 5}) * 2).permute({0, 2, 1, 3});
    // Head 1 has scale 1 and zero point 0 below: its clamp edges (±1; −8 and 7) and ties (2.5, −1.5).
    x.index_put_({0, 1, 0}, torch::tensor({0.0f, 1.0f, -1.0f, 0.5f, -0.0f}));
    x.index_put_({0, 1, 1}, torch::tensor({7.0f, -8.0f, 2.5f, -1.5f, 0.0f}));
    return x;
}

struct Grads {
    Tensor y, dx, ds, dz;
};
Grads run_affine(const std::function<Tensor(const Tensor &, const Tensor &, const Tensor &)> & fn, const Tensor & x0,
                 const Tensor & s0, const Tensor & z0) {
    const Tensor x = x0.detach().clone().requires_grad_(true), s = s0.clone().requires_grad_(true);
    const Tensor z = z0.defined() ? z0.clone().requires_grad_(true) : Tensor();
    const Tensor y = fn(x, s, z);
    (y * torch::linspace(-2, 3, y.numel()).view(y.sizes())).sum().backward();
    return {y.detach(), x.grad(), s.grad(), z.defined() ? z.grad() : Tensor()};
}

void expect_same_affine(const Grads & fused, const Grads & chain) {
    EXPECT_TRUE(torch::equal(fused.y, chain.y));
    EXPECT_TRUE(torch::equal(fused.dx, chain.dx));
    EXPECT_TRUE(torch::allclose(fused.ds, chain.ds, 1e-5, 1e-5)) << fused.ds << chain.ds;
    if (chain.dz.defined()) EXPECT_TRUE(torch::allclose(fused.dz, chain.dz, 1e-5, 1e-5)) << fused.dz << chain.dz;
}

}  // namespace

TEST(FusedKernels, SignAndStraightThroughEqualTheChains) {
    const Tensor x0 = per_head_input();
    EXPECT_TRUE(torch::equal(sign_pm1(x0), chain_sign(x0)));
    const Tensor g = torch::linspace(-2, 3, x0.numel()).view(x0.sizes());
    for (const bool approx : {false, true}) {
        const Tensor x = x0.detach().clone().requires_grad_(true);
        const Tensor y = approx ? sign_approx(x) : sign_clipped(x);
        (y * g).sum().backward();
        const Tensor inside = (x0.abs() < 1).to(torch::kFloat);
        EXPECT_TRUE(torch::equal(y, chain_sign(x0)));
        EXPECT_TRUE(torch::equal(x.grad(), approx ? g * (2 - 2 * x0.abs()) * inside : g * inside)) << approx;
    }
    // A value broadcast against a larger surrogate: forward the value (−0 becomes +0, as the chain
    // adds s − s), backward the surrogate's gradient.
    const Tensor v = torch::tensor({-0.0f, 2.0f, -3.0f}), s = torch::randn({4, 3}).requires_grad_(true);
    const Tensor y = straight_through(v, s);
    EXPECT_TRUE(torch::equal(y, chain_straight_through(v, s.detach())));
    EXPECT_FALSE(std::signbit(y[0][0].item<float>()));
    (y * g.flatten().slice(0, 0, 12).view({4, 3})).sum().backward();
    EXPECT_TRUE(torch::equal(s.grad(), g.flatten().slice(0, 0, 12).view({4, 3})));
}

TEST(FusedKernels, LsqAndActBiEqualTheChains) {
    const Tensor x = per_head_input();
    const Tensor s = torch::tensor({0.37f, 1.0f, 2.5f}).view({1, 3, 1, 1}), z = torch::tensor({-3.0f, 0.0f, 7.0f}).view({1, 3, 1, 1});
    for (const bool round : {true, false}) {
        const double lo = round ? -8 : -1, hi = round ? 7 : 1;
        const Snap snap = round ? Snap::round : Snap::sign;
        for (const bool with_z : {true, false}) {
            SCOPED_TRACE(std::string(round ? "round" : "sign") + (with_z ? " with zero point" : ""));
            auto fused = [&](const Tensor & a, const Tensor & b, const Tensor & c) { return clamp_snap_scale(a, b, c, lo, hi, snap); };
            auto chain = [&](const Tensor & a, const Tensor & b, const Tensor & c) { return chain_affine(a, b, c, lo, hi, round); };
            expect_same_affine(run_affine(fused, x, s, with_z ? z : Tensor()), run_affine(chain, x, s, with_z ? z : Tensor()));
        }
    }
    // The quantizers themselves, with their gradient scales: LSQ per tensor, ActBi per head.
    auto lsq_chain = [](const Tensor & a, const Tensor & b, const Tensor & c) {
        const double g = 1.0 / std::sqrt(a.numel() * 7.0);
        return chain_affine(a, grad_scale(b, g), grad_scale(round_pass(c), g), -8, 7, true);
    };
    auto lsq_fused = [](const Tensor & a, const Tensor & b, const Tensor & c) { return lsq(a, b, c, -8, 7); };
    expect_same_affine(run_affine(lsq_fused, x, torch::full({1}, 0.41f), torch::full({1}, 2.6f)),
                       run_affine(lsq_chain, x, torch::full({1}, 0.41f), torch::full({1}, 2.6f)));
    auto actbi_chain = [](const Tensor & a, const Tensor & b, const Tensor & c) {
        const double g = 1.0 / std::sqrt(static_cast<double>(a.numel()));
        return chain_affine(a, grad_scale(b, g), grad_scale(round_pass(c), g), -1, 1, false);
    };
    const Tensor zh = torch::tensor({-0.6f, 0.4f, 1.2f}).view({1, 3, 1, 1});
    expect_same_affine(run_affine(actbi, x, s, zh), run_affine(actbi_chain, x, s, zh));
}
