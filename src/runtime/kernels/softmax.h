// Row softmax for the runtime's full-precision attention maps (FP, LSQ, TWN, TerViT, GSB, Bi-ViT):
// softmax(x)_j = e^(x_j − max x) / Σ_i e^(x_i − max x), with e^x by one fixed polynomial formula
// (softmax-body.h) instead of the C library's expf, so the ISA tiers can vectorise it and still give
// identical bits. Against std::exp the formula is within 2 ulp; against LibTorch's softmax (its own
// vectorised exp, another summation order) the maps differ by a few ulp, as they did with std::exp.
#pragma once

#include <cstdint>

#include "runtime/cpu-features.h"

namespace bitvit::runtime {

// The formula on one value (the tiers' e^x), for tests.
float softmax_exp(float x);

// Reference: each of `rows` rows of n ≥ 1 finite values (row stride ld) replaced by its softmax —
// exponentials one at a time, the sum in 16 fixed lanes (lane l takes j ≡ l mod 16) added pairwise.
void softmax_rows_ref(float * x, int64_t rows, int64_t n, int64_t ld);
// The same bits, vectorised for the selected ISA tier (or `isa`, which the CPU must support).
void softmax_rows(float * x, int64_t rows, int64_t n, int64_t ld);
void softmax_rows(Isa isa, float * x, int64_t rows, int64_t n, int64_t ld);

}  // namespace bitvit::runtime
