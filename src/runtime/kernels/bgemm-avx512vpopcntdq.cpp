// AVX-512 VPOPCNTDQ tier (AVX-512BW flags plus -mavx512vpopcntdq): one vpopcntq per 512 bits.
#include <immintrin.h>

#include "runtime/kernels/bgemm-microkernel.h"
#include "runtime/kernels/bgemm-tiers.h"

namespace bitvit::runtime {
namespace {

struct Avx512PopcntOps {
    static constexpr int64_t kLanes = 8;
    using Vec = __m512i;
    static Vec zero() { return _mm512_setzero_si512(); }
    static Vec load(const uint64_t * p) { return _mm512_loadu_si512(p); }
    static Vec broadcast(uint64_t w) { return _mm512_set1_epi64(static_cast<long long>(w)); }
    static Vec xor_(Vec a, Vec b) { return _mm512_xor_si512(a, b); }
    static Vec add_popcount(Vec acc, Vec x) { return _mm512_add_epi64(acc, _mm512_popcnt_epi64(x)); }
    static void store_result(int32_t * c, Vec counts, int64_t k, int64_t n) {
        const __m512i r = _mm512_sub_epi64(_mm512_set1_epi64(k), _mm512_slli_epi64(counts, 1));
        _mm256_mask_storeu_epi32(c, static_cast<__mmask8>((1u << n) - 1), _mm512_cvtepi64_epi32(r));
    }
};

// 4 rows × 32 columns: 16 accumulators + 4 B vectors + 1 broadcast A word.
using Tile = BgemmTile<Avx512PopcntOps, 4, 4>;

}  // namespace

const BgemmKernel & bgemm_kernel_avx512vpopcntdq() {
    static const BgemmKernel kernel{Isa::avx512vpopcntdq, Tile::kMR, Tile::kNR, bgemm_drive<Tile>};
    return kernel;
}

}  // namespace bitvit::runtime
