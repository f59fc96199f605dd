// The SIMD tiers' kernel descriptors, each defined in its own translation unit compiled with that
// tier's flags (and only that unit). Call them only when the CPU supports the tier.
#pragma once

#include "runtime/kernels/bgemm.h"

namespace bitvit::runtime {
const BgemmKernel & bgemm_kernel_avx2();
const BgemmKernel & bgemm_kernel_avx512bw();
const BgemmKernel & bgemm_kernel_avx512vpopcntdq();
}  // namespace bitvit::runtime
