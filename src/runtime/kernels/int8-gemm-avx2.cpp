// int8 GEMM, AVX2 variant: codes widened to int16 and multiplied with VPMADDWD, which adds adjacent
// products into int32 lanes exactly (|a·b| ≤ 2^14, so a pair sum cannot overflow; unlike VPMADDUBSW,
// nothing saturates).
#include <immintrin.h>

#include "runtime/kernels/int8-gemm-driver.h"

namespace bitvit::runtime {
namespace {

// kRows rows of A × kPanels panels of B. A panel's group of four k (16 columns × 4 codes, 64 bytes)
// is four ymm of int16, each 4 columns × 4 k; VPMADDWD against A's four codes (broadcast) leaves two
// partial sums per column, added pairwise when the tile is stored.
template <int kRows, int kPanels>
struct Avx2Tile {
    static void run(const int8_t * a, int64_t lda, const PackedI8 & b, int64_t p0, int32_t * c, int64_t ldc) {
        __m256i acc[kRows][kPanels][4];
        for (auto & row : acc) {
            for (auto & panel : row) {
                for (auto & v : panel) v = _mm256_setzero_si256();
            }
        }
        int8_driver::for_each_group(a, lda, b.k, [&](int64_t g, auto codes_of_row) {
            __m256i w[kPanels][4];
            for (int q = 0; q < kPanels; ++q) {
                const int8_t * group = b.panel(p0 + q) + g * kInt8Nr * 4;
                for (int h = 0; h < 4; ++h) {
                    w[q][h] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(group + 16 * h)));
                }
            }
            for (int r = 0; r < kRows; ++r) {
                const __m128i four = _mm_cvtepi8_epi16(_mm_cvtsi32_si128(codes_of_row(r)));  // 4 int16
                const __m256i x = _mm256_broadcastq_epi64(four);
                for (int q = 0; q < kPanels; ++q) {
                    for (int h = 0; h < 4; ++h) acc[r][q][h] = _mm256_add_epi32(acc[r][q][h], _mm256_madd_epi16(x, w[q][h]));
                }
            }
        });
        for (int r = 0; r < kRows; ++r) {
            for (int q = 0; q < kPanels; ++q) {
                alignas(32) int32_t pairs[4][8];
                for (int h = 0; h < 4; ++h) _mm256_store_si256(reinterpret_cast<__m256i *>(pairs[h]), acc[r][q][h]);
                const int64_t j0 = (p0 + q) * kInt8Nr;
                const int64_t cols = std::min<int64_t>(kInt8Nr, b.n - j0);
                for (int64_t j = 0; j < cols; ++j) {
                    c[r * ldc + j0 + j] = pairs[j / 4][2 * (j % 4)] + pairs[j / 4][2 * (j % 4) + 1];
                }
            }
        }
    }
};

}  // namespace

// 2 rows × 1 panel: 8 accumulators + 4 weight vectors + 1 broadcast of the 16 ymm registers.
const Int8Kernel & int8_kernel_avx2() {
    static const Int8Kernel kernel{"avx2", int8_driver::drive<Avx2Tile, 2, 1>};
    return kernel;
}

}  // namespace bitvit::runtime
