// Batched matrix products for attention (q·kᵀ, probs·v, the distillation's Gram matrices) that call
// BLAS once per matrix, straight on the strided views attention makes, and the same products for
// both gradients.
//
// Why: LibTorch 1.13's CPU bmm without MKL splits the batch and runs select + mm through the
// dispatcher for every matrix. At the micro models' sizes (B·H = 384 matrices of 50 × 32 × 50 for
// q·kᵀ) that overhead is twice the arithmetic: 3.3 ms for what one GEMM of the same FLOPs does in
// 1.1 ms (docs/results.md, "Training step speed").
#pragma once

#include <torch/torch.h>

namespace bitvit {

// a [..., M, K] · b [..., K, N] -> [..., M, N] with the same batch sizes on both sides (at least one
// batch dimension). Float32 CPU tensors with BLAS-readable matrices (one of the last two strides 1,
// or a copy is made) go through sgemm, one call per matrix, split over LibTorch's intra-op threads
// when the matrices are small; anything else (other devices or dtypes, broadcasting, 2-D operands,
// a build without BLAS) is torch::matmul. Differentiable once: the gradients are products of the
// same kind, without a graph of their own.
torch::Tensor batched_matmul(const torch::Tensor & a, const torch::Tensor & b);

// Whether batched_matmul can take this pair through BLAS (the build has it, and the operands qualify).
bool batched_matmul_uses_blas(const torch::Tensor & a, const torch::Tensor & b);

}  // namespace bitvit
