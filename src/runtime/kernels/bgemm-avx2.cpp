// AVX2 tier (compiled with -mavx2 -mfma -mbmi2 only). AVX2 has no vector popcount: bytes are counted
// with two 16-entry nibble lookups (vpshufb) and summed per 64-bit lane with vpsadbw.
#include <immintrin.h>

#include <algorithm>

#include "runtime/kernels/bgemm-microkernel.h"
#include "runtime/kernels/bgemm-tiers.h"

namespace bitvit::runtime {
namespace {

struct Avx2Ops {
    static constexpr int64_t kLanes = 4;
    using Vec = __m256i;
    static Vec zero() { return _mm256_setzero_si256(); }
    static Vec load(const uint64_t * p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)); }
    static Vec broadcast(uint64_t w) { return _mm256_set1_epi64x(static_cast<long long>(w)); }
    static Vec xor_(Vec a, Vec b) { return _mm256_xor_si256(a, b); }
    static Vec and_(Vec a, Vec b) { return _mm256_and_si256(a, b); }
    static Vec add_popcount(Vec acc, Vec x) {
        const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,  //
                                             0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
        const __m256i low4 = _mm256_set1_epi8(0x0F);
        const __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(x, low4));
        const __m256i hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(x, 4), low4));
        return _mm256_add_epi64(acc, _mm256_sad_epu8(_mm256_add_epi8(lo, hi), _mm256_setzero_si256()));
    }
    static void store_result(int32_t * c, Vec counts, int64_t k, int64_t n) {
        // k − 2·count fits in 32 bits: keep each 64-bit lane's low half, pack the four into 128 bits.
        const __m256i r = k < 0 ? counts : _mm256_sub_epi64(_mm256_set1_epi64x(k), _mm256_slli_epi64(counts, 1));
        const __m128i packed = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(r, _mm256_setr_epi32(0, 2, 4, 6, 0, 0, 0, 0)));
        const __m128i mask = _mm_cmpgt_epi32(_mm_set1_epi32(static_cast<int>(n)), _mm_setr_epi32(0, 1, 2, 3));
        _mm_maskstore_epi32(c, mask, packed);
    }
    static void store_scaled(float * out, Vec counts0, Vec counts1, int64_t k, int64_t n, float row_scale,
                             const float * col_scale, const float * bias) {
        store_scaled_half(out, counts0, k, std::min<int64_t>(n, kLanes), row_scale, col_scale, bias);
        if (n > kLanes) store_scaled_half(out + kLanes, counts1, k, n - kLanes, row_scale, col_scale + kLanes, bias ? bias + kLanes : nullptr);
    }
    static void store_scaled_half(float * out, Vec counts, int64_t k, int64_t n, float row_scale, const float * col_scale,
                                  const float * bias) {
        const __m256i r = _mm256_sub_epi64(_mm256_set1_epi64x(k), _mm256_slli_epi64(counts, 1));
        const __m128 dot = _mm_cvtepi32_ps(_mm256_castsi256_si128(_mm256_permutevar8x32_epi32(r, _mm256_setr_epi32(0, 2, 4, 6, 0, 0, 0, 0))));
        const __m128i lanes = _mm_cmpgt_epi32(_mm_set1_epi32(static_cast<int>(n)), _mm_setr_epi32(0, 1, 2, 3));
        const __m128 scale = _mm_mul_ps(_mm_set1_ps(row_scale), _mm_maskload_ps(col_scale, lanes));
        __m128 value = _mm_mul_ps(scale, dot);
        if (bias) value = _mm_add_ps(value, _mm_maskload_ps(bias, lanes));
        _mm_maskstore_ps(out, lanes, value);
    }
    static uint64_t negative_bits(const float * x, int64_t n) {
        // Ordered x < 0: false for −0 and NaN, which are +1 by the convention.
        uint64_t bits = 0;
        int64_t b = 0;
        for (; b + 8 <= n; b += 8) {
            const __m256 lt = _mm256_cmp_ps(_mm256_loadu_ps(x + b), _mm256_setzero_ps(), _CMP_LT_OQ);
            bits |= static_cast<uint64_t>(static_cast<uint32_t>(_mm256_movemask_ps(lt))) << b;
        }
        for (; b < n; ++b) bits |= static_cast<uint64_t>(x[b] < 0.0f) << b;
        return bits;
    }
};

// 4 rows × 8 columns: 8 accumulators + 2 B vectors + constants fit the 16 ymm registers.
using Tile = BgemmTile<Avx2Ops, 4, 2>;
using AndTile = BgemmTile<Avx2Ops, 4, 2, BitOp::and_>;

}  // namespace

const BgemmKernel & bgemm_kernel_avx2() {
    static const BgemmKernel kernel{Isa::avx2, Tile::kMR, Tile::kNR, bgemm_drive<Tile>, bgemm_drive<AndTile>,
                                    bgemm_drive_scaled<Tile>, bgemm_drive_signs<Tile, Avx2Ops>,
                                    Avx2Ops::negative_bits};
    return kernel;
}

}  // namespace bitvit::runtime
