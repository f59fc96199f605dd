// The runtime's full-precision activations: softmax's exponential against std::exp (within 2 ulp over
// the range softmax uses, 0 below the normal range), GELU against the exact formula in double, the
// sign GELU is reduced to against GELU's own sign, and every ISA tier against its reference bit for
// bit (softmax over row lengths around the 16 summation lanes and real attention widths), and
// LayerNorm likewise.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "runtime/kernels/activations.h"

using namespace bitvit::runtime;

namespace {

// Distance in units in the last place between two positive floats.
int64_t ulp_distance(float a, float b) {
    int32_t ia, ib;
    std::memcpy(&ia, &a, 4);
    std::memcpy(&ib, &b, 4);
    return std::abs(static_cast<int64_t>(ia) - ib);
}

}  // namespace

TEST(Softmax, ExpIsWithinTwoUlpOfStdExp) {
    int64_t worst = 0;
    for (int64_t i = 0; i <= 870000; ++i) {  // every 1e-4 over [−87, 0], where e^x is normal
        const float x = static_cast<float>(-1e-4 * static_cast<double>(i));
        worst = std::max(worst, ulp_distance(softmax_exp(x), std::exp(x)));
    }
    EXPECT_LE(worst, 2);
    EXPECT_EQ(softmax_exp(0.0f), 1.0f);
    EXPECT_EQ(softmax_exp(-0.0f), 1.0f);
    EXPECT_EQ(softmax_exp(-88.0f), 0.0f);  // below the normal range
    EXPECT_EQ(softmax_exp(-INFINITY), 0.0f);
}

TEST(Softmax, EveryTierMatchesTheReferenceBitForBit) {
    std::mt19937_64 rng(5);
    std::normal_distribution<float> scores(0.0f, 4.0f);
    for (int64_t n : {1, 2, 15, 16, 17, 31, 32, 33, 50, 197, 198}) {
        const int64_t rows = 3, ld = n + 5;
        std::vector<float> x(static_cast<size_t>(rows * ld));
        for (float & v : x) v = scores(rng);
        x[0] = -100.0f;  // an entry far below its row's maximum: e^x underflows to 0
        std::vector<float> want = x;
        softmax_rows_ref(want.data(), rows, n, ld);
        for (int64_t r = 0; r < rows; ++r) {
            double sum = 0.0;
            for (int64_t j = 0; j < n; ++j) sum += want[r * ld + j];
            EXPECT_NEAR(sum, 1.0, 1e-5) << "row " << r << " of " << n;
            for (int64_t j = n; j < ld; ++j) EXPECT_EQ(want[r * ld + j], x[r * ld + j]) << "past the row";
        }
        for (Isa isa : supported_isas()) {
            std::vector<float> got = x;
            softmax_rows(isa, got.data(), rows, n, ld);
            ASSERT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float))) << isa_name(isa) << " n=" << n;
        }
    }
}

TEST(Gelu, IsWithinTheErfApproximationOfTheExactFormula) {
    double worst = 0.0;
    for (int64_t i = -100000; i <= 100000; ++i) {  // every 1e-4 over [−10, 10]
        const double x = 1e-4 * static_cast<double>(i);
        const double exact = 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
        worst = std::max(worst, std::fabs(gelu_value(static_cast<float>(x)) - exact) / std::max(1.0, std::fabs(x)));
    }
    EXPECT_LT(worst, 1e-6);  // erf's 1.5e-7 plus float rounding of x and the result
    EXPECT_EQ(gelu_value(0.0f), 0.0f);
    EXPECT_EQ(gelu_value(-20.0f), 0.0f);  // −0: far below, erf(x/√2) is −1
    EXPECT_TRUE(std::signbit(gelu_value(-20.0f)));
    EXPECT_EQ(gelu_value(20.0f), 20.0f);
}

TEST(Gelu, EveryTierMatchesTheReferenceBitForBit) {
    std::mt19937_64 rng(8);
    std::normal_distribution<float> values(0.0f, 6.0f);
    for (int64_t n : {1, 7, 8, 15, 16, 17, 63, 1536}) {
        std::vector<float> x(static_cast<size_t>(n));
        for (float & v : x) v = values(rng);
        std::vector<float> want = x;
        gelu_ref(want.data(), n);
        for (Isa isa : supported_isas()) {
            std::vector<float> got = x;
            gelu(isa, got.data(), n);
            ASSERT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float))) << isa_name(isa) << " n=" << n;
        }
    }
}

// fc2 after a sign quantizer needs only GELU's sign: gelu_sign gives it without erf, for every input
// near the floor where GELU underflows to −0, on a grid down to −30, and at zeros and subnormals.
TEST(Gelu, SignShortcutIsGelusOwnSign) {
    const float floor = gelu_negative_floor();
    EXPECT_LT(floor, -5.0f);
    EXPECT_GT(floor, -6.0f);
    auto expect_same_sign = [&](float x) {
        ASSERT_EQ(gelu_sign(x, floor), gelu_value(x) < 0.0f ? -1.0f : 1.0f) << "x = " << x;
    };
    float x = floor;
    for (int i = 0; i < 2000; ++i) x = std::nextafter(x, -100.0f);
    for (int i = 0; i < 4000; ++i, x = std::nextafter(x, 0.0f)) expect_same_sign(x);
    for (int64_t i = 0; i <= 310000; ++i) expect_same_sign(static_cast<float>(-30.0 + 1e-4 * static_cast<double>(i)));
    for (float z : {0.0f, -0.0f, 1e-45f, -1e-45f, 1e-38f, -1e-38f, -INFINITY, INFINITY}) expect_same_sign(z);
}

// LayerNorm per tier against its reference bit for bit, over widths around the 16 summation lanes and
// the DeiT widths, out of place and in place; and the reference against the formula in double.
TEST(LayerNorm, EveryTierMatchesTheReferenceBitForBit) {
    std::mt19937_64 rng(11);
    std::normal_distribution<float> values(0.5f, 3.0f);
    const float eps = 1e-6f;
    for (int64_t dim : {1, 2, 15, 16, 17, 33, 64, 96, 192, 384, 768}) {
        const int64_t rows = 5;
        std::vector<float> x(static_cast<size_t>(rows * dim)), weight(static_cast<size_t>(dim)), bias(weight.size());
        for (float & v : x) v = values(rng);
        for (float & v : weight) v = values(rng);
        for (float & v : bias) v = values(rng);
        std::vector<float> want(x.size());
        layer_norm_rows_ref(x.data(), rows, dim, weight.data(), bias.data(), eps, want.data());
        for (int64_t r = 0; r < rows; ++r) {
            double mean = 0.0, var = 0.0;
            for (int64_t i = 0; i < dim; ++i) mean += x[r * dim + i];
            mean /= static_cast<double>(dim);
            for (int64_t i = 0; i < dim; ++i) var += (x[r * dim + i] - mean) * (x[r * dim + i] - mean);
            var /= static_cast<double>(dim);
            for (int64_t i = 0; i < dim; ++i) {
                const double exact = (x[r * dim + i] - mean) / std::sqrt(var + eps) * weight[i] + bias[i];
                ASSERT_NEAR(want[r * dim + i], exact, 1e-4 * (1.0 + std::fabs(exact))) << "dim " << dim;
            }
        }
        for (Isa isa : supported_isas()) {
            std::vector<float> got(x.size());
            layer_norm_rows(isa, x.data(), rows, dim, weight.data(), bias.data(), eps, got.data());
            ASSERT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float))) << isa_name(isa) << " dim " << dim;
            std::vector<float> in_place = x;
            layer_norm_rows(isa, in_place.data(), rows, dim, weight.data(), bias.data(), eps, in_place.data());
            ASSERT_EQ(0, std::memcmp(in_place.data(), want.data(), want.size() * sizeof(float))) << isa_name(isa) << " in place, dim " << dim;
        }
    }
}
