// Integer products: LSQ 8-bit activations against 8-bit or ternary weights (TerViT), exact in int32.
//
// C[i][j] = Σ_k a[i][k]·b[j][k] with A [m, k] (activation codes, row-major) and B [n, k] (weight
// codes). B is repacked once at load time into panels of kInt8Nr rows of B; within a panel each group
// of four k holds the panel's kInt8Nr rows × 4 codes contiguously (64 bytes: one zmm, the operand
// layout of VPDPBUSD). k is padded to a multiple of 4 with zero codes, which add nothing.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/cpu-features.h"

namespace bitvit::runtime {

// The largest k for which every kernel's int32 sums cannot overflow. The VNNI kernel computes
// Σ (a + 128)·b with a + 128 ≤ 255 and |b| ≤ 128: 255·128·k < 2^31.
constexpr int64_t kInt8GemmMaxK = 65793;

constexpr int64_t kInt8Nr = 16;  // rows of B per panel

// Reference: C[i][j] = Σ_k a[i][k]·b[j][k] on the plain row-major layouts; k ≤ kInt8GemmMaxK.
void int8_gemm_ref(int64_t m, int64_t n, int64_t k, const int8_t * a, const int8_t * b, int32_t * c, int64_t ldc);

struct PackedI8 {
    int64_t n = 0, k = 0;
    std::vector<int8_t> bytes;     // ceil(n / kInt8Nr) panels × groups() × kInt8Nr × 4
    std::vector<int32_t> row_sums; // [n] Σ_k b[j][k]: for zero-point corrections, and the VNNI kernel's unsigned A
    int64_t groups() const { return (k + 3) / 4; }
    const int8_t * panel(int64_t p) const { return bytes.data() + p * groups() * kInt8Nr * 4; }
};
PackedI8 repack_i8_panels(const int8_t * b, int64_t n, int64_t k);

// One int8 GEMM variant: C[i][j] = Σ_k a[i][k]·b[j][k] for i < m, j < b.n, a row stride lda bytes.
struct Int8Kernel {
    const char * name;
    using Gemm = void (*)(int64_t m, const int8_t * a, int64_t lda, const PackedI8 & b, int32_t * c, int64_t ldc);
    Gemm gemm;
};

// Every variant this CPU runs, portable first: tests compare each with the reference.
std::vector<const Int8Kernel *> int8_kernels();
// The variant for the selected ISA tier: VNNI when the tier is AVX-512 and the CPU has VNNI, the
// AVX2 kernel from the AVX2 tier up, the portable one otherwise.
const Int8Kernel & int8_kernel();

// The tiers' variants, each defined in its own translation unit with its flags.
const Int8Kernel & int8_kernel_avx2();
const Int8Kernel & int8_kernel_avx512vnni();

}  // namespace bitvit::runtime
