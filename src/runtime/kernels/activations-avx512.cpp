// Softmax, GELU and LayerNorm, AVX-512 tier: the shared bodies vectorised with the tier's registers.
#include "runtime/kernels/activations-body.h"

namespace bitvit::runtime {

void softmax_rows_avx512(float * x, int64_t rows, int64_t n, int64_t ld) { softmax_rows_body(x, rows, n, ld); }
void gelu_avx512(float * x, int64_t n) { gelu_body(x, n); }
void layer_norm_rows_avx512(const float * x, int64_t rows, int64_t dim, const float * weight, const float * bias, float eps,
                          float * out) {
    layer_norm_rows_body(x, rows, dim, weight, bias, eps, out);
}

}  // namespace bitvit::runtime
