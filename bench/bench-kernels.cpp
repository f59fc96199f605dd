// Binary GEMM against the float paths a user has on this CPU, one thread, on the real layer shapes:
// each ISA tier of the XNOR–popcount kernel (and of AND–popcount, the {0, 1}-attention × binary-V
// product), each int8 kernel variant with ternary weights (TerViT's W2A8 product), LibTorch FP32
// (OpenBLAS SGEMM) and LibTorch BF16 (oneDNN). Every benchmark reports "ops/s" = 2·M·N·K per second, so ratios compare like with like.
// The peak/* rows are the instruction ceilings of int8 (VPDPBUSD), FP32 (VFMADD) and binary (VPXORQ + VPOPCNTQ +
// VPADDQ) multiply-adds (peak-rates.h).
//   bench-kernels --benchmark_filter=deit_small
// `scripts/record-bench.py kernels` runs it and writes the ratios into docs/results.md.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <random>

#include "peak-rates.h"
#include "runtime/kernels/bgemm.h"
#include "runtime/kernels/float-gemm.h"
#include "runtime/kernels/int8-gemm.h"
#include "train/trainer.h"

namespace {

using bitvit::runtime::Isa;

struct Shape {
    const char * name;
    int64_t m, n, k;
};

// M = 197 tokens at 224 px; (N, K) of qkv, proj, fc1, fc2.
const Shape kShapes[] = {
    {"deit_tiny/qkv", 197, 576, 192},   {"deit_tiny/fc1", 197, 768, 192},   {"deit_tiny/fc2", 197, 192, 768},
    {"deit_small/qkv", 197, 1152, 384}, {"deit_small/fc1", 197, 1536, 384}, {"deit_small/fc2", 197, 384, 1536},
    {"deit_base/qkv", 197, 2304, 768},  {"deit_base/fc1", 197, 3072, 768},  {"deit_base/fc2", 197, 768, 3072},
    // One head's attention products (head_dim 64): q·kᵀ and probs·v.
    {"deit_small/q·kᵀ", 197, 197, 64},  {"deit_small/probs·v", 197, 64, 197},
    // The patch embedding (16×16×3 patches → 384), a full-precision layer in every method.
    {"deit_small/patch_embed", 196, 384, 768},
};

void set_ops_rate(benchmark::State & state, const Shape & s) {
    state.counters["ops/s"] = benchmark::Counter(2.0 * s.m * s.n * s.k * static_cast<double>(state.iterations()),
                                                 benchmark::Counter::kIsRate);
}

void binary_gemm(benchmark::State & state, Shape s, Isa isa, bool xnor) {
    const auto & kernel = bitvit::runtime::bgemm_kernel(isa);
    std::mt19937_64 rng(1);
    const int64_t kw = bitvit::runtime::b1_words(s.k);
    std::vector<uint64_t> a(static_cast<size_t>(s.m * kw)), b(static_cast<size_t>(s.n * kw));
    for (auto & w : a) w = rng();
    for (auto & w : b) w = rng();
    if (s.k % 64) {
        const uint64_t mask = (uint64_t{1} << (s.k % 64)) - 1;
        for (int64_t r = 0; r < s.m; ++r) a[r * kw + kw - 1] &= mask;
        for (int64_t r = 0; r < s.n; ++r) b[r * kw + kw - 1] &= mask;
    }
    const auto packed = bitvit::runtime::repack_b1_panels(b.data(), s.n, s.k, kernel.nr);
    std::vector<int32_t> c(static_cast<size_t>(s.m * s.n));
    for (auto _ : state) {
        (xnor ? kernel.gemm : kernel.and_gemm)(s.m, a.data(), kw, packed, c.data(), s.n);
        benchmark::DoNotOptimize(c.data());
        benchmark::ClobberMemory();
    }
    set_ops_rate(state, s);
}

// Ternary weights {−1, 0, +1} (as int8 codes) × int8 activation codes: TerViT's deployed product.
void ternary_int8_gemm(benchmark::State & state, Shape s, const bitvit::runtime::Int8Kernel * kernel) {
    std::mt19937_64 rng(1);
    std::uniform_int_distribution<int> activation(-128, 127), ternary(-1, 1);
    std::vector<int8_t> a(static_cast<size_t>(s.m * s.k)), b(static_cast<size_t>(s.n * s.k));
    for (auto & v : a) v = static_cast<int8_t>(activation(rng));
    for (auto & v : b) v = static_cast<int8_t>(ternary(rng));
    const auto packed = bitvit::runtime::repack_i8_panels(b.data(), s.n, s.k);
    std::vector<int32_t> c(static_cast<size_t>(s.m * s.n));
    for (auto _ : state) {
        kernel->gemm(s.m, a.data(), s.k, packed, c.data(), s.n);
        benchmark::DoNotOptimize(c.data());
        benchmark::ClobberMemory();
    }
    set_ops_rate(state, s);
}

// The runtime's own FP32 GEMM (bit-exact with its reference) per tier, for the layers kept in FP32.
void runtime_float_gemm(benchmark::State & state, Shape s, Isa isa) {
    std::mt19937_64 rng(1);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> a(static_cast<size_t>(s.m * s.k)), bt(static_cast<size_t>(s.k * s.n)), c(static_cast<size_t>(s.m * s.n));
    for (auto & v : a) v = u(rng);
    for (auto & v : bt) v = u(rng);
    for (auto _ : state) {
        bitvit::runtime::sgemm(isa, s.m, s.n, s.k, a.data(), bt.data(), c.data(), s.n);
        benchmark::DoNotOptimize(c.data());
        benchmark::ClobberMemory();
    }
    set_ops_rate(state, s);
}

void float_gemm(benchmark::State & state, Shape s, torch::ScalarType dtype) {
    bitvit::set_compute_threads(1);
    torch::manual_seed(0);
    const auto x = torch::randn({s.m, s.k}).to(dtype);
    const auto w = torch::randn({s.n, s.k}).to(dtype);
    for (auto _ : state) {
        auto y = torch::mm(x, w.t());  // nn.Linear's y = x·Wᵀ
        benchmark::DoNotOptimize(y.data_ptr());
    }
    set_ops_rate(state, s);
}

// Multiply-accumulates per second of one instruction kind, issued back to back (peak-rates.h).
void peak_rate(benchmark::State & state, int64_t (*loop)(int64_t), int64_t macs_per_instruction) {
    const int64_t rounds = 1 << 20;
    for (auto _ : state) benchmark::DoNotOptimize(loop(rounds));
    state.counters["ops/s"] = benchmark::Counter(
        2.0 * static_cast<double>(macs_per_instruction * bitvit::bench::kPeakChains * rounds) * static_cast<double>(state.iterations()),
        benchmark::Counter::kIsRate);
}

int register_all() {
    if (bitvit::runtime::cpu_features().avx512vnni) {
        benchmark::RegisterBenchmark("peak/vpdpbusd_zmm", peak_rate, bitvit::bench::vpdpbusd_zmm_loop, 64)->UseRealTime();
        benchmark::RegisterBenchmark("peak/vfmadd_zmm", peak_rate, bitvit::bench::vfmadd_zmm_loop, 16)->UseRealTime();
    }
    if (bitvit::runtime::cpu_features().avx512vpopcntdq) {
        benchmark::RegisterBenchmark("peak/xnor_popcount_zmm", peak_rate, bitvit::bench::xnor_popcount_zmm_loop, 512)->UseRealTime();
    }
    for (const Shape & s : kShapes) {
        const std::string shape = std::string(s.name) + "/M" + std::to_string(s.m) + "_N" + std::to_string(s.n) +
                                  "_K" + std::to_string(s.k);
        benchmark::RegisterBenchmark(("fp32_torch/" + shape).c_str(), float_gemm, s, torch::kFloat)->UseRealTime();
        benchmark::RegisterBenchmark(("bf16_torch/" + shape).c_str(), float_gemm, s, torch::kBFloat16)->UseRealTime();
        for (Isa isa : bitvit::runtime::supported_isas()) {
            for (const bool xnor : {true, false}) {
                const std::string name = std::string(xnor ? "b1b1_" : "and1_") + bitvit::runtime::isa_name(isa) + "/" + shape;
                benchmark::RegisterBenchmark(name.c_str(), binary_gemm, s, isa, xnor)->UseRealTime();
            }
        }
        for (Isa isa : bitvit::runtime::supported_isas()) {
            if (isa == Isa::avx512vpopcntdq) continue;  // the same FP32 code as avx512bw
            const std::string name = std::string("f32_") + bitvit::runtime::isa_name(isa) + "/" + shape;
            benchmark::RegisterBenchmark(name.c_str(), runtime_float_gemm, s, isa)->UseRealTime();
        }
        for (const auto * kernel : bitvit::runtime::int8_kernels()) {
            const std::string name = std::string("t2i8_") + kernel->name + "/" + shape;
            benchmark::RegisterBenchmark(name.c_str(), ternary_int8_gemm, s, kernel)->UseRealTime();
        }
    }
    return 0;
}
const int registered = register_all();

}  // namespace

BENCHMARK_MAIN();
