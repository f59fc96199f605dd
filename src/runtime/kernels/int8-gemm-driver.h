// The int8 SIMD variants' shared driver: it walks C in tiles of up to kMaxRows rows of A × kMaxPanels
// panels of B and calls the variant's Tile<rows, panels>::run, instantiated for every edge size so
// the accumulators of each call are a fixed set of registers. Included only by the variants'
// translation units (each compiled with its own ISA flags).
#pragma once

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>
#include <vector>

#include "runtime/kernels/int8-gemm.h"

namespace bitvit::runtime::int8_driver {

// The four codes of one row of A at k = 4g … 4g+3 as one int32, zero past k (never reads past the row).
inline int32_t four_codes(const int8_t * row, int64_t g, int64_t k) {
    int32_t x = 0;
    std::memcpy(&x, row + 4 * g, static_cast<size_t>(std::min<int64_t>(4, k - 4 * g)));
    return x;
}

using TileFn = void (*)(const int8_t * a, int64_t lda, const PackedI8 & b, int64_t p0, int32_t * c, int64_t ldc);

template <template <int, int> class Tile, int kRows, int... kPanels>
constexpr auto tiles_of_rows(std::integer_sequence<int, kPanels...>) {
    return std::array<TileFn, sizeof...(kPanels)>{&Tile<kRows, kPanels + 1>::run...};
}

template <template <int, int> class Tile, int kMaxPanels, int... kRows>
constexpr auto all_tiles(std::integer_sequence<int, kRows...>) {
    return std::array<std::array<TileFn, kMaxPanels>, sizeof...(kRows)>{
        tiles_of_rows<Tile, kRows + 1>(std::make_integer_sequence<int, kMaxPanels>())...};
}

// A's rows as unsigned bytes a + 128 (XOR 0x80), each padded with zeros to b.groups()·4 bytes: what
// VPDPBUSD multiplies, converted once per block of rows instead of once per tile.
inline const int8_t * unsigned_rows(const int8_t * a, int64_t lda, int64_t rows, int64_t k, int64_t padded_k) {
    thread_local std::vector<int8_t> buffer;
    buffer.resize(static_cast<size_t>(rows * padded_k));
    for (int64_t r = 0; r < rows; ++r) {
        int8_t * row = buffer.data() + r * padded_k;
        for (int64_t j = 0; j < k; ++j) row[j] = static_cast<int8_t>(a[r * lda + j] ^ 0x80);
        std::fill(row + k, row + padded_k, int8_t{0});  // only the padding needs clearing
    }
    return buffer.data();
}

// kUnsignedA: the tiles read A through unsigned_rows (row stride b.groups()·4, no partial group).
template <template <int, int> class Tile, int kMaxRows, int kMaxPanels, bool kUnsignedA = false>
void drive(int64_t m, const int8_t * a, int64_t lda, const PackedI8 & b, int32_t * c, int64_t ldc) {
    static constexpr auto kTiles = all_tiles<Tile, kMaxPanels>(std::make_integer_sequence<int, kMaxRows>());
    const int64_t panels = (b.n + kInt8Nr - 1) / kInt8Nr;
    for (int64_t i0 = 0; i0 < m; i0 += kMaxRows) {
        const int64_t rows = std::min<int64_t>(kMaxRows, m - i0);
        const int8_t * block = kUnsignedA ? unsigned_rows(a + i0 * lda, lda, rows, b.k, b.groups() * 4) : a + i0 * lda;
        const int64_t block_lda = kUnsignedA ? b.groups() * 4 : lda;
        for (int64_t p0 = 0; p0 < panels; p0 += kMaxPanels) {
            const int64_t np = std::min<int64_t>(kMaxPanels, panels - p0);
            kTiles[rows - 1][np - 1](block, block_lda, b, p0, c + i0 * ldc, ldc);
        }
    }
}

// Runs step(g, read) for every group of four k: read(row, g) gives A's four codes, loaded directly
// for whole groups and through four_codes for the last, partial one.
template <typename Step>
inline void for_each_group(const int8_t * a, int64_t lda, int64_t k, Step step) {
    const int64_t full = k / 4;
    for (int64_t g = 0; g < full; ++g) {
        step(g, [&](int r) {
            int32_t x;
            std::memcpy(&x, a + r * lda + 4 * g, 4);
            return x;
        });
    }
    if (full * 4 < k) step(full, [&](int r) { return four_codes(a + r * lda, full, k); });
}

}  // namespace bitvit::runtime::int8_driver
