// The runtime's row softmax: its exponential against std::exp (within 2 ulp over the range softmax
// uses, 0 below the normal range), and every ISA tier against the reference bit for bit, over row
// lengths around the 16 summation lanes and real attention widths.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "runtime/kernels/softmax.h"

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
