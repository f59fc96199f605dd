// AVX-512 VPOPCNTDQ tier (AVX-512BW flags plus -mavx512vpopcntdq): one vpopcntq per 512 bits.
#include <immintrin.h>

#include "runtime/kernels/bgemm-avx512-ops.h"
#include "runtime/kernels/bgemm-microkernel.h"
#include "runtime/kernels/bgemm-tiers.h"

namespace bitvit::runtime {
namespace {

struct Avx512PopcntOps : Avx512Ops {
    static Vec add_popcount(Vec acc, Vec x) { return _mm512_add_epi64(acc, _mm512_popcnt_epi64(x)); }
};

// 4 rows × 32 columns: 16 accumulators + 4 B vectors + 1 broadcast A word.
using Tile = BgemmTile<Avx512PopcntOps, 4, 4>;
using AndTile = BgemmTile<Avx512PopcntOps, 4, 4, BitOp::and_>;

}  // namespace

const BgemmKernel & bgemm_kernel_avx512vpopcntdq() {
    static const BgemmKernel kernel{Isa::avx512vpopcntdq, Tile::kMR, Tile::kNR, bgemm_drive<Tile>, bgemm_drive<AndTile>,
                                    bgemm_drive_scaled<Tile>, bgemm_drive_signs<Tile, Avx512PopcntOps>,
                                    Avx512PopcntOps::negative_bits};
    return kernel;
}

}  // namespace bitvit::runtime
