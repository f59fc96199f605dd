// Compiled with the AVX-512 VPOPCNTDQ flags (bench/CMakeLists.txt); called only when the CPU has them.
// Named accumulators, as in peak-rates-avx512vnni.cpp, so they stay in registers.
#include <immintrin.h>

#include "peak-rates.h"

namespace bitvit::bench {

int64_t xnor_popcount_zmm_loop(int64_t rounds) {
#define DECLARE(i) __m512i acc##i = _mm512_setzero_si512(); const __m512i b##i = _mm512_set1_epi64(0x9E3779B97F4A7C15ll * (i + 1));
    BITVIT_TWELVE(DECLARE)
#undef DECLARE
    __m512i a = _mm512_set1_epi64(0x0123456789ABCDEFll);
    for (int64_t n = 0; n < rounds; ++n) {
        // The binary GEMM's inner step: xor, popcount per 64-bit lane, accumulate.
#define STEP(i) acc##i = _mm512_add_epi64(acc##i, _mm512_popcnt_epi64(_mm512_xor_si512(a, b##i)));
        BITVIT_TWELVE(STEP)
#undef STEP
        asm volatile("" : "+v"(a));
    }
    int64_t sum = 0;
#define SUM(i) sum += _mm512_reduce_add_epi64(acc##i);
    BITVIT_TWELVE(SUM)
#undef SUM
    return sum;
}

}  // namespace bitvit::bench
