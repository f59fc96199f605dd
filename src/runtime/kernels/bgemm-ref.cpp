#include "runtime/kernels/bgemm.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/kernels/bgemm-microkernel.h"
#include "runtime/kernels/bgemm-tiers.h"

namespace bitvit::runtime {

void pack_b1_rows_ref(const float * x, int64_t rows, int64_t k, int64_t ld, uint64_t * out) {
    const int64_t kw = b1_words(k);
    for (int64_t r = 0; r < rows; ++r) {
        uint64_t * row = out + r * kw;
        std::fill(row, row + kw, uint64_t{0});
        for (int64_t i = 0; i < k; ++i) {
            if (x[r * ld + i] < 0.0f) row[i / 64] |= uint64_t{1} << (i % 64);
        }
    }
}

uint64_t negative_bits_ref(const float * x, int64_t n) {
    uint64_t bits = 0;
    for (int64_t b = 0; b < n; ++b) bits |= static_cast<uint64_t>(x[b] < 0.0f) << b;
    return bits;
}

void transpose_b1_64x64(uint64_t (&a)[64]) {
    uint64_t mask = 0x00000000FFFFFFFFull;  // the low half of each block's columns
    for (int half = 32; half != 0; half >>= 1, mask ^= mask << half) {
        // Rows r (bit `half` clear) and r + half: r's high columns swap with r + half's low ones.
        for (int r = 0; r < 64; r = ((r | half) + 1) & ~half) {
            const uint64_t swap = ((a[r] >> half) ^ a[r | half]) & mask;
            a[r] ^= swap << half;
            a[r | half] ^= swap;
        }
    }
}

namespace {
// The references' one loop: popcount of a[i] ^ b[j] (stored as K − 2·count) or of a[i] & b[j].
template <bool kXnor>
void popcount_gemm_ref(int64_t m, int64_t n, int64_t k, const uint64_t * a, const uint64_t * b, int32_t * c, int64_t ldc) {
    const int64_t kw = b1_words(k);
    for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
            int64_t count = 0;
            for (int64_t w = 0; w < kw; ++w) {
                count += __builtin_popcountll(kXnor ? a[i * kw + w] ^ b[j * kw + w] : a[i * kw + w] & b[j * kw + w]);
            }
            c[i * ldc + j] = static_cast<int32_t>(kXnor ? k - 2 * count : count);
        }
    }
}
}  // namespace

void b1b1_gemm_ref(int64_t m, int64_t n, int64_t k, const uint64_t * a, const uint64_t * b, int32_t * c,
                   int64_t ldc) {
    popcount_gemm_ref<true>(m, n, k, a, b, c, ldc);
}

void and_popcount_gemm_ref(int64_t m, int64_t n, int64_t k, const uint64_t * a, const uint64_t * b, int32_t * c,
                           int64_t ldc) {
    popcount_gemm_ref<false>(m, n, k, a, b, c, ldc);
}

namespace {
float scaled(const ScaledOut & o, int64_t i, int64_t j, int64_t dot) {
    const float value = (o.row_scale[i] * o.col_scale[j]) * static_cast<float>(dot);
    return o.bias ? value + o.bias[j] : value;
}
}  // namespace

void b1b1_gemm_scaled_ref(int64_t m, int64_t n, int64_t k, const uint64_t * a, const uint64_t * b, const ScaledOut & o) {
    std::vector<int32_t> dots(static_cast<size_t>(m * n));
    b1b1_gemm_ref(m, n, k, a, b, dots.data(), n);
    for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) o.out[i * o.ldo + j] = scaled(o, i, j, dots[i * n + j]);
    }
}

void b1b1_gemm_signs_ref(int64_t m, int64_t n, int64_t k, const uint64_t * a, const uint64_t * b, const SignOut & o) {
    std::vector<float> values(static_cast<size_t>(m * n));
    b1b1_gemm_scaled_ref(m, n, k, a, b, ScaledOut{values.data(), n, o.row_scale, o.col_scale, o.bias});
    const int64_t nw = b1_words(n);
    std::fill(o.bits, o.bits + m * nw, uint64_t{0});
    for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
            const float v = values[i * n + j];
            const bool negative = o.through_gelu ? v > o.gelu_floor && 0.5f * v < 0.0f : v < 0.0f;
            if (negative) o.bits[i * nw + j / 64] |= uint64_t{1} << (j % 64);
        }
    }
}

PackedB1 repack_b1_panels(const uint64_t * b, int64_t n, int64_t k, int64_t nr) {
    const int64_t kw = b1_words(k);
    const int64_t panels = (n + nr - 1) / nr;
    PackedB1 packed{n, k, nr, std::vector<uint64_t>(static_cast<size_t>(panels * kw * nr), 0)};
    for (int64_t p = 0; p < panels; ++p) {
        uint64_t * dst = packed.words.data() + p * kw * nr;
        for (int64_t j = 0; j < nr && p * nr + j < n; ++j) {
            for (int64_t w = 0; w < kw; ++w) dst[w * nr + j] = b[(p * nr + j) * kw + w];
        }
    }
    return packed;
}

namespace {
// The scalar tier: the reference loops over the panel layout, so it shares the packing path with the
// SIMD tiers while staying obviously correct.
template <bool kXnor>
void popcount_gemm_scalar(int64_t m, const uint64_t * a, int64_t lda, const PackedB1 & b, int32_t * c, int64_t ldc) {
    const int64_t kw = b1_words(b.k);
    for (int64_t j = 0; j < b.n; ++j) {
        const uint64_t * panel = b.panel(j / b.nr);
        const int64_t lane = j % b.nr;
        for (int64_t i = 0; i < m; ++i) {
            int64_t count = 0;
            for (int64_t w = 0; w < kw; ++w) {
                const uint64_t x = a[i * lda + w], y = panel[w * b.nr + lane];
                count += __builtin_popcountll(kXnor ? x ^ y : x & y);
            }
            c[i * ldc + j] = static_cast<int32_t>(kXnor ? b.k - 2 * count : count);
        }
    }
}

void xnor_gemm_scaled_scalar(int64_t m, const uint64_t * a, int64_t lda, const PackedB1 & b, const ScaledOut & o) {
    std::vector<int32_t> dots(static_cast<size_t>(m * b.n));
    popcount_gemm_scalar<true>(m, a, lda, b, dots.data(), b.n);
    for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < b.n; ++j) o.out[i * o.ldo + j] = scaled(o, i, j, dots[i * b.n + j]);
    }
}

void xnor_gemm_signs_scalar(int64_t m, const uint64_t * a, int64_t lda, const PackedB1 & b, const SignOut & o) {
    std::vector<float> values(static_cast<size_t>(m * b.n));
    xnor_gemm_scaled_scalar(m, a, lda, b, ScaledOut{values.data(), b.n, o.row_scale, o.col_scale, o.bias});
    pack_value_signs(values.data(), m, b.n, o, o.bits, negative_bits_ref);
}
}  // namespace

const BgemmKernel & bgemm_kernel(Isa isa) {
    static const BgemmKernel scalar{Isa::scalar, 1, 1, popcount_gemm_scalar<true>, popcount_gemm_scalar<false>,
                                    xnor_gemm_scaled_scalar, xnor_gemm_signs_scalar, negative_bits_ref};
    if (static_cast<int>(isa) > static_cast<int>(best_supported_isa())) {
        throw std::invalid_argument(std::string("bgemm: this CPU cannot run the ") + isa_name(isa) + " tier");
    }
    switch (isa) {
        case Isa::scalar: return scalar;
        case Isa::avx2: return bgemm_kernel_avx2();
        case Isa::avx512bw: return bgemm_kernel_avx512bw();
        case Isa::avx512vpopcntdq: return bgemm_kernel_avx512vpopcntdq();
    }
    return scalar;
}

const BgemmKernel & bgemm_kernel() {
    static const BgemmKernel & selected = bgemm_kernel(selected_isa());
    return selected;
}

void pack_sign_rows(const BgemmKernel & kernel, const float * x, int64_t rows, int64_t k, int64_t ld, uint64_t * out) {
    const int64_t kw = b1_words(k);
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t w = 0; w < kw; ++w) {
            out[r * kw + w] = kernel.negative_bits(x + r * ld + w * 64, std::min<int64_t>(64, k - w * 64));
        }
    }
}

}  // namespace bitvit::runtime
