// Swin's window geometry, shared by training (src/train/swin.cpp, layers.cpp) and the runtime
// (src/runtime/swin.cpp) so that both attend over the same windows with the same bias and mask.
#pragma once

#include <cstdint>
#include <vector>

namespace bitvit::spec {

// timm's relative position index of an M×M window: for tokens a = (ya, xa) and b = (yb, xb) (row-major
// in the window), entry [a·M² + b] is the row (ya − yb + M − 1)·(2M − 1) + (xa − xb + M − 1) of the
// [(2M − 1)², H] bias table. [M², M²].
std::vector<int64_t> swin_relative_position_index(int64_t window);

// The mask of the shifted windows of a `resolution`² map padded to a multiple of M, as timm builds it:
// after the cyclic shift by `shift`, the last M rows (and columns) hold tokens from three regions —
// [0, R − M), [R − M, R − shift), [R − shift, R) of the padded side R — that are not neighbours in
// the image; a pair of tokens from different regions gets −100 before the softmax, any other 0.
// [nW, M², M²], windows in row-major order.
std::vector<float> swin_shift_mask(int64_t resolution, int64_t window, int64_t shift);

// The side of a `resolution`² map padded up to a multiple of the window.
inline int64_t padded_resolution(int64_t resolution, int64_t window) { return (resolution + window - 1) / window * window; }

}  // namespace bitvit::spec
