// int8 GEMM, AVX-512 VNNI variant (AVX-512BW flags plus -mavx512vnni): VPDPBUSD multiplies four
// unsigned bytes by four signed bytes and adds their sum to an int32 lane, 64 products per
// instruction. A's signed codes are made unsigned by adding 128 (XOR 0x80, once per block of rows:
// int8_driver::unsigned_rows) and 128·Σ_k b[j][k] is subtracted at the end, so the result is Σ a·b
// exactly (VPDPBUSD does not saturate).
#include <immintrin.h>

#include "runtime/kernels/int8-gemm-driver.h"

namespace bitvit::runtime {
namespace {

// acc + Σ of four u8·s8 products per int32 lane. Through asm: GCC 12 handles the builtin's tied
// accumulator by copying every accumulator to another register and to the stack on each step,
// which ran the tile at ~40 % of VPDPBUSD's issue rate (bench-kernels peak/ rows).
inline __m512i dpbusd(__m512i acc, __m512i unsigned_a, __m512i signed_b) {
    asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(unsigned_a), "v"(signed_b));
    return acc;
}

// kRows rows of unsigned A (row stride lda, padded to whole groups) × kPanels panels of B (16
// columns, one zmm each) in kRows·kPanels accumulators.
template <int kRows, int kPanels>
struct VnniTile {
    static void run(const int8_t * a, int64_t lda, const PackedI8 & b, int64_t p0, int32_t * c, int64_t ldc) {
        __m512i acc[kRows][kPanels];
#pragma GCC unroll 8
        for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 8
            for (int q = 0; q < kPanels; ++q) acc[r][q] = _mm512_setzero_si512();
        }
        for (int64_t g = 0; g < b.groups(); ++g) {
            __m512i w[kPanels];
#pragma GCC unroll 8
            for (int q = 0; q < kPanels; ++q) w[q] = _mm512_loadu_si512(b.panel(p0 + q) + g * kInt8Nr * 4);
#pragma GCC unroll 8
            for (int r = 0; r < kRows; ++r) {
                int32_t four;
                std::memcpy(&four, a + r * lda + 4 * g, 4);
                const __m512i x = _mm512_set1_epi32(four);
#pragma GCC unroll 8
                for (int q = 0; q < kPanels; ++q) acc[r][q] = dpbusd(acc[r][q], x, w[q]);
            }
        }
#pragma GCC unroll 8
        for (int q = 0; q < kPanels; ++q) {
            const int64_t j0 = (p0 + q) * kInt8Nr;
            const auto cols = static_cast<__mmask16>((1u << std::min<int64_t>(kInt8Nr, b.n - j0)) - 1);
            const __m512i correction = _mm512_slli_epi32(_mm512_maskz_loadu_epi32(cols, b.row_sums.data() + j0), 7);
#pragma GCC unroll 8
            for (int r = 0; r < kRows; ++r) {
                _mm512_mask_storeu_epi32(c + r * ldc + j0, cols, _mm512_sub_epi32(acc[r][q], correction));
            }
        }
    }
};

}  // namespace

// 6 rows × 4 panels: 24 accumulators + 4 weight vectors + 1 broadcast of the 32 zmm registers.
const Int8Kernel & int8_kernel_avx512vnni() {
    static const Int8Kernel kernel{"avx512vnni", int8_driver::drive<VnniTile, 6, 4, /*kUnsignedA=*/true>};
    return kernel;
}

}  // namespace bitvit::runtime
