// Runtime operands and their products: every encoding's product (bit-wise, integer, W1A32, FP32)
// against the plain float product of the decoded values, which the test computes itself; the plane
// kernel bit-exactly against decoded integer sums; validation of malformed operands.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "runtime/kernels/float-gemm.h"
#include "runtime/kernels/int8-gemm.h"
#include "runtime/kernels/plane-gemm.h"
#include "runtime/kernels/activations.h"
#include "runtime/model.h"
#include "runtime/operand.h"

using namespace bitvit::runtime;

namespace {

enum class PlaneKind { pm1, zero_one, ternary };

// A random plane of rows × k values of the given kind, canonical (padding zero, signs inside masks).
Plane random_plane(PlaneKind kind, int64_t rows, int64_t k, std::mt19937_64 & rng) {
    const int64_t kw = b1_words(k);
    Plane p;
    auto bits = [&] {
        std::vector<uint64_t> v(static_cast<size_t>(rows * kw));
        for (int64_t r = 0; r < rows; ++r) {
            for (int64_t w = 0; w < kw; ++w) {
                const int64_t valid = std::min<int64_t>(64, k - w * 64);
                v[r * kw + w] = rng() & (valid == 64 ? ~uint64_t{0} : (uint64_t{1} << valid) - 1);
            }
        }
        return v;
    };
    if (kind != PlaneKind::zero_one) p.sign = bits();
    if (kind != PlaneKind::pm1) p.mask = bits();
    if (kind == PlaneKind::ternary) {
        for (size_t i = 0; i < p.sign.size(); ++i) p.sign[i] &= p.mask[i];
    }
    std::uniform_real_distribution<float> scale(0.1f, 2.0f);
    for (int64_t r = 0; r < rows; ++r) p.scale.push_back(scale(rng));
    return p;
}

// The value of plane p at (r, j), decoded one bit at a time.
int plane_value(const Plane & p, int64_t k, int64_t r, int64_t j) {
    const int64_t kw = b1_words(k);
    const auto bit = [&](const std::vector<uint64_t> & v) { return (v[r * kw + j / 64] >> (j % 64)) & 1; };
    if (!p.mask.empty() && !bit(p.mask)) return 0;
    return !p.sign.empty() && bit(p.sign) ? -1 : 1;
}

Operand planes_operand(std::vector<Plane> planes, int64_t rows, int64_t k, std::vector<float> offset = {}) {
    Operand op;
    op.kind = Operand::Kind::planes;
    op.rows = rows;
    op.k = k;
    op.planes = std::move(planes);
    op.offset = std::move(offset);
    return op;
}

// Σ_j x[i][j]·w[n][j] in double over decoded values.
std::vector<double> decoded_product(const Operand & x, const Operand & w) {
    const std::vector<float> a = x.decode(), b = w.decode();
    std::vector<double> out(static_cast<size_t>(x.rows * w.rows), 0.0);
    for (int64_t i = 0; i < x.rows; ++i) {
        for (int64_t n = 0; n < w.rows; ++n) {
            for (int64_t j = 0; j < x.k; ++j) out[i * w.rows + n] += double{a[i * x.k + j]} * b[n * x.k + j];
        }
    }
    return out;
}

void expect_product_close(const Operand & x, const Operand & w, const char * what) {
    std::vector<float> got(static_cast<size_t>(x.rows * w.rows));
    matmul(x, w, got.data());
    const std::vector<double> want = decoded_product(x, w);
    for (size_t i = 0; i < got.size(); ++i) {
        ASSERT_NEAR(got[i], want[i], 1e-4 * (1 + std::fabs(want[i]) + x.k)) << what << " k=" << x.k << " at " << i;
    }
}

constexpr int64_t kOddK[] = {1, 63, 64, 65, 130, 511, 512, 513};

}  // namespace

TEST(PlaneGemm, EveryPlanePairingMatchesDecodedSums) {
    std::mt19937_64 rng(3);
    const PlaneKind kinds[] = {PlaneKind::pm1, PlaneKind::zero_one, PlaneKind::ternary};
    for (int64_t k : kOddK) {
        for (PlaneKind kx : kinds) {
            for (PlaneKind kw : kinds) {
                const int64_t m = 3, n = 5;
                const Plane x = random_plane(kx, m, k, rng), w = random_plane(kw, n, k, rng);
                std::vector<int32_t> c(static_cast<size_t>(m * n));
                PlaneBits xb{x.sign.empty() ? nullptr : x.sign.data(), x.mask.empty() ? nullptr : x.mask.data()};
                PlaneBits wb{w.sign.empty() ? nullptr : w.sign.data(), w.mask.empty() ? nullptr : w.mask.data()};
                plane_gemm_ref(m, n, k, xb, wb, c.data(), n);
                for (int64_t i = 0; i < m; ++i) {
                    for (int64_t j = 0; j < n; ++j) {
                        int32_t want = 0;
                        for (int64_t p = 0; p < k; ++p) want += plane_value(x, k, i, p) * plane_value(w, k, j, p);
                        ASSERT_EQ(c[i * n + j], want) << "k=" << k << " kinds " << int(kx) << "," << int(kw);
                    }
                }
                std::vector<int32_t> sums(static_cast<size_t>(m));
                plane_row_sums(m, k, xb, sums.data());
                for (int64_t i = 0; i < m; ++i) {
                    int32_t want = 0;
                    for (int64_t p = 0; p < k; ++p) want += plane_value(x, k, i, p);
                    ASSERT_EQ(sums[i], want);
                }
            }
        }
    }
}

TEST(Matmul, PlanesWithOffsetsAndSeveralPlanesMatchDecodedProduct) {
    std::mt19937_64 rng(5);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (int64_t k : kOddK) {
        // x: three GSB-like planes plus an offset per row; w: one ±1 plane (XNOR path) or a ternary one.
        Operand x = planes_operand({random_plane(PlaneKind::pm1, 7, k, rng), random_plane(PlaneKind::ternary, 7, k, rng),
                                    random_plane(PlaneKind::zero_one, 7, k, rng)},
                                   7, k, {u(rng), u(rng), u(rng), u(rng), u(rng), u(rng), u(rng)});
        Operand w_pm1 = planes_operand({random_plane(PlaneKind::pm1, 9, k, rng)}, 9, k);
        std::vector<float> w_offset(9);
        for (float & o : w_offset) o = u(rng);
        Operand w_ternary = planes_operand({random_plane(PlaneKind::ternary, 9, k, rng)}, 9, k, w_offset);
        expect_product_close(x, w_pm1, "planes x pm1 (unprepared)");
        prepare_weight(w_pm1);
        expect_product_close(x, w_pm1, "planes x pm1 (prepared)");
        expect_product_close(x, w_ternary, "planes x ternary with offsets");
        expect_product_close(x, planes_operand({random_plane(PlaneKind::zero_one, 9, k, rng)}, 9, k), "planes x {0,1}");
        Operand x_pm1 = planes_operand({random_plane(PlaneKind::pm1, 7, k, rng)}, 7, k);
        expect_product_close(x_pm1, w_pm1, "pm1 x pm1 (XNOR kernel)");
    }
}

TEST(Matmul, Int8FloatAndMixedPairingsMatchDecodedProduct) {
    std::mt19937_64 rng(7);
    std::uniform_int_distribution<int> code(-128, 127), zero(-20, 20);
    std::uniform_real_distribution<float> u(-2.0f, 2.0f), s(0.01f, 0.1f);
    for (int64_t k : kOddK) {
        auto int8_operand = [&](int64_t rows) {
            Operand op;
            op.kind = Operand::Kind::int8;
            op.rows = rows;
            op.k = k;
            for (int64_t i = 0; i < rows * k; ++i) op.codes.push_back(static_cast<int8_t>(code(rng)));
            for (int64_t r = 0; r < rows; ++r) {
                op.scale.push_back(s(rng));
                op.zero.push_back(zero(rng));
            }
            return op;
        };
        auto f32_operand = [&](int64_t rows) {
            Operand op;
            op.rows = rows;
            op.k = k;
            for (int64_t i = 0; i < rows * k; ++i) op.values.push_back(u(rng));
            return op;
        };
        const Operand xi = int8_operand(4), wi = int8_operand(6), xf = f32_operand(4), wf = f32_operand(6);
        const Operand wp = planes_operand({random_plane(PlaneKind::ternary, 6, k, rng)}, 6, k, {0.1f, -0.2f, 0.3f, 0, 0, 1});
        expect_product_close(xi, wi, "int8 x int8");
        expect_product_close(xf, wf, "f32 x f32");
        expect_product_close(xf, wp, "f32 x planes (W1A32)");
        expect_product_close(xi, wp, "int8 x planes (decoded)");
        for (const PlaneKind kind : {PlaneKind::ternary, PlaneKind::pm1}) {  // TerViT: one plane, no offset
            Operand w1 = planes_operand({random_plane(kind, 6, k, rng)}, 6, k);
            prepare_weight(w1, LayerInputs::int8);
            ASSERT_FALSE(w1.codes_packed.bytes.empty());
            expect_product_close(xi, w1, "int8 x one plane (int8 kernel)");
        }
        expect_product_close(planes_operand({random_plane(PlaneKind::pm1, 4, k, rng)}, 4, k), wf, "planes x f32 (decoded)");
    }
}

// Where the pairing is integer (planes × planes, int8 × int8, int8 × one plane) and every scale is
// a power of two and every offset a multiple of 1/8, each product is an integer count times exact
// factors: the runtime's float result must equal the exact sum, not come close to it.
TEST(Matmul, IntegerPairingsAreExact) {
    std::mt19937_64 rng(13);
    auto exact_scales = [&](Operand & op) {
        for (auto & plane : op.planes) {
            for (float & s : plane.scale) s = std::ldexp(1.0f, static_cast<int>(rng() % 5) - 2);
        }
        for (float & o : op.offset) o = static_cast<float>(static_cast<int>(rng() % 17) - 8) / 8;
        for (float & s : op.scale) s = std::ldexp(1.0f, static_cast<int>(rng() % 5) - 2);
    };
    auto expect_exact = [](const Operand & x, const Operand & w, const char * what) {
        std::vector<float> got(static_cast<size_t>(x.rows * w.rows));
        matmul(x, w, got.data());
        const std::vector<double> want = decoded_product(x, w);
        for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(static_cast<double>(got[i]), want[i]) << what << " k=" << x.k << " at " << i;
    };
    std::uniform_int_distribution<int> code(-128, 127), zero(-20, 20);
    for (int64_t k : kOddK) {
        Operand x = planes_operand({random_plane(PlaneKind::pm1, 7, k, rng), random_plane(PlaneKind::ternary, 7, k, rng)}, 7, k,
                                   std::vector<float>(7));
        Operand x_pm1 = planes_operand({random_plane(PlaneKind::pm1, 7, k, rng)}, 7, k);
        Operand x_01 = planes_operand({random_plane(PlaneKind::zero_one, 7, k, rng)}, 7, k);
        Operand w_pm1 = planes_operand({random_plane(PlaneKind::pm1, 9, k, rng)}, 9, k);
        Operand w_ternary = planes_operand({random_plane(PlaneKind::ternary, 9, k, rng)}, 9, k, std::vector<float>(9));
        for (Operand * op : {&x, &x_pm1, &x_01, &w_pm1, &w_ternary}) exact_scales(*op);
        expect_exact(x, w_ternary, "planes with offsets x ternary with offsets");
        expect_exact(x_01, w_pm1, "{0,1} x pm1 (SAB map times v)");
        expect_exact(x_pm1, w_pm1, "pm1 x pm1 (generic)");
        prepare_weight(w_pm1);
        expect_exact(x_pm1, w_pm1, "pm1 x pm1 (XNOR kernel)");
        expect_exact(x, w_pm1, "planes x pm1 (prepared)");
        Operand xi;
        xi.kind = Operand::Kind::int8;
        xi.rows = 4;
        xi.k = k;
        for (int64_t i = 0; i < 4 * k; ++i) xi.codes.push_back(static_cast<int8_t>(code(rng)));
        for (int r = 0; r < 4; ++r) {
            xi.scale.push_back(1.0f);
            xi.zero.push_back(zero(rng));
        }
        exact_scales(xi);
        Operand wi = xi;
        for (auto & c : wi.codes) c = static_cast<int8_t>(code(rng));
        expect_exact(xi, wi, "int8 x int8");
        Operand w1 = planes_operand({random_plane(PlaneKind::ternary, 6, k, rng)}, 6, k);
        exact_scales(w1);
        prepare_weight(w1, LayerInputs::int8);
        expect_exact(xi, w1, "int8 x ternary plane (TerViT, int8 kernel)");
    }
}

TEST(Matmul, BiasIsAddedAfterTheProductBitForBit) {
    // A fused bias (one plane pair, int8) and a separate pass (offsets, several planes, f32) must
    // both give exactly product + bias, the order training uses.
    std::mt19937_64 rng(21);
    std::uniform_real_distribution<float> u(-2.0f, 2.0f);
    const int64_t k = 130, m = 5, n = 7;
    std::vector<float> bias(n);
    for (float & b : bias) b = u(rng);
    Operand xi;
    xi.kind = Operand::Kind::int8;
    xi.rows = m;
    xi.k = k;
    for (int64_t i = 0; i < m * k; ++i) xi.codes.push_back(static_cast<int8_t>(rng() % 256 - 128));
    xi.scale.assign(m, 0.05f);
    xi.zero.assign(m, 3);
    Operand wi = xi;
    wi.rows = n;
    wi.codes.resize(static_cast<size_t>(n * k));
    wi.scale.assign(n, 0.02f);
    wi.zero.assign(n, -1);
    Operand xf;  // f32 activations (W1A32)
    xf.rows = m;
    xf.k = k;
    for (int64_t i = 0; i < m * k; ++i) xf.values.push_back(u(rng));
    const std::pair<Operand, Operand> pairs[] = {
        {planes_operand({random_plane(PlaneKind::pm1, m, k, rng)}, m, k), planes_operand({random_plane(PlaneKind::pm1, n, k, rng)}, n, k)},
        {planes_operand({random_plane(PlaneKind::pm1, m, k, rng), random_plane(PlaneKind::zero_one, m, k, rng)}, m, k,
                        std::vector<float>(m, 0.5f)),
         planes_operand({random_plane(PlaneKind::ternary, n, k, rng)}, n, k)},
        {xi, wi},
        {xf, planes_operand({random_plane(PlaneKind::pm1, n, k, rng)}, n, k)},
    };
    for (const auto & [x, w] : pairs) {
        std::vector<float> want(static_cast<size_t>(m * n)), got(want.size());
        matmul(x, w, want.data());
        for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < n; ++j) want[i * n + j] += bias[j];
        }
        matmul(x, w, got.data(), bias.data());
        EXPECT_EQ(got, want) << "x kind " << static_cast<int>(x.kind) << ", " << x.planes.size() << " planes";
    }
}

TEST(Matmul, Int8ProductIsExactAtTheExtremes) {
    // Every code at the most negative value: Σ (−128)·(−128) over k, the largest magnitude there is,
    // through matmul and the selected int8 kernel.
    const int64_t k = 3072;
    Operand x, w;
    for (Operand * op : {&x, &w}) {
        op->kind = Operand::Kind::int8;
        op->rows = 1;
        op->k = k;
        op->codes.assign(k, -128);
        op->scale = {1.0f};
        op->zero = {0};
    }
    prepare_weight(w);
    float c = 0.0f;
    matmul(x, w, &c);
    EXPECT_EQ(c, 128.0f * 128.0f * static_cast<float>(k));  // 3·2^24: exact in float
}

// W1A32 on the FP32 GEMM (weights expanded from transposed bits) gives the sign-select reference's
// sums bit for bit, on every tier, for ±1, {0, 1} and ternary planes over odd shapes; so does the
// whole matmul with a weight prepared for f32 inputs.
TEST(F32PlaneGemm, EveryTierMatchesTheSignSelectReferenceBitForBit) {
    std::mt19937_64 rng(13);
    std::uniform_real_distribution<float> u(-3.0f, 3.0f);
    auto bit_patterns = [](const std::vector<float> & v) {
        std::vector<uint32_t> b(v.size());
        std::memcpy(b.data(), v.data(), v.size() * sizeof(float));
        return b;
    };
    for (const PlaneKind kind : {PlaneKind::pm1, PlaneKind::zero_one, PlaneKind::ternary}) {
        for (int64_t n : {1, 7, 8, 9, 63, 64, 65, 130}) {
            for (int64_t k : {1, 63, 64, 65, 130}) {
                const int64_t m = n % 2 ? 5 : 1;
                std::vector<float> a(static_cast<size_t>(m * k));
                for (float & v : a) v = u(rng);
                Operand w = planes_operand({random_plane(kind, n, k, rng)}, n, k);
                const Plane & p = w.planes[0];
                std::vector<float> want(static_cast<size_t>(m * n));
                f32_plane_gemm_ref(m, n, k, a.data(), PlaneBits{p.sign.empty() ? nullptr : p.sign.data(),
                                                                p.mask.empty() ? nullptr : p.mask.data()},
                                   want.data(), n);
                Operand unprepared = w;
                prepare_weight(w, LayerInputs::f32);
                const Plane & prepared = w.planes[0];
                ASSERT_EQ(prepared.sign_t.empty(), p.sign.empty());
                ASSERT_EQ(prepared.mask_t.empty(), p.mask.empty());
                const PlaneBits wt{prepared.sign_t.empty() ? nullptr : prepared.sign_t.data(),
                                   prepared.mask_t.empty() ? nullptr : prepared.mask_t.data()};
                for (Isa isa : supported_isas()) {
                    std::vector<float> got(want.size(), -7.0f);
                    f32_plane_gemm(isa, m, n, k, a.data(), wt, got.data(), n);
                    ASSERT_EQ(bit_patterns(got), bit_patterns(want)) << isa_name(isa) << " " << m << "x" << n << "x" << k;
                }
                Operand x;
                x.rows = m;
                x.k = k;
                x.values = a;
                std::vector<float> fast(want.size()), slow(want.size());
                matmul(x, w, fast.data());
                matmul(x, unprepared, slow.data());
                ASSERT_EQ(bit_patterns(fast), bit_patterns(slow)) << m << "x" << n << "x" << k;
            }
        }
    }
}

// A linear layer whose outputs go straight to a sign quantizer gives the bits of the float path —
// forward(), then GELU's sign (or the value's own) — whether the XNOR kernel makes them in its
// epilogue or another product's floats are packed; and the next layer takes those bits as the
// sign quantizer would have made them from floats.
TEST(Linear, SignOutputsAreTheFloatPathsSigns) {
    std::mt19937_64 rng(21);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    const int64_t tokens = 37, in = 100, out = 130, words = b1_words(out);
    std::vector<float> x(static_cast<size_t>(tokens * in));
    for (float & v : x) v = u(rng);
    for (const char * input : {"sign", ""}) {  // XNOR epilogue; W1A32 floats, then packed
        Linear fc;
        fc.weight = planes_operand({random_plane(PlaneKind::pm1, out, in, rng)}, out, in);
        for (float & s : fc.weight.planes[0].scale) s = 0.01f + 0.1f * std::fabs(u(rng));
        prepare_weight(fc.weight, *input ? LayerInputs::planes : LayerInputs::f32);
        for (int64_t j = 0; j < out; ++j) fc.bias.push_back(3.0f * u(rng));
        fc.input = ActQuantizer::named(input);
        std::vector<float> y(static_cast<size_t>(tokens * out));
        fc.forward(x.data(), tokens, y.data());
        for (const bool through_gelu : {false, true}) {
            std::vector<uint64_t> want(static_cast<size_t>(tokens * words), 0);
            for (int64_t t = 0; t < tokens; ++t) {
                for (int64_t j = 0; j < out; ++j) {
                    const float v = y[t * out + j];
                    const bool negative = through_gelu ? gelu_sign(v, gelu_negative_floor()) < 0 : v < 0.0f;
                    if (negative) want[t * words + j / 64] |= uint64_t{1} << (j % 64);
                }
            }
            for (int threads : {1, 2}) {
                std::vector<uint64_t> got(want.size(), ~uint64_t{0});
                fc.forward_signs(x.data(), tokens, got.data(), through_gelu, threads);
                ASSERT_EQ(got, want) << "input '" << input << "'" << (through_gelu ? " through GELU" : "") << ", threads " << threads;
            }
        }
        // The next layer from those bits equals it from the ±1 floats they stand for.
        std::vector<uint64_t> bits(static_cast<size_t>(tokens * words));
        fc.forward_signs(x.data(), tokens, bits.data(), false);
        std::vector<float> pm1(y.size());
        for (size_t i = 0; i < y.size(); ++i) pm1[i] = y[i] < 0.0f ? -1.0f : 1.0f;
        Linear next;
        next.weight = planes_operand({random_plane(PlaneKind::pm1, 9, out, rng)}, 9, out);
        prepare_weight(next.weight);
        next.input = ActQuantizer::named("sign");
        std::vector<float> from_floats(static_cast<size_t>(tokens * 9)), from_bits(from_floats.size());
        next.forward(pm1.data(), tokens, from_floats.data());
        next.forward_from_signs(bits.data(), tokens, from_bits.data());
        ASSERT_EQ(from_bits, from_floats) << "input '" << input << "'";
    }
}

// Every edge path of the blocked kernel: each row count of an edge block (m mod 6 and mod 4 all
// occur), and last columns of the constant half and quarter widths, both, or neither (n mod 64).
TEST(Sgemm, EveryTierMatchesTheReferenceBitForBit) {
    std::mt19937_64 rng(9);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (int64_t m : {1, 2, 3, 4, 5, 6, 7, 50}) {
        for (int64_t n : {1, 16, 32, 48, 63, 64, 65, 96, 112, 127, 128, 129, 192}) {
            for (int64_t k : {1, 7, 64, 97}) {
                std::vector<float> a(static_cast<size_t>(m * k)), bt(static_cast<size_t>(k * n));
                for (float & v : a) v = u(rng);
                for (float & v : bt) v = u(rng);
                std::vector<float> want(static_cast<size_t>(m * n));
                sgemm_ref(m, n, k, a.data(), bt.data(), want.data(), n);
                for (Isa isa : supported_isas()) {
                    std::vector<float> got(want.size(), -1.0f);
                    sgemm(isa, m, n, k, a.data(), bt.data(), got.data(), n);
                    ASSERT_EQ(got, want) << isa_name(isa) << " " << m << "x" << n << "x" << k;
                }
            }
        }
    }
}

TEST(Operand, ValidationNamesWhatIsWrong) {
    std::mt19937_64 rng(11);
    const int64_t k = 65;
    auto expect_rejected = [](const Operand & op, const std::string & needle) {
        try {
            validate_operand(op, "weight blocks.0.attn.qkv.weight");
            FAIL() << "accepted an operand with " << needle;
        } catch (const std::invalid_argument & e) {
            EXPECT_NE(std::string(e.what()).find("blocks.0.attn.qkv.weight"), std::string::npos) << e.what();
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        }
    };
    Operand good = planes_operand({random_plane(PlaneKind::ternary, 2, k, rng)}, 2, k);
    EXPECT_NO_THROW(validate_operand(good, "ok"));
    Operand padding = good;
    padding.planes[0].mask[1] |= uint64_t{1} << 5;  // bit 69 of row 0 (k = 65)
    expect_rejected(padding, "padding");
    Operand outside = good;
    outside.planes[0].sign[0] |= ~outside.planes[0].mask[0] & 1;
    outside.planes[0].mask[0] &= ~uint64_t{1};
    outside.planes[0].sign[0] |= 1;
    expect_rejected(outside, "outside the mask");
    Operand nan_scale = good;
    nan_scale.planes[0].scale[1] = std::nanf("");
    expect_rejected(nan_scale, "non-finite");
    Operand short_bits = good;
    short_bits.planes[0].sign.pop_back();
    expect_rejected(short_bits, "bit count");
}
