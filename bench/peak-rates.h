// Instruction-issue ceilings of this CPU, one thread: independent multiply-accumulates in registers,
// no memory traffic. They bound what any GEMM can reach (docs/results.md, targets a and b): an int8
// GEMM on VPDPBUSD cannot beat an FP32 GEMM on VFMADD by more than the ratio of these two rates,
// and a binary GEMM cannot run faster than its xor + popcount + add step issues.
#pragma once

#include <cstdint>

namespace bitvit::bench {

// Runs `rounds` × 12 independent zmm VPDPBUSD (64 int8 multiply-adds each); returns a value that
// depends on every result (so the loop cannot be removed). AVX-512 VNNI CPUs only.
int64_t vpdpbusd_zmm_loop(int64_t rounds);
// The same with zmm VFMADD231PS (16 float multiply-adds each). AVX-512F CPUs only.
int64_t vfmadd_zmm_loop(int64_t rounds);
// The same with the binary GEMM's step: zmm VPXORQ, VPOPCNTQ, VPADDQ (512 ±1 multiply-adds per
// step). AVX-512 VPOPCNTDQ CPUs only.
int64_t xnor_popcount_zmm_loop(int64_t rounds);
constexpr int64_t kPeakChains = 12;  // independent accumulators per round: more than latency × issue rate

// One round of a loop: op(i) for each of the kPeakChains accumulators acc0 … acc11; each loop then
// marks its `a` operand as changed so the instructions cannot be hoisted out of it.
#define BITVIT_TWELVE(op) op(0) op(1) op(2) op(3) op(4) op(5) op(6) op(7) op(8) op(9) op(10) op(11)

}  // namespace bitvit::bench
