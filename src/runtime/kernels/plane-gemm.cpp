#include "runtime/kernels/plane-gemm.h"

#include "runtime/kernels/bgemm.h"

namespace bitvit::runtime {

namespace {
// The bits of word `w` that hold values of a k-long row: all ones except past k in the last word.
uint64_t valid_bits(int64_t k, int64_t w) {
    const int64_t tail = k - w * 64;
    return tail >= 64 ? ~uint64_t{0} : (uint64_t{1} << tail) - 1;
}
}  // namespace

void plane_gemm_ref(int64_t m, int64_t n, int64_t k, PlaneBits x, PlaneBits w, int32_t * c, int64_t ldc) {
    const int64_t kw = b1_words(k);
    for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
            int64_t present = 0, negative = 0;
            for (int64_t v = 0; v < kw; ++v) {
                const uint64_t mx = x.mask ? x.mask[i * kw + v] : valid_bits(k, v);
                const uint64_t mw = w.mask ? w.mask[j * kw + v] : valid_bits(k, v);
                const uint64_t sx = x.sign ? x.sign[i * kw + v] : 0;
                const uint64_t sw = w.sign ? w.sign[j * kw + v] : 0;
                present += __builtin_popcountll(mx & mw);
                negative += __builtin_popcountll(mx & mw & (sx ^ sw));
            }
            c[i * ldc + j] = static_cast<int32_t>(present - 2 * negative);
        }
    }
}

void plane_row_sums(int64_t rows, int64_t k, PlaneBits p, int32_t * sums) {
    const int64_t kw = b1_words(k);
    for (int64_t r = 0; r < rows; ++r) {
        int64_t present = 0, negative = 0;
        for (int64_t v = 0; v < kw; ++v) {
            present += __builtin_popcountll(p.mask ? p.mask[r * kw + v] : valid_bits(k, v));
            negative += p.sign ? __builtin_popcountll(p.sign[r * kw + v]) : 0;
        }
        sums[r] = static_cast<int32_t>(present - 2 * negative);
    }
}

}  // namespace bitvit::runtime
