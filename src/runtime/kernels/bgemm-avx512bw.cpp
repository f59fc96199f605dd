// AVX-512BW tier (compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq): as AVX2 but 512-bit,
// nibble-lookup popcount (vpshufb) + vpsadbw, for AVX-512 CPUs without VPOPCNTDQ (Skylake-X).
#include <immintrin.h>

#include "runtime/kernels/bgemm-avx512-ops.h"
#include "runtime/kernels/bgemm-microkernel.h"
#include "runtime/kernels/bgemm-tiers.h"

namespace bitvit::runtime {
namespace {

struct Avx512BwOps : Avx512Ops {
    static Vec add_popcount(Vec acc, Vec x) {
        // Byte i of each 16-byte lane = popcount(i).
        const __m512i lut = _mm512_set_epi64(0x0403030203020201, 0x0302020102010100, 0x0403030203020201,
                                             0x0302020102010100, 0x0403030203020201, 0x0302020102010100,
                                             0x0403030203020201, 0x0302020102010100);
        const __m512i low4 = _mm512_set1_epi8(0x0F);
        const __m512i lo = _mm512_shuffle_epi8(lut, _mm512_and_si512(x, low4));
        const __m512i hi = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(x, 4), low4));
        return _mm512_add_epi64(acc, _mm512_sad_epu8(_mm512_add_epi8(lo, hi), _mm512_setzero_si512()));
    }
};

// 4 rows × 32 columns: 16 accumulators + 4 B vectors + constants and temporaries within 32 zmm.
using Tile = BgemmTile<Avx512BwOps, 4, 4>;
using AndTile = BgemmTile<Avx512BwOps, 4, 4, BitOp::and_>;

}  // namespace

const BgemmKernel & bgemm_kernel_avx512bw() {
    static const BgemmKernel kernel{Isa::avx512bw, Tile::kMR, Tile::kNR, bgemm_drive<Tile>, bgemm_drive<AndTile>,
                                    bgemm_drive_scaled<Tile>, bgemm_drive_signs<Tile, Avx512BwOps>,
                                    Avx512BwOps::negative_bits};
    return kernel;
}

}  // namespace bitvit::runtime
