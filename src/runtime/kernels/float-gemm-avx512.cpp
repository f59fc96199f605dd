// FP32 GEMM, AVX-512 tier: the blocked body vectorised with 512-bit registers.
#include "runtime/kernels/float-gemm-blocked.h"

namespace bitvit::runtime {

void sgemm_avx512(int64_t m, int64_t n, int64_t k, const float * a, const float * bt, float * c, int64_t ldc) {
    sgemm_blocked<6, 64>(m, n, k, a, bt, c, ldc);
}

}  // namespace bitvit::runtime
