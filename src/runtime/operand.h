// The operands of the runtime's matrix products, and the product itself.
//
// Every product in a DeiT is C[t][n] = Σ_j X[t][j]·W[n][j] over a shared dimension of length k: a
// linear layer (X tokens, W weights), q·kᵀ (X = q, W = k of one head) and probs·v (X = probs,
// W = vᵀ). Each side is one of three encodings:
//
//   f32     rows × k floats, row-major.
//   planes  a sum of binary planes: value[r][j] = offset[r] + Σ_p scale_p[r]·m_p[r][j]·(1 − 2·s_p[r][j])
//           with sign bits s_p and mask bits m_p canonically packed (kernels/bgemm.h). A plane without
//           a mask is a ±1 plane (m = 1 everywhere); a plane whose sign bits are all 0 is a {0, 1}
//           plane; a masked plane with signs is ternary {−1, 0, +1}. This one form covers sign/XNOR/
//           BWN/PWS weights (one ±1 plane with per-row scales), TWN ternary weights (one masked
//           plane), SAB and Bool attention ({0, 1}), elastic and ActBi activations (a ±1 plane with
//           an offset), and GSB's three superposed groups (three planes).
//   int8    value[r][j] = scale[r]·(code[r][j] − zero[r]) with integer zero points (LSQ / LSQ+ codes,
//           8-bit and ternary weights for TerViT).
//
// Scales and offsets vary per row only: a per-column scale cannot be factored out of a bit-wise dot
// product, so quantizers with one (per-input-channel LSQ steps) are decoded to f32 instead.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/kernels/bgemm.h"
#include "runtime/kernels/int8-gemm.h"

namespace bitvit::runtime {

// One binary plane of `rows` × k values. Which bit vectors are present says what it holds:
//   sign only       ±1                 (1 − 2s)
//   mask only       {0, 1}             m
//   sign and mask   {−1, 0, +1}        m·(1 − 2s), sign bits only where the mask is set
struct Plane {
    std::vector<uint64_t> sign;  // rows × b1_words(k), canonical (padding bits 0), or empty
    std::vector<uint64_t> mask;  // same shape, or empty
    std::vector<float> scale;    // [rows]
    PackedB1 packed;             // a ±1 weight plane repacked for the XNOR kernel (prepare_weight)
    // A weight plane against full-precision inputs (W1A32), transposed for the FP32 GEMM: k rows of
    // b1_words(rows) canonical words each, present where sign / mask are (prepare_weight).
    std::vector<uint64_t> sign_t, mask_t;
};

struct Operand {
    enum class Kind { f32, planes, int8 };
    Kind kind = Kind::f32;
    int64_t rows = 0, k = 0;
    std::vector<float> values;   // f32: rows × k
    std::vector<float> values_t; // f32 weight: values transposed [k, rows] for the FP32 GEMM (prepare_weight)
    std::vector<Plane> planes;   // planes
    std::vector<float> offset;   // planes: [rows] or empty (0)
    std::vector<int8_t> codes;   // int8: rows × k
    std::vector<float> scale;    // int8: [rows]
    std::vector<int32_t> zero;   // int8: [rows]
    PackedI8 codes_packed;       // int8 weight, or one-plane weight as codes {−1, 0, +1}, repacked for
                                 // the int8 kernel (prepare_weight); empty when not prepared

    // The dense values (for fallbacks, tests and verification): rows × k floats.
    std::vector<float> decode() const;
};

// One ±1 plane without mask or offset: what the XNOR kernel multiplies.
bool is_pm1_plane(const Operand & op);

// Products that run on the bits skip work on decode() and go through kernels:
//   planes × planes  popcount kernels (XNOR for ±1 × ±1 planes, the general masked form otherwise)
//   int8 × int8      integer dot products (the int8 kernel: VNNI, AVX2 or portable)
//   int8 × one plane integer dot products against the plane's codes {−1, 0, +1} (TerViT's ternary
//                    weights), when prepare_weight built them
//   f32 × planes     the FP32 GEMM on the weight's values expanded from its bits (W1A32), when
//                    prepare_weight kept them transposed; sign-select accumulation otherwise
//   f32 × f32        FP32 GEMM
// Any other pairing decodes the quantized side(s) to f32. Sizes must agree (x.k == w.k).
//
// out: x.rows × w.rows floats, row-major. bias: [w.rows] added to every row after the product (the
// order training uses), inside the product's own epilogue where it can be, or null.
void matmul(const Operand & x, const Operand & w, float * out, const float * bias = nullptr);

// What a layer's input quantizer feeds its weight: binary planes, int8 codes, or full-precision floats.
enum class LayerInputs { planes, int8, f32 };

// Repacks a weight once for its kernel — ±1 planes into the XNOR kernel's panels, an f32 weight
// transposed for the FP32 GEMM, int8 codes into the int8 kernel's panels — so matmul() does not redo
// it on every call. With int8 inputs, a weight of one plane without offset (binary or ternary) is
// also kept as int8 codes {−1, 0, +1} for the int8 kernel; with f32 inputs (W1A32), its planes are
// also kept transposed for the FP32 GEMM (Plane::sign_t, mask_t).
void prepare_weight(Operand & w, LayerInputs inputs = LayerInputs::planes);

// Checks an operand's internal consistency (vector sizes against rows and k, padding bits zero,
// sign bits inside masks, finite scales); throws std::invalid_argument naming `what`.
void validate_operand(const Operand & op, const std::string & what);

}  // namespace bitvit::runtime
