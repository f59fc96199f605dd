// Binary GEMM (XNOR–popcount) for W1A1 layers and binary q·kᵀ.
//
// Encoding (the one convention of the whole project, training export included): a value v is stored
// as one bit, 1 if v < 0 (meaning −1) and 0 otherwise (meaning +1), so sign(0) = +1, and −0.0 and
// NaN also map to +1. A binary matrix of `rows` × K values is *canonically packed* row-major: row r
// uses kw = ceil(K/64) little-endian uint64 words, value k at bit (k % 64) of word k / 64, and the
// kw·64 − K padding bits of each row are 0. For a, b ∈ {−1, +1}^K:
//     Σ_k a_k·b_k = K − 2·popcount(a_bits XOR b_bits)
// (padding bits are 0 in both operands, so they never count).
//
// The GEMM computes C[m][n] = Σ_k A[m][k]·B[n][k] (C = A·Bᵀ): A is the activations [M tokens, K],
// B the weights [N outputs, K]. B is repacked once at load time into the kernel's panel layout;
// A arrives canonically packed.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/cpu-features.h"

namespace bitvit::runtime {

inline int64_t b1_words(int64_t k) { return (k + 63) / 64; }

// Packs rows × K floats (row stride ld floats) into canonical bits: out has rows·b1_words(K) words.
void pack_b1_rows_ref(const float * x, int64_t rows, int64_t k, int64_t ld, uint64_t * out);
// One word of it: bit b set where x[b] < 0, for n ≤ 64 floats.
uint64_t negative_bits_ref(const float * x, int64_t n);

// Bits [start, start + count) of a canonically packed row, as one word (bit i = value start + i,
// higher bits 0), for 1 ≤ count ≤ 64: a column range of a packed matrix, such as one head's q.
inline uint64_t b1_field(const uint64_t * row, int64_t start, int64_t count) {
    const int64_t w = start / 64, shift = start % 64;
    uint64_t v = row[w] >> shift;
    if (shift != 0 && shift + count > 64) v |= row[w + 1] << (64 - shift);
    return count == 64 ? v : v & ((uint64_t{1} << count) - 1);
}

// Transposes a 64 × 64 bit matrix in place: bit c of a[r] becomes bit r of a[c] (swaps of ever
// smaller off-diagonal blocks, 32 × 32 down to 1 × 1: 6 · 32 word steps instead of 4096 bit moves).
void transpose_b1_64x64(uint64_t (&a)[64]);

// Reference: C[m][n] = K − 2·popcount(a[m] ^ b[n]) over canonical a (M × kw) and b (N × kw).
void b1b1_gemm_ref(int64_t m, int64_t n, int64_t k, const uint64_t * a, const uint64_t * b, int32_t * c,
                   int64_t ldc);
// Reference AND–popcount: C[m][n] = popcount(a[m] & b[n]) — a {0, 1} plane (SAB / Bool / GSB
// attention) against sign bits or masks; plane-gemm.h turns the counts into dot products.
void and_popcount_gemm_ref(int64_t m, int64_t n, int64_t k, const uint64_t * a, const uint64_t * b, int32_t * c,
                           int64_t ldc);

// B repacked into column panels of `nr` rows of B: panel p holds, for each word index w in [0, kw),
// the words b[p·nr + j][w] for j in [0, nr) contiguously (rows past N are zero).
struct PackedB1 {
    int64_t n = 0, k = 0, nr = 0;
    std::vector<uint64_t> words;  // ceil(n/nr) panels × kw × nr
    const uint64_t * panel(int64_t p) const { return words.data() + p * b1_words(k) * nr; }
};
PackedB1 repack_b1_panels(const uint64_t * b, int64_t n, int64_t k, int64_t nr);

// Where a binary product's results go as floats, scaled as they leave the registers:
//     out[i·ldo + j] = (row_scale[i]·col_scale[j])·(K − 2·popcount(a[i] ^ b[j])) + bias[j]
// in exactly this float order (QLinear's in training), without fused multiply-adds.
struct ScaledOut {
    float * out = nullptr;
    int64_t ldo = 0;
    const float * row_scale = nullptr;  // [M]: the activations' scale per token
    const float * col_scale = nullptr;  // [N]: the weights' scale per output channel
    const float * bias = nullptr;       // [N], or nullptr for none
};

// Reference: b1b1_gemm_ref, then the epilogue element by element.
void b1b1_gemm_scaled_ref(int64_t m, int64_t n, int64_t k, const uint64_t * a, const uint64_t * b, const ScaledOut & o);

// A binary product's results as the sign bits the next layer's sign quantizer makes of them, without
// storing the floats: each value v is ScaledOut's, then bit j of row i is set where v < 0 — or, with
// through_gelu, where GELU(v) < 0, i.e. v in (gelu_floor, 0) (gelu_sign, activations.h). The rows
// are canonical: b1_words(N) words each, padding bits 0.
struct SignOut {
    uint64_t * bits = nullptr;          // [M, b1_words(N)]
    const float * row_scale = nullptr;  // as ScaledOut
    const float * col_scale = nullptr;
    const float * bias = nullptr;
    bool through_gelu = false;
    float gelu_floor = 0.0f;
};

// Reference: b1b1_gemm_scaled_ref, then each value's sign by the predicate.
void b1b1_gemm_signs_ref(int64_t m, int64_t n, int64_t k, const uint64_t * a, const uint64_t * b, const SignOut & o);

// SignOut's bits of rows × n values (row stride n) into canonical rows of b1_words(n) words, a word
// at a time through `negative_bits(x, count)` (bit b set where x[b] < 0, for count ≤ 64 floats: a
// tier's V::negative_bits): the values' own signs, or GELU's — (0.5·v < 0) and (floor − v < 0), the
// latter exactly v > floor, since a difference of distinct floats is never 0.
template <class NegativeBits>
void pack_value_signs(const float * values, int64_t rows, int64_t n, const SignOut & o, uint64_t * out,
                      NegativeBits negative_bits) {
    const int64_t nw = b1_words(n);
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t w = 0; w < nw; ++w) {
            const float * v = values + r * n + w * 64;
            const int64_t count = n - w * 64 < 64 ? n - w * 64 : 64;
            if (!o.through_gelu) {
                out[r * nw + w] = negative_bits(v, count);
                continue;
            }
            float half[64], above[64];
            for (int64_t j = 0; j < count; ++j) {
                half[j] = 0.5f * v[j];
                above[j] = o.gelu_floor - v[j];
            }
            out[r * nw + w] = negative_bits(half, count) & negative_bits(above, count);
        }
    }
}

// One ISA tier's binary GEMMs, with the panel width their packed B must have.
struct BgemmKernel {
    Isa isa;
    int64_t mr, nr;  // rows of A and of B per micro-tile
    using Gemm = void (*)(int64_t m, const uint64_t * a, int64_t lda, const PackedB1 & b, int32_t * c, int64_t ldc);
    using ScaledGemm = void (*)(int64_t m, const uint64_t * a, int64_t lda, const PackedB1 & b, const ScaledOut & o);
    // C[m][n] = K − 2·popcount(a[m] ^ b[n]) for m < M, n < B.n; a is canonical (M × b1_words(K)
    // words, row stride lda words).
    Gemm gemm;
    // C[m][n] = popcount(a[m] & b[n]), same layouts.
    Gemm and_gemm;
    // The XNOR product with the ScaledOut epilogue (a W1A1 linear layer's whole output).
    ScaledGemm gemm_scaled;
    // The XNOR product into the next sign quantizer's bits (SignOut).
    using SignGemm = void (*)(int64_t m, const uint64_t * a, int64_t lda, const PackedB1 & b, const SignOut & o);
    SignGemm gemm_signs;
    // negative_bits_ref: one word of canonical sign bits (bit b set where x[b] < 0) from n ≤ 64 floats.
    uint64_t (*negative_bits)(const float * x, int64_t n);
};

// pack_b1_rows_ref (rows × K floats, row stride ld -> canonical sign bits) a word at a time through
// kernel.negative_bits.
void pack_sign_rows(const BgemmKernel & kernel, const float * x, int64_t rows, int64_t k, int64_t ld, uint64_t * out);

// The kernel of a tier (the CPU must support it), and the one selected_isa() picks.
const BgemmKernel & bgemm_kernel(Isa isa);
const BgemmKernel & bgemm_kernel();

}  // namespace bitvit::runtime
