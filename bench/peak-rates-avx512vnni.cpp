// Compiled with the AVX-512 VNNI flags (bench/CMakeLists.txt); called only when the CPU has them.
// The twelve accumulators are named variables so they stay in registers: a loop over an array of
// them leaves them in memory, and store-to-load latency, not the multiply-add unit, sets the rate.
#include <immintrin.h>

#include "peak-rates.h"

namespace bitvit::bench {

int64_t vpdpbusd_zmm_loop(int64_t rounds) {
#define DECLARE(i) __m512i acc##i = _mm512_set1_epi32(i);
    BITVIT_TWELVE(DECLARE)
#undef DECLARE
    __m512i a = _mm512_set1_epi8(3);
    const __m512i b = _mm512_set1_epi8(-5);
    for (int64_t n = 0; n < rounds; ++n) {
#define STEP(i) acc##i = _mm512_dpbusd_epi32(acc##i, a, b);
        BITVIT_TWELVE(STEP)
#undef STEP
        asm volatile("" : "+v"(a));
    }
    int64_t sum = 0;
#define SUM(i) sum += _mm512_reduce_add_epi32(acc##i);
    BITVIT_TWELVE(SUM)
#undef SUM
    return sum;
}

int64_t vfmadd_zmm_loop(int64_t rounds) {
#define DECLARE(i) __m512 acc##i = _mm512_set1_ps(static_cast<float>(i));
    BITVIT_TWELVE(DECLARE)
#undef DECLARE
    __m512 a = _mm512_set1_ps(0.999f);
    const __m512 b = _mm512_set1_ps(0.001f);
    for (int64_t n = 0; n < rounds; ++n) {
#define STEP(i) acc##i = _mm512_fmadd_ps(acc##i, a, b);
        BITVIT_TWELVE(STEP)
#undef STEP
        asm volatile("" : "+v"(a));
    }
    float sum = 0;
#define SUM(i) sum += _mm512_reduce_add_ps(acc##i);
    BITVIT_TWELVE(SUM)
#undef SUM
    return static_cast<int64_t>(sum);
}

}  // namespace bitvit::bench
