// batched_matmul (src/train/batched-matmul.h): values and both gradients equal torch::matmul's on the
// strided views attention makes (permuted heads, transposed keys, expanded batches), on odd sizes,
// serially and split over threads; pairs it does not take give torch::matmul's results unchanged.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "train/batched-matmul.h"

using namespace bitvit;

namespace {

// Float sums of K products in another order: relative error of order K·2^-24 of the largest |term|
// sums; 1e-5 of the largest output covers K up to a few hundred with margin.
void expect_close(const torch::Tensor & got, const torch::Tensor & want, const std::string & what) {
    ASSERT_EQ(got.sizes(), want.sizes()) << what;
    const double scale = std::max(1.0, want.abs().max().item<double>());
    EXPECT_LE((got - want).abs().max().item<double>(), 1e-5 * scale) << what;
}

// Compares batched_matmul with torch::matmul on a and b (tensors that need gradients, views kept as
// they are): values, and both gradients for the same random upstream gradient.
void check_pair(const torch::Tensor & a, const torch::Tensor & b, const std::string & what) {
    const torch::Tensor got = batched_matmul(a, b), want = torch::matmul(a, b);
    expect_close(got, want, what + ": values");
    const torch::Tensor g = torch::randn(want.sizes());
    const auto got_grads = torch::autograd::grad({got}, {a, b}, {g});
    const auto want_grads = torch::autograd::grad({want}, {a, b}, {g});
    expect_close(got_grads[0], want_grads[0], what + ": gradient of a");
    expect_close(got_grads[1], want_grads[1], what + ": gradient of b");
}

torch::Tensor leaf(std::vector<int64_t> sizes) { return torch::randn(sizes).requires_grad_(true); }

}  // namespace

TEST(BatchedMatmul, AttentionViewsMatchTorchMatmul) {
    torch::manual_seed(3);
    // qkv [B, N, 3, H, d] -> q, k, v [B, H, N, d] as attention takes them: no copy, row stride 3·H·d.
    const int64_t B = 3, N = 13, H = 2, d = 5;
    const auto qkv = leaf({B, N, 3, H, d}).permute({2, 0, 3, 1, 4});
    const auto q = qkv[0], k = qkv[1], v = qkv[2];
    ASSERT_TRUE(batched_matmul_uses_blas(q, k.transpose(-2, -1)));
    check_pair(q, k.transpose(-2, -1), "q·kᵀ");
    const auto probs = torch::softmax(leaf({B, H, N, N}), -1);
    check_pair(probs, v, "probs·v");
    check_pair(k.transpose(-2, -1), q, "kᵀ·q (both operands column-major)");
}

TEST(BatchedMatmul, OddShapesAndLayouts) {
    torch::manual_seed(5);
    // Sizes 1 along every axis, a prime K, an expanded (stride 0) batch, a matrix with no unit stride.
    check_pair(leaf({4, 1, 7}), leaf({4, 7, 1}), "1 × 7 · 7 × 1");
    check_pair(leaf({2, 3, 9, 1}), leaf({2, 3, 1, 11}), "K = 1");
    check_pair(leaf({5, 31, 67}), leaf({5, 67, 29}), "prime sizes");
    check_pair(leaf({1, 6, 8}).expand({4, 6, 8}), leaf({4, 8, 3}), "expanded batch");
    const auto every_other = leaf({3, 10, 16}).slice(2, 0, 16, 2);  // strides (160, 16, 2)
    check_pair(every_other, leaf({3, 8, 4}), "no unit stride (copied)");
}

TEST(BatchedMatmul, ManyThreadsGiveTheSameValues) {
    // Small matrices are split over LibTorch's threads; every matrix is still one BLAS call, so the
    // values do not depend on the split.
    torch::manual_seed(7);
    const auto a = torch::randn({64, 4, 17, 8}), b = torch::randn({64, 4, 8, 17});
    const int threads = torch::get_num_threads();
    torch::set_num_threads(1);
    const torch::Tensor serial = batched_matmul(a, b);
    torch::set_num_threads(4);
    const torch::Tensor split = batched_matmul(a, b);
    torch::set_num_threads(threads);
    EXPECT_TRUE(torch::equal(serial, split));
    expect_close(split, torch::matmul(a, b), "split over threads");
}

TEST(BatchedMatmul, OtherPairsAreTorchMatmul) {
    torch::manual_seed(11);
    // Broadcast batch sizes, 2-D operands and doubles are not taken; their results are matmul's.
    const auto a = torch::randn({2, 1, 5, 6}), b = torch::randn({2, 3, 6, 4});
    EXPECT_FALSE(batched_matmul_uses_blas(a, b));
    EXPECT_TRUE(torch::equal(batched_matmul(a, b), torch::matmul(a, b)));
    const auto m = torch::randn({5, 6}), n = torch::randn({6, 2});
    EXPECT_FALSE(batched_matmul_uses_blas(m, n));
    const auto ad = a.to(torch::kDouble), bd = torch::randn({2, 1, 6, 4}, torch::kDouble);
    EXPECT_FALSE(batched_matmul_uses_blas(ad, bd));
    EXPECT_TRUE(torch::equal(batched_matmul(ad, bd), torch::matmul(ad, bd)));
    // A size mismatch is torch::matmul's own error, not a crash.
    EXPECT_THROW(batched_matmul(torch::randn({2, 5, 6}), torch::randn({2, 5, 6})), c10::Error);
}
