// int8 GEMM: every variant this CPU runs (portable, AVX2, AVX-512 VNNI), bit-exact against the
// reference over shapes that hit every tile edge (M past 6 rows, N past 4 panels of 16, K around the
// groups of four), the real DeiT shapes, and the extreme codes at the largest K.
#include <gtest/gtest.h>

#include <random>

#include "runtime/kernels/int8-gemm.h"

using namespace bitvit::runtime;

namespace {

std::vector<int8_t> random_codes(int64_t count, std::mt19937_64 & rng, int lo = -128, int hi = 127) {
    std::uniform_int_distribution<int> code(lo, hi);
    std::vector<int8_t> out(static_cast<size_t>(count));
    for (auto & c : out) c = static_cast<int8_t>(code(rng));
    return out;
}

void check_variants(int64_t m, int64_t n, int64_t k, uint64_t seed) {
    std::mt19937_64 rng(seed);
    // A as its own allocation of exactly m·k bytes: AddressSanitizer builds catch reads past a row.
    const auto a = random_codes(m * k, rng);
    const auto b = random_codes(n * k, rng);
    std::vector<int32_t> expected(static_cast<size_t>(m * n));
    int8_gemm_ref(m, n, k, a.data(), b.data(), expected.data(), n);
    const PackedI8 packed = repack_i8_panels(b.data(), n, k);
    for (const Int8Kernel * kernel : int8_kernels()) {
        std::vector<int32_t> got(static_cast<size_t>(m * n), -7777777);
        kernel->gemm(m, a.data(), k, packed, got.data(), n);
        ASSERT_EQ(expected, got) << kernel->name << " M=" << m << " N=" << n << " K=" << k << " seed=" << seed;
    }
}

}  // namespace

TEST(Int8Gemm, ReferenceMatchesHandComputedSums) {
    const int8_t a[] = {1, -2, 3, -128, 127, 0};   // 2 × 3
    const int8_t b[] = {-1, 0, 1, 127, -128, 2};   // 2 × 3
    int32_t c[4];
    int8_gemm_ref(2, 2, 3, a, b, c, 2);
    EXPECT_EQ(c[0], -1 + 0 + 3);
    EXPECT_EQ(c[1], 127 + 256 + 6);
    EXPECT_EQ(c[2], 128 + 0 + 0);
    EXPECT_EQ(c[3], -128 * 127 + 127 * -128 + 0);
}

TEST(Int8Gemm, PackingLayoutAndRowSums) {
    std::mt19937_64 rng(3);
    const int64_t n = 17, k = 6;  // two panels, the second with one row; k pads to 8
    const auto b = random_codes(n * k, rng);
    const PackedI8 p = repack_i8_panels(b.data(), n, k);
    ASSERT_EQ(p.groups(), 2);
    ASSERT_EQ(p.bytes.size(), static_cast<size_t>(2 * 2 * kInt8Nr * 4));
    for (int64_t j = 0; j < n; ++j) {
        int32_t sum = 0;
        for (int64_t kk = 0; kk < 8; ++kk) {
            const int8_t packed = p.panel(j / kInt8Nr)[(kk / 4) * kInt8Nr * 4 + (j % kInt8Nr) * 4 + kk % 4];
            EXPECT_EQ(packed, kk < k ? b[j * k + kk] : 0) << "row " << j << " k " << kk;
            if (kk < k) sum += b[j * k + kk];
        }
        EXPECT_EQ(p.row_sums[j], sum);
    }
    EXPECT_EQ(p.panel(1)[4], 0);  // panel rows past n are zero
}

TEST(Int8Gemm, EveryVariantMatchesReferenceOnEdgeShapes) {
    uint64_t seed = 300;
    for (int64_t k : {1, 2, 3, 4, 5, 63, 64, 65, 511, 512, 513}) {
        for (int64_t m : {1, 2, 3, 5, 6, 7, 13}) {
            for (int64_t n : {1, 15, 16, 17, 63, 64, 65, 130}) check_variants(m, n, k, seed++);
        }
    }
}

TEST(Int8Gemm, EveryVariantMatchesReferenceOnDeitShapes) {
    const int64_t shapes[][3] = {{197, 576, 192}, {197, 192, 768}, {197, 1536, 384}, {197, 384, 1536},
                                 {197, 2304, 768}, {197, 768, 3072}, {50, 288, 96}, {50, 96, 384}};
    for (const auto & s : shapes) check_variants(s[0], s[1], s[2], 11);
}

TEST(Int8Gemm, ExtremeCodesAtTheLargestK) {
    // −128·−128 and 127·−128 at every k: the largest sums the int32 accumulators must hold, including
    // the VNNI kernel's unsigned intermediate Σ (a + 128)·b.
    const int64_t k = kInt8GemmMaxK;
    const std::vector<int8_t> a(static_cast<size_t>(2 * k), -128), b(static_cast<size_t>(k), -128);
    std::vector<int8_t> a2 = a;
    std::fill(a2.begin() + k, a2.end(), 127);
    const PackedI8 packed = repack_i8_panels(b.data(), 1, k);
    for (const Int8Kernel * kernel : int8_kernels()) {
        int32_t c[2] = {0, 0};
        kernel->gemm(2, a2.data(), k, packed, c, 1);
        EXPECT_EQ(c[0], 16384 * k) << kernel->name;
        EXPECT_EQ(c[1], -16256 * k) << kernel->name;
    }
}

TEST(Int8Gemm, TheSelectedVariantIsOneTheCpuRuns) {
    const Int8Kernel & selected = int8_kernel();
    bool listed = false;
    for (const Int8Kernel * kernel : int8_kernels()) listed = listed || kernel == &selected;
    EXPECT_TRUE(listed) << selected.name;
}
