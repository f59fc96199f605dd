#include "runtime/kernels/float-gemm.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/cpu-features.h"
#include "runtime/kernels/bgemm.h"
#include "runtime/kernels/float-gemm-blocked.h"

namespace bitvit::runtime {

void sgemm_ref(int64_t m, int64_t n, int64_t k, const float * a, const float * bt, float * c, int64_t ldc) {
    for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
            float sum = 0.0f;
            for (int64_t p = 0; p < k; ++p) sum = std::fma(a[i * k + p], bt[p * n + j], sum);
            c[i * ldc + j] = sum;
        }
    }
}

void sgemm(Isa isa, int64_t m, int64_t n, int64_t k, const float * a, const float * bt, float * c, int64_t ldc) {
    if (static_cast<int>(isa) > static_cast<int>(best_supported_isa())) {
        throw std::invalid_argument(std::string("sgemm: this CPU cannot run the ") + isa_name(isa) + " tier");
    }
    switch (isa) {
        case Isa::scalar: return sgemm_blocked<4, 64>(m, n, k, a, bt, c, ldc);
        case Isa::avx2: return sgemm_avx2(m, n, k, a, bt, c, ldc);
        case Isa::avx512bw:
        case Isa::avx512vpopcntdq: return sgemm_avx512(m, n, k, a, bt, c, ldc);
    }
}

void sgemm(int64_t m, int64_t n, int64_t k, const float * a, const float * bt, float * c, int64_t ldc) {
    static const Isa isa = selected_isa();
    sgemm(isa, m, n, k, a, bt, c, ldc);
}

void f32_plane_gemm_ref(int64_t m, int64_t n, int64_t k, const float * a, PlaneBits w, float * c, int64_t ldc) {
    const int64_t kw = b1_words(k);
    for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
            float sum = 0.0f;
            for (int64_t p = 0; p < k; ++p) {
                const uint64_t bit = uint64_t{1} << (p % 64);
                if (w.mask && !(w.mask[j * kw + p / 64] & bit)) continue;
                const bool negative = w.sign && (w.sign[j * kw + p / 64] & bit);
                sum += negative ? -a[i * k + p] : a[i * k + p];
            }
            c[i * ldc + j] = sum;
        }
    }
}

namespace {

// The eight values a byte of canonical bits stands for: sign bits -> ±1 (bit set: −1), mask bits ->
// {0, 1}.
struct ByteValues {
    std::array<std::array<float, 8>, 256> sign, mask;
    ByteValues() {
        for (int byte = 0; byte < 256; ++byte) {
            for (int b = 0; b < 8; ++b) {
                sign[byte][b] = (byte >> b) & 1 ? -1.0f : 1.0f;
                mask[byte][b] = (byte >> b) & 1 ? 1.0f : 0.0f;
            }
        }
    }
};

// Row p of the plane's values, out[j] for j < n, from the transposed bits' row p.
void expand_row(const uint64_t * sign, const uint64_t * mask, int64_t n, float * out) {
    static const ByteValues values;
    const auto * sign_bytes = reinterpret_cast<const uint8_t *>(sign);  // little-endian words: byte j/8 holds bits j..j+7
    const auto * mask_bytes = reinterpret_cast<const uint8_t *>(mask);
    for (int64_t j0 = 0; j0 < n; j0 += 8) {
        const int64_t count = std::min<int64_t>(8, n - j0);
        const float * s = sign ? values.sign[sign_bytes[j0 / 8]].data() : values.sign[0].data();
        if (!mask) {
            std::memcpy(out + j0, s, static_cast<size_t>(count) * sizeof(float));
            continue;
        }
        const float * m = values.mask[mask_bytes[j0 / 8]].data();
        for (int64_t b = 0; b < count; ++b) out[j0 + b] = s[b] * m[b];
    }
}

}  // namespace

void f32_plane_gemm(Isa isa, int64_t m, int64_t n, int64_t k, const float * a, PlaneBits wt, float * c, int64_t ldc) {
    thread_local std::vector<float> values;  // [k, n], reused across calls on this thread
    values.resize(static_cast<size_t>(k * n));
    const int64_t nw = b1_words(n);
    for (int64_t p = 0; p < k; ++p) {
        expand_row(wt.sign ? wt.sign + p * nw : nullptr, wt.mask ? wt.mask + p * nw : nullptr, n, values.data() + p * n);
    }
    sgemm(isa, m, n, k, a, values.data(), c, ldc);
}

}  // namespace bitvit::runtime
