// One-pass elementwise loops for the quantizers' forward and backward passes. A quantizer written as
// a chain of small tensor ops (divide, add, clamp, round, detach, subtract, multiply) reads and
// writes the whole activation once per op, allocates a tensor per op and records an autograd node
// per op; on the micro DeiT those chains cost more than the matrix products of a binary step. These
// helpers run a scalar lambda over float tensors (broadcast as torch's operators broadcast, split
// over the intra-op threads) and write each output once. The lambdas do the same float operations
// in the same order as the chains they replace, so values and gradients are unchanged bit for bit.
#pragma once

#include <ATen/native/TensorIterator.h>
#include <ATen/native/cpu/Loops.h>
#include <torch/torch.h>

#include <array>
#include <cmath>
#include <tuple>

namespace bitvit::quant {

// round(x), ties to even, as torch::round (and std::nearbyint) give it, without a call into libm:
// adding and subtracting 2^23 rounds any |x| < 2^23 to an integer in the default rounding mode;
// larger floats are integers already. NaN stays NaN, and round(−0.3) is −0 as nearbyint gives it.
inline float round_half_even(float x) {
    const float a = std::abs(x);
    return a < 8388608.0f ? std::copysign((a + 8388608.0f) - 8388608.0f, x) : x;
}

// The project's sign convention (common.h's sign_pm1) on one float: −1 where v < 0, +1 elsewhere.
inline float sign_pm1_of(float v) { return v < 0 ? -1.0f : 1.0f; }

namespace detail {
// The iterator over N new outputs and the inputs: float32 on the CPU, broadcast together.
template <typename... Inputs>
at::TensorIterator build(size_t outputs, const Inputs &... inputs) {
    at::TensorIteratorConfig config;
    config.check_all_same_dtype(true).set_check_mem_overlap(true);
    for (size_t i = 0; i < outputs; ++i) config.add_owned_output(torch::Tensor());
    for (const torch::Tensor * t : {&inputs...}) {
        TORCH_CHECK(t->scalar_type() == torch::kFloat, "quantizer kernels run on float32 tensors, got ", t->scalar_type());
        TORCH_CHECK(t->device().is_cpu(), "quantizer kernels run on the CPU, got ", t->device());
        config.add_owned_input(*t);
    }
    return config.build();
}
}  // namespace detail

// op(a, b, ...) -> float for every element of the broadcast inputs; returns the new tensor.
template <typename Op, typename... Inputs>
torch::Tensor pointwise(const Op & op, const Inputs &... inputs) {
    at::TensorIterator iter = detail::build(1, inputs...);
    at::native::cpu_kernel(iter, op);
    return iter.output(0);
}

// op(a, b, ...) -> std::tuple of N floats for every element: N outputs of the broadcast shape.
template <size_t N, typename Op, typename... Inputs>
std::array<torch::Tensor, N> pointwise_outputs(const Op & op, const Inputs &... inputs) {
    at::TensorIterator iter = detail::build(N, inputs...);
    at::native::cpu_kernel_multiple_outputs(iter, op);
    std::array<torch::Tensor, N> out;
    for (size_t i = 0; i < N; ++i) out[i] = iter.output(static_cast<int64_t>(i));
    return out;
}

}  // namespace bitvit::quant
