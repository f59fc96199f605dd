// FP32 GEMM, AVX2 tier: the blocked body vectorised with 256-bit registers.
#include "runtime/kernels/float-gemm-blocked.h"

namespace bitvit::runtime {

void sgemm_avx2(int64_t m, int64_t n, int64_t k, const float * a, const float * bt, float * c, int64_t ldc) {
    sgemm_blocked<4, 64>(m, n, k, a, bt, c, ldc);
}

}  // namespace bitvit::runtime
