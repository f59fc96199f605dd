// Row softmax, AVX2 tier: the shared body vectorised with the tier's registers.
#include "runtime/kernels/softmax-body.h"

namespace bitvit::runtime {

void softmax_rows_avx2(float * x, int64_t rows, int64_t n, int64_t ld) { softmax_rows_body(x, rows, n, ld); }

}  // namespace bitvit::runtime
