// Binary GEMM: every ISA tier this CPU runs, bit-exact against the reference (integer results, the
// scaled float epilogue and the sign-bit epilogue), over shapes that hit every edge of the tiles (M, N from 1 past the
// tile; K around word and vector boundaries, and the real DeiT K), plus the packing convention
// (sign(0) = +1, padding bits zero).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "runtime/kernels/bgemm.h"

using namespace bitvit::runtime;

namespace {

// Canonical rows × K random bits with zero padding.
std::vector<uint64_t> random_bits(int64_t rows, int64_t k, std::mt19937_64 & rng) {
    const int64_t kw = b1_words(k);
    std::vector<uint64_t> out(static_cast<size_t>(rows * kw));
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t w = 0; w < kw; ++w) {
            const int64_t valid = std::min<int64_t>(64, k - w * 64);
            const uint64_t mask = valid == 64 ? ~uint64_t{0} : (uint64_t{1} << valid) - 1;
            out[r * kw + w] = rng() & mask;
        }
    }
    return out;
}

// Σ a·b over ±1 values decoded bit by bit: independent of the popcount identity under test.
int32_t dot_by_decoding(const uint64_t * a, const uint64_t * b, int64_t k) {
    int32_t sum = 0;
    for (int64_t i = 0; i < k; ++i) {
        const int av = (a[i / 64] >> (i % 64)) & 1 ? -1 : 1;
        const int bv = (b[i / 64] >> (i % 64)) & 1 ? -1 : 1;
        sum += av * bv;
    }
    return sum;
}

// Both products of a tier (XNOR and AND–popcount) against their references, bit-exactly.
void check_tier(Isa isa, int64_t m, int64_t n, int64_t k, uint64_t seed) {
    std::mt19937_64 rng(seed);
    const auto a = random_bits(m, k, rng);
    const auto b = random_bits(n, k, rng);
    const BgemmKernel & kernel = bgemm_kernel(isa);
    const PackedB1 packed = repack_b1_panels(b.data(), n, k, kernel.nr);
    for (const bool xnor : {true, false}) {
        std::vector<int32_t> expected(static_cast<size_t>(m * n)), got(static_cast<size_t>(m * n), -7777777);
        (xnor ? b1b1_gemm_ref : and_popcount_gemm_ref)(m, n, k, a.data(), b.data(), expected.data(), n);
        (xnor ? kernel.gemm : kernel.and_gemm)(m, a.data(), b1_words(k), packed, got.data(), n);
        ASSERT_EQ(expected, got) << "isa=" << isa_name(isa) << (xnor ? " xnor" : " and") << " M=" << m << " N=" << n
                                 << " K=" << k << " seed=" << seed;
    }
    // The scaled epilogue, with and without bias, into rows wider than N (the spare column untouched).
    std::uniform_real_distribution<float> uniform(-2.0f, 2.0f);
    std::vector<float> row_scale(static_cast<size_t>(m)), col_scale(static_cast<size_t>(n)), bias(static_cast<size_t>(n));
    for (auto * v : {&row_scale, &col_scale, &bias}) {
        for (float & f : *v) f = uniform(rng);
    }
    std::vector<int32_t> dots(static_cast<size_t>(m * n));
    b1b1_gemm_ref(m, n, k, a.data(), b.data(), dots.data(), n);
    for (const bool with_bias : {false, true}) {
        const int64_t ldo = n + 1;
        std::vector<float> expected(static_cast<size_t>(m * ldo), -1.0f), reference(expected), got(expected);
        for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < n; ++j) {
                const float v = (row_scale[i] * col_scale[j]) * static_cast<float>(dots[i * n + j]);
                expected[i * ldo + j] = with_bias ? v + bias[j] : v;
            }
        }
        const ScaledOut ref_out{reference.data(), ldo, row_scale.data(), col_scale.data(), with_bias ? bias.data() : nullptr};
        b1b1_gemm_scaled_ref(m, n, k, a.data(), b.data(), ref_out);
        ScaledOut out = ref_out;
        out.out = got.data();
        kernel.gemm_scaled(m, a.data(), b1_words(k), packed, out);
        // Bit-exact: compared as integers, so −0 and +0 differ.
        auto bits = [](const std::vector<float> & v) {
            std::vector<uint32_t> u(v.size());
            std::memcpy(u.data(), v.data(), v.size() * sizeof(float));
            return u;
        };
        ASSERT_EQ(bits(expected), bits(reference)) << "reference, M=" << m << " N=" << n << " K=" << k;
        ASSERT_EQ(bits(expected), bits(got)) << "isa=" << isa_name(isa) << " scaled" << (with_bias ? " + bias" : "")
                                             << " M=" << m << " N=" << n << " K=" << k << " seed=" << seed;
        // The same values into the next sign quantizer's bits: their own signs, or GELU's (a floor
        // inside the values' range, so values fall below it, between it and 0, and above 0).
        const int64_t nw = b1_words(n);
        for (const bool through_gelu : {false, true}) {
            const SignOut sign_ref{nullptr, row_scale.data(), col_scale.data(), with_bias ? bias.data() : nullptr,
                                   through_gelu, -1.5f};
            std::vector<uint64_t> want(static_cast<size_t>(m * nw), 0), ref_bits(want.size(), ~uint64_t{0}),
                got_bits(want.size(), ~uint64_t{0});
            for (int64_t i = 0; i < m; ++i) {
                for (int64_t j = 0; j < n; ++j) {
                    const float v = expected[i * ldo + j];
                    const bool negative = through_gelu ? (v > -1.5f && v < 0.0f) : v < 0.0f;
                    if (negative) want[i * nw + j / 64] |= uint64_t{1} << (j % 64);
                }
            }
            SignOut o = sign_ref;
            o.bits = ref_bits.data();
            b1b1_gemm_signs_ref(m, n, k, a.data(), b.data(), o);
            ASSERT_EQ(want, ref_bits) << "signs reference, M=" << m << " N=" << n << " K=" << k;
            o.bits = got_bits.data();
            kernel.gemm_signs(m, a.data(), b1_words(k), packed, o);
            ASSERT_EQ(want, got_bits) << "isa=" << isa_name(isa) << (through_gelu ? " gelu signs" : " signs")
                                      << (with_bias ? " + bias" : "") << " M=" << m << " N=" << n << " K=" << k;
        }
    }
}

}  // namespace

TEST(Bgemm, ReferenceMatchesDecodedDotProducts) {
    std::mt19937_64 rng(1);
    for (int64_t k : {1, 63, 64, 65, 130}) {
        const auto a = random_bits(3, k, rng);
        const auto b = random_bits(5, k, rng);
        std::vector<int32_t> c(15);
        b1b1_gemm_ref(3, 5, k, a.data(), b.data(), c.data(), 5);
        for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 5; ++j)
                EXPECT_EQ(c[i * 5 + j], dot_by_decoding(&a[i * b1_words(k)], &b[j * b1_words(k)], k)) << "K=" << k;
    }
}

TEST(Bgemm, AndPopcountReferenceMatchesDecodedCounts) {
    std::mt19937_64 rng(2);
    for (int64_t k : {1, 63, 64, 65, 130}) {
        const auto a = random_bits(3, k, rng);
        const auto b = random_bits(4, k, rng);
        std::vector<int32_t> c(12);
        and_popcount_gemm_ref(3, 4, k, a.data(), b.data(), c.data(), 4);
        for (int64_t i = 0; i < 3; ++i) {
            for (int64_t j = 0; j < 4; ++j) {
                int32_t both = 0;
                for (int64_t p = 0; p < k; ++p) both += ((a[i * b1_words(k) + p / 64] & b[j * b1_words(k) + p / 64]) >> (p % 64)) & 1;
                EXPECT_EQ(c[i * 4 + j], both) << "k=" << k;
            }
        }
    }
}

TEST(Bgemm, PackingSignConventionAndPadding) {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float x[] = {-1.0f, 0.0f, -0.0f, 2.5f, -1e-30f, nan, 3.0f};
    uint64_t bits = ~uint64_t{0};
    pack_b1_rows_ref(x, 1, 7, 7, &bits);
    // Only the strictly negative values set their bit; 0, −0, NaN are +1; bits 7..63 are padding.
    EXPECT_EQ(bits, uint64_t{0b0010001});
    std::vector<float> many(2 * 70, -1.0f);
    std::vector<uint64_t> rows(4, 0);
    pack_b1_rows_ref(many.data(), 2, 65, 70, rows.data());  // ld 70 > K: the extra columns are not read
    EXPECT_EQ(rows[0], ~uint64_t{0});
    EXPECT_EQ(rows[1], uint64_t{1});  // one valid bit, 63 padding zeros
    EXPECT_EQ(rows[3], uint64_t{1});
}

// A column range of packed rows, at every offset and width around the word boundaries, against the
// bits one at a time; and the 64 × 64 bit transpose against its definition.
TEST(Bgemm, FieldsAndTransposeOfPackedBits) {
    std::mt19937_64 rng(21);
    std::vector<uint64_t> row(3);
    for (auto & w : row) w = rng();
    auto bit = [&](int64_t i) { return (row[static_cast<size_t>(i / 64)] >> (i % 64)) & 1; };
    for (int64_t start = 0; start < 128; ++start) {
        for (int64_t count = 1; count <= 64; ++count) {
            const uint64_t got = b1_field(row.data(), start, count);
            uint64_t want = 0;
            for (int64_t i = 0; i < count; ++i) want |= bit(start + i) << i;
            ASSERT_EQ(got, want) << "start " << start << " count " << count;
        }
    }
    uint64_t a[64], original[64];
    for (auto & w : a) w = rng();
    std::copy(a, a + 64, original);
    transpose_b1_64x64(a);
    for (int r = 0; r < 64; ++r) {
        for (int c = 0; c < 64; ++c) ASSERT_EQ((a[c] >> r) & 1, (original[r] >> c) & 1) << r << ", " << c;
    }
}

TEST(Bgemm, ExtremesAtTheLargestK) {
    // All-equal rows give +K, complementary rows −K: the accumulators hold the full range.
    const int64_t k = 3072 * 4;  // beyond DeiT-B's largest K (3072)
    for (Isa isa : supported_isas()) {
        const BgemmKernel & kernel = bgemm_kernel(isa);
        std::mt19937_64 rng(5);
        auto a = random_bits(1, k, rng);
        auto b = a;
        auto nb = a;
        for (int64_t w = 0; w < b1_words(k); ++w) nb[w] = ~a[w];
        b.insert(b.end(), nb.begin(), nb.end());
        const PackedB1 packed = repack_b1_panels(b.data(), 2, k, kernel.nr);
        int32_t c[2] = {0, 0};
        kernel.gemm(1, a.data(), b1_words(k), packed, c, 2);
        EXPECT_EQ(c[0], k) << isa_name(isa);
        EXPECT_EQ(c[1], -k) << isa_name(isa);
    }
}

TEST(Bgemm, EveryTierMatchesReferenceOnEdgeShapes) {
    uint64_t seed = 100;
    for (Isa isa : supported_isas()) {
        for (int64_t k : {1, 63, 64, 65, 127, 128, 129, 511, 512, 513}) {
            for (int64_t m : {1, 2, 3, 4, 5, 7, 9}) {
                for (int64_t n : {1, 3, 4, 7, 8, 9, 31, 32, 33, 65}) check_tier(isa, m, n, k, seed++);
            }
        }
    }
}

TEST(Bgemm, EveryTierPacksSignsLikeTheReference) {
    // Rows of odd lengths (row stride past K) with the values the convention singles out: −0 and NaN
    // are +1, the smallest negatives and −inf are −1.
    std::mt19937_64 rng(11);
    const float specials[] = {-0.0f, 0.0f, std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::denorm_min(),
                              std::numeric_limits<float>::denorm_min(), -std::numeric_limits<float>::infinity(),
                              std::numeric_limits<float>::infinity(), -1.0f, 1.0f};
    for (int64_t k : {1, 7, 8, 15, 16, 17, 63, 64, 65, 127, 384, 1536}) {
        const int64_t rows = 5, ld = k + 3;
        std::vector<float> x(static_cast<size_t>(rows * ld));
        for (float & v : x) v = specials[rng() % (sizeof(specials) / sizeof(float))];
        std::vector<uint64_t> expected(static_cast<size_t>(rows * b1_words(k)));
        pack_b1_rows_ref(x.data(), rows, k, ld, expected.data());
        for (Isa isa : supported_isas()) {
            std::vector<uint64_t> got(expected.size(), ~uint64_t{0});
            pack_sign_rows(bgemm_kernel(isa), x.data(), rows, k, ld, got.data());
            EXPECT_EQ(expected, got) << "isa=" << isa_name(isa) << " K=" << k;
        }
    }
}

TEST(Bgemm, EveryTierMatchesReferenceOnDeitShapes) {
    // (M tokens, N outputs, K inputs) of DeiT-Tiny/Small/Base linears and attention at 224 px,
    // and of the 28×28 micro model.
    const int64_t shapes[][3] = {{197, 576, 192},  {197, 192, 768},  {197, 1536, 384}, {197, 384, 1536},
                                 {197, 2304, 768}, {197, 768, 3072}, {197, 197, 64},   {50, 288, 96},
                                 {50, 96, 384}};
    for (Isa isa : supported_isas()) {
        for (const auto & s : shapes) check_tier(isa, s[0], s[1], s[2], 7);
    }
}

TEST(Bgemm, TiersTheCpuLacksAreRefused) {
    const auto best = best_supported_isa();
    if (best == Isa::avx512vpopcntdq) GTEST_SKIP() << "this CPU runs every tier";
    EXPECT_THROW(bgemm_kernel(Isa::avx512vpopcntdq), std::invalid_argument);
}
