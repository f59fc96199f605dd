#include "runtime/kernels/int8-gemm.h"

#include <algorithm>

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

PackedI8 repack_i8_panels(const int8_t * b, int64_t n, int64_t k) {
    PackedI8 out;
    out.n = n;
    out.k = k;
    const int64_t panels = (n + kInt8Nr - 1) / kInt8Nr, groups = out.groups();
    out.bytes.assign(static_cast<size_t>(panels * groups * kInt8Nr * 4), 0);
    out.row_sums.assign(static_cast<size_t>(n), 0);
    for (int64_t j = 0; j < n; ++j) {
        int8_t * panel = out.bytes.data() + (j / kInt8Nr) * groups * kInt8Nr * 4 + (j % kInt8Nr) * 4;
        for (int64_t p = 0; p < k; ++p) {
            panel[(p / 4) * kInt8Nr * 4 + p % 4] = b[j * k + p];
            out.row_sums[j] += b[j * k + p];
        }
    }
    return out;
}

namespace {

// The portable variant: one panel of B at a time against up to kRows rows of A, walking the packed
// layout exactly as the SIMD kernels do.
void int8_gemm_portable(int64_t m, const int8_t * a, int64_t lda, const PackedI8 & b, int32_t * c, int64_t ldc) {
    constexpr int64_t kRows = 4;
    const int64_t panels = (b.n + kInt8Nr - 1) / kInt8Nr;
    for (int64_t i0 = 0; i0 < m; i0 += kRows) {
        const int64_t rows = std::min(kRows, m - i0);
        for (int64_t p = 0; p < panels; ++p) {
            int32_t acc[kRows][kInt8Nr] = {};
            const int8_t * panel = b.panel(p);
            for (int64_t kk = 0; kk < b.k; ++kk) {
                const int8_t * codes = panel + (kk / 4) * kInt8Nr * 4 + kk % 4;
                for (int64_t r = 0; r < rows; ++r) {
                    const int32_t av = a[(i0 + r) * lda + kk];
                    for (int64_t j = 0; j < kInt8Nr; ++j) acc[r][j] += av * codes[j * 4];
                }
            }
            const int64_t cols = std::min(kInt8Nr, b.n - p * kInt8Nr);
            for (int64_t r = 0; r < rows; ++r) std::copy(acc[r], acc[r] + cols, c + (i0 + r) * ldc + p * kInt8Nr);
        }
    }
}

const Int8Kernel kPortable{"portable", int8_gemm_portable};

}  // namespace

std::vector<const Int8Kernel *> int8_kernels() {
    std::vector<const Int8Kernel *> out = {&kPortable};
    if (cpu_features().avx2) out.push_back(&int8_kernel_avx2());
    if (cpu_features().avx512vnni) out.push_back(&int8_kernel_avx512vnni());
    return out;
}

const Int8Kernel & int8_kernel() {
    static const Int8Kernel & kernel = [&]() -> const Int8Kernel & {
        const Isa isa = selected_isa();
        if (static_cast<int>(isa) >= static_cast<int>(Isa::avx512bw) && cpu_features().avx512vnni) {
            return int8_kernel_avx512vnni();
        }
        if (static_cast<int>(isa) >= static_cast<int>(Isa::avx2)) return int8_kernel_avx2();
        return kPortable;
    }();
    return kernel;
}

}  // namespace bitvit::runtime
