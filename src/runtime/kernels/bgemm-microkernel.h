// The binary-GEMM micro-tile and driver, written once over a small vector-ops interface `V` and
// instantiated by each SIMD tier's translation unit with its own intrinsics (and compile flags).
//
// V provides: kLanes (uint64 words per vector), Vec, zero(), load(const uint64_t*),
// broadcast(uint64_t), xor_(Vec, Vec), and_(Vec, Vec), add_popcount(Vec acc, Vec x) -> acc +
// popcount per 64-bit lane, store_result(int32_t * c, Vec counts, int64_t k, int64_t n):
// c[l] = k − 2·counts[l] for the first n ≤ kLanes lanes (the epilogue stays in registers: for small
// K it is a large share), with k = −1 meaning "store the counts themselves", and
// store_scaled(float * out, Vec counts0, Vec counts1, int64_t k, int64_t n, float row_scale, const
// float * col_scale, const float * bias): the ScaledOut epilogue (bgemm.h) of k − 2·counts for the
// first n ≤ 2·kLanes columns of two adjacent accumulators (converted together: the epilogue is a
// large share at small K), reading col_scale and bias (nullable) for those columns only; and for packing,
// negative_bits(const float * x, int64_t n) -> bit b set where x[b] < 0, for n ≤ 64 floats.
//
// Two products share the tile: XNOR (popcount of a ^ b, stored as K − 2·count: ±1 · ±1) and AND
// (popcount of a & b, stored as is: a {0, 1} plane against ±1 signs or {0, 1} masks).
#pragma once

#include <algorithm>
#include <vector>

#include "runtime/kernels/bgemm.h"

namespace bitvit::runtime {

// MR rows of A × (NV·V::kLanes) rows of B. Per word index w: NV loads of B, MR broadcasts of A,
// MR·NV xor + popcount-accumulates into MR·NV vector accumulators held in registers. Lane sums are
// int64: no overflow for any K.
enum class BitOp { xnor, and_ };

template <class V, int MR, int NV, BitOp Op = BitOp::xnor>
struct BgemmTile {
    static constexpr int64_t kMR = MR;
    static constexpr int64_t kNR = NV * V::kLanes;
    static_assert(NV % 2 == 0, "the scaled epilogue stores accumulators in pairs");

    using Vec = typename V::Vec;

    // C[i][j] = k − 2·popcount over w of (a_rows[i][w] ^ panel[w·kNR + j]) for i < mr, j < nr;
    // c_rows[i] points at row i's first column of this tile.
    static void run(const uint64_t * const * a_rows, const uint64_t * panel, int64_t kw, int64_t k,
                    int32_t * const * c_rows, int64_t mr, int64_t nr) {
        Vec acc[MR][NV];
        accumulate(acc, a_rows, panel, kw);
        for (int i = 0; i < MR; ++i) {
            if (i >= mr) break;
            for (int j = 0; j < NV; ++j) {
                const int64_t lanes = std::min<int64_t>(V::kLanes, nr - j * V::kLanes);
                if (lanes > 0) V::store_result(c_rows[i] + j * V::kLanes, acc[i][j], Op == BitOp::xnor ? k : -1, lanes);
            }
        }
    }

    // The same tile through the ScaledOut epilogue: rows m0 + i, columns n0 + j of o.
    // Kept out of line: inlined into bgemm_drive_signs, GCC spilled the B vectors of the inner loop.
    [[gnu::noinline]] static void run_scaled(const uint64_t * const * a_rows, const uint64_t * panel, int64_t kw, int64_t k,
                           const ScaledOut & o, int64_t m0, int64_t n0, int64_t mr, int64_t nr) {
        Vec acc[MR][NV];
        accumulate(acc, a_rows, panel, kw);
        for (int i = 0; i < MR; ++i) {
            if (i >= mr) break;
            float * out = o.out + (m0 + i) * o.ldo + n0;
            const float row_scale = o.row_scale[m0 + i];
            for (int j = 0; j < NV; j += 2) {
                const int64_t lanes = std::min<int64_t>(2 * V::kLanes, nr - j * V::kLanes), c = n0 + j * V::kLanes;
                if (lanes > 0) {
                    V::store_scaled(out + j * V::kLanes, acc[i][j], acc[i][j + 1], k, lanes, row_scale, o.col_scale + c,
                                    o.bias ? o.bias + c : nullptr);
                }
            }
        }
    }

  private:
    static void accumulate(Vec (&acc)[MR][NV], const uint64_t * const * a_rows, const uint64_t * panel, int64_t kw) {
        for (int i = 0; i < MR; ++i)
            for (int j = 0; j < NV; ++j) acc[i][j] = V::zero();
        for (int64_t w = 0; w < kw; ++w) {
            typename V::Vec b[NV];
            for (int j = 0; j < NV; ++j) b[j] = V::load(panel + w * kNR + j * V::kLanes);
            for (int i = 0; i < MR; ++i) {
                const typename V::Vec a = V::broadcast(a_rows[i][w]);
                for (int j = 0; j < NV; ++j) {
                    const typename V::Vec bits = Op == BitOp::xnor ? V::xor_(a, b[j]) : V::and_(a, b[j]);
                    acc[i][j] = V::add_popcount(acc[i][j], bits);
                }
            }
        }
    }
};

// C = K − 2·popcount over the whole matrix, tile by tile. B's panel stays in L1 while the tile walks
// down all M rows of A. A remainder of M rows re-reads the last valid row (its results are not
// stored), so one full-size tile shape serves every M.
// visit(rows, panel, m0, n0, mr, nr) for every tile; rows[i] is A's row m0 + i (the last valid row
// for i ≥ mr).
template <class Tile, class Visit>
void for_each_tile(int64_t m, const uint64_t * a, int64_t lda, const PackedB1 & b, Visit visit) {
    const uint64_t * rows[Tile::kMR];
    for (int64_t n0 = 0; n0 < b.n; n0 += Tile::kNR) {
        const uint64_t * panel = b.panel(n0 / Tile::kNR);
        const int64_t nr = std::min<int64_t>(Tile::kNR, b.n - n0);
        for (int64_t m0 = 0; m0 < m; m0 += Tile::kMR) {
            const int64_t mr = std::min<int64_t>(Tile::kMR, m - m0);
            for (int64_t i = 0; i < Tile::kMR; ++i) rows[i] = a + (m0 + std::min(i, mr - 1)) * lda;
            visit(rows, panel, m0, n0, mr, nr);
        }
    }
}

template <class Tile>
void bgemm_drive(int64_t m, const uint64_t * a, int64_t lda, const PackedB1 & b, int32_t * c, int64_t ldc) {
    int32_t * c_rows[Tile::kMR];
    for_each_tile<Tile>(m, a, lda, b, [&](const uint64_t * const * rows, const uint64_t * panel, int64_t m0, int64_t n0,
                                          int64_t mr, int64_t nr) {
        for (int64_t i = 0; i < Tile::kMR; ++i) c_rows[i] = c + (m0 + std::min(i, mr - 1)) * ldc + n0;
        Tile::run(rows, panel, b1_words(b.k), b.k, c_rows, mr, nr);
    });
}

template <class Tile>
void bgemm_drive_scaled(int64_t m, const uint64_t * a, int64_t lda, const PackedB1 & b, const ScaledOut & o) {
    for_each_tile<Tile>(m, a, lda, b, [&](const uint64_t * const * rows, const uint64_t * panel, int64_t m0, int64_t n0,
                                          int64_t mr, int64_t nr) {
        Tile::run_scaled(rows, panel, b1_words(b.k), b.k, o, m0, n0, mr, nr);
    });
}

// The XNOR product into SignOut: a block of MR rows at a time through the scaled tile into a scratch
// of MR × N floats (a few KB for the layer widths here, so it stays in L1), then packed with V.
template <class Tile, class V>
void bgemm_drive_signs(int64_t m, const uint64_t * a, int64_t lda, const PackedB1 & b, const SignOut & o);

template <class Tile, class V>
void bgemm_drive_signs(int64_t m, const uint64_t * a, int64_t lda, const PackedB1 & b, const SignOut & o) {
    thread_local std::vector<float> values;
    values.resize(static_cast<size_t>(Tile::kMR * b.n));
    const uint64_t * rows[Tile::kMR];
    for (int64_t m0 = 0; m0 < m; m0 += Tile::kMR) {
        const int64_t mr = std::min<int64_t>(Tile::kMR, m - m0);
        for (int64_t i = 0; i < Tile::kMR; ++i) rows[i] = a + (m0 + std::min(i, mr - 1)) * lda;
        const ScaledOut block{values.data(), b.n, o.row_scale + m0, o.col_scale, o.bias};
        for (int64_t n0 = 0; n0 < b.n; n0 += Tile::kNR) {
            Tile::run_scaled(rows, b.panel(n0 / Tile::kNR), b1_words(b.k), b.k, block, 0, n0, mr,
                             std::min<int64_t>(Tile::kNR, b.n - n0));
        }
        pack_value_signs(values.data(), mr, b.n, o, o.bits + m0 * b1_words(b.n), V::negative_bits);
    }
}

}  // namespace bitvit::runtime
