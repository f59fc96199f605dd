// What the CPU we run on can execute, read once from CPUID and XGETBV. The runtime's kernel dispatch
// (scalar, AVX2, AVX-512BW, AVX-512 VPOPCNTDQ) is chosen from this, never from compile-time flags.
#pragma once

#include <string>
#include <vector>

namespace bitvit::runtime {

// Instruction-set tiers, each a superset of the one before it.
enum class Isa { scalar = 0, avx2 = 1, avx512bw = 2, avx512vpopcntdq = 3 };

const char * isa_name(Isa isa);

// Parses "scalar", "avx2", "avx512bw" or "avx512vpopcntdq"; throws std::invalid_argument otherwise.
Isa parse_isa(const std::string & name);

struct CpuFeatures {
    bool avx2 = false;             // AVX2 + FMA + BMI2, and the OS saves YMM state
    bool avx512bw = false;         // AVX-512 F/BW/VL, and the OS saves ZMM and opmask state
    bool avx512vpopcntdq = false;  // VPOPCNTDQ on top of avx512bw
    bool avx512vnni = false;       // VNNI (VPDPBUSD) on top of avx512bw: the int8 kernel's extension
    std::string brand;             // "AMD EPYC ..." from CPUID leaves 0x80000002..4
};

// The features of this CPU (cached after the first call).
const CpuFeatures & cpu_features();

// The best tier the CPU and OS support.
Isa best_supported_isa();

// Every tier this CPU can run, from scalar up: tests and benchmarks iterate over it.
std::vector<Isa> supported_isas();

// The tier the runtime uses: best_supported_isa(), lowered to $BITVIT_ISA when that names a lower tier.
// An unknown value or a tier above what the CPU has throws std::invalid_argument naming the variable.
Isa selected_isa();

}  // namespace bitvit::runtime
