#include "train/batched-matmul.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <climits>
#include <vector>

#ifdef BITVIT_HAVE_BLAS
// The Fortran BLAS interface (column-major), which every BLAS LibTorch links against provides.
extern "C" void sgemm_(const char * transa, const char * transb, const int * m, const int * n, const int * k, const float * alpha,
                       const float * a, const int * lda, const float * b, const int * ldb, const float * beta, float * c,
                       const int * ldc);
constexpr bool kHaveBlas = true;
#else
constexpr bool kHaveBlas = false;
#endif

namespace bitvit {

namespace {

// How BLAS reads one row-major matrix view [rows, cols] with strides (row_stride, col_stride): as
// itself with leading dimension ld ('N', unit column stride) or as the transpose of a column-major
// matrix ('T', unit row stride). A stride along a dimension of size 1 is never used.
struct BlasMatrix {
    bool ok = false;
    char trans = 'N';
    int64_t ld = 0;
};

BlasMatrix blas_matrix(int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride) {
    if (rows == 1) row_stride = std::max<int64_t>(cols, 1);
    if (cols == 1) col_stride = 1;
    if (col_stride == 1 && row_stride >= std::max<int64_t>(cols, 1)) return {true, 'N', row_stride};
    if (row_stride == 1 && col_stride >= std::max<int64_t>(rows, 1)) return {true, 'T', col_stride};
    return {};
}

BlasMatrix blas_matrix(const torch::Tensor & t) {
    const int64_t d = t.dim();
    return blas_matrix(t.size(d - 2), t.size(d - 1), t.stride(d - 2), t.stride(d - 1));
}

// The element offset of each matrix of t [batch..., rows, cols], batch index in row-major order.
std::vector<int64_t> matrix_offsets(const torch::Tensor & t) {
    std::vector<int64_t> offsets = {0};
    for (int64_t dim = 0; dim < t.dim() - 2; ++dim) {
        std::vector<int64_t> next;
        next.reserve(offsets.size() * static_cast<size_t>(t.size(dim)));
        for (int64_t base : offsets) {
            for (int64_t i = 0; i < t.size(dim); ++i) next.push_back(base + i * t.stride(dim));
        }
        offsets = std::move(next);
    }
    return offsets;
}

bool fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

// Whether the pair is one this file computes, before any copy: float32, CPU, strided, equal batch sizes.
bool qualifies(const torch::Tensor & a, const torch::Tensor & b) {
    if (!kHaveBlas || a.dim() < 3 || a.dim() != b.dim()) return false;
    for (const auto & t : {a, b}) {
        if (!t.device().is_cpu() || t.scalar_type() != torch::kFloat || t.layout() != torch::kStrided) return false;
    }
    const int64_t d = a.dim();
    if (a.sizes().slice(0, d - 2) != b.sizes().slice(0, d - 2) || a.size(d - 1) != b.size(d - 2)) return false;
    return fits_int(a.size(d - 2)) && fits_int(b.size(d - 1)) && fits_int(a.size(d - 1));
}

// A BLAS-readable form of t: itself, or a contiguous copy where neither of its last strides is 1.
torch::Tensor readable(const torch::Tensor & t) {
    const BlasMatrix m = blas_matrix(t);
    return m.ok && fits_int(m.ld) ? t : t.contiguous();
}

// c = a · b for every matrix, no autograd. a [..., M, K], b [..., K, N] (qualifies()).
torch::Tensor product(const torch::Tensor & a_in, const torch::Tensor & b_in) {
    const torch::Tensor a = readable(a_in), b = readable(b_in);
    const int64_t d = a.dim(), M = a.size(d - 2), K = a.size(d - 1), N = b.size(d - 1);
    std::vector<int64_t> shape(a.sizes().begin(), a.sizes().end());
    shape.back() = N;
    torch::Tensor c = torch::empty(shape, a.options());
    if (c.numel() == 0) return c;
    if (K == 0) return c.zero_();
#ifdef BITVIT_HAVE_BLAS
    const BlasMatrix am = blas_matrix(a), bm = blas_matrix(b);
    const std::vector<int64_t> a_off = matrix_offsets(a), b_off = matrix_offsets(b);
    const auto batch = static_cast<int64_t>(a_off.size());
    const float * pa = a.data_ptr<float>(), *pb = b.data_ptr<float>();
    float * pc = c.data_ptr<float>();
    // Row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ: BLAS gets b first, with (N, M) swapped.
    const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
    const int lda = static_cast<int>(bm.ld), ldb = static_cast<int>(am.ld), ldc = static_cast<int>(N);
    const float one = 1.0f, zero = 0.0f;
    auto run = [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
            sgemm_(&bm.trans, &am.trans, &m, &n, &k, &one, pb + b_off[i], &lda, pa + a_off[i], &ldb, &zero, pc + i * M * N, &ldc);
        }
    };
    // OpenBLAS runs a product below 4·65536 multiply-adds on the calling thread: such matrices are
    // split over LibTorch's threads (a task gets at least 64 K multiply-adds); larger ones are
    // threaded inside BLAS, one after the other, as LibTorch's own bmm does.
    const int64_t macs = M * N * K;
    if (macs < 4 * 65536) {
        at::parallel_for(0, batch, std::max<int64_t>(1, 65536 / macs), run);
    } else {
        run(0, batch);
    }
#endif
    return c;
}

struct BatchedMatmul : torch::autograd::Function<BatchedMatmul> {
    static torch::Tensor forward(torch::autograd::AutogradContext * ctx, const torch::Tensor & a, const torch::Tensor & b) {
        ctx->save_for_backward({a, b});
        return product(a, b);
    }

    // dL/da = g · bᵀ [..., M, K], dL/db = aᵀ · g [..., K, N].
    static torch::autograd::variable_list backward(torch::autograd::AutogradContext * ctx, torch::autograd::variable_list grads) {
        const auto saved = ctx->get_saved_variables();
        const torch::Tensor & a = saved[0], & b = saved[1], & g = grads[0];
        torch::Tensor grad_a, grad_b;
        if (ctx->needs_input_grad(0)) grad_a = product(g, b.transpose(-2, -1));
        if (ctx->needs_input_grad(1)) grad_b = product(a.transpose(-2, -1), g);
        return {grad_a, grad_b};
    }
};

}  // namespace

bool batched_matmul_uses_blas(const torch::Tensor & a, const torch::Tensor & b) { return qualifies(a, b); }

torch::Tensor batched_matmul(const torch::Tensor & a, const torch::Tensor & b) {
    if (!qualifies(a, b)) return torch::matmul(a, b);
    if (!torch::GradMode::is_enabled() || (!a.requires_grad() && !b.requires_grad())) return product(a, b);
    return BatchedMatmul::apply(a, b);
}

}  // namespace bitvit
