#include "runtime/kernels/int8-gemm.h"

namespace bitvit::runtime {

void int8_gemm_ref(int64_t m, int64_t n, int64_t k, const int8_t * a, const int8_t * b, int32_t * c, int64_t ldc) {
    for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
            int32_t sum = 0;
            for (int64_t p = 0; p < k; ++p) sum += int32_t{a[i * k + p]} * int32_t{b[j * k + p]};
            c[i * ldc + j] = sum;
        }
    }
}

}  // namespace bitvit::runtime
