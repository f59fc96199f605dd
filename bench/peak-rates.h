// Instruction-issue ceilings of this CPU, one thread: independent multiply-accumulates in registers,
// no memory traffic. They bound what any GEMM can reach (docs/results.md, target b): an int8 GEMM
// on VPDPBUSD cannot beat an FP32 GEMM on VFMADD by more than the ratio of these two rates.
#pragma once

#include <cstdint>

namespace bitvit::bench {

// Runs `rounds` × 12 independent zmm VPDPBUSD (64 int8 multiply-adds each); returns a value that
// depends on every result (so the loop cannot be removed). AVX-512 VNNI CPUs only.
int64_t vpdpbusd_zmm_loop(int64_t rounds);
// The same with zmm VFMADD231PS (16 float multiply-adds each). AVX-512F CPUs only.
int64_t vfmadd_zmm_loop(int64_t rounds);
constexpr int64_t kPeakChains = 12;  // independent accumulators per round: more than latency × issue rate

}  // namespace bitvit::bench
