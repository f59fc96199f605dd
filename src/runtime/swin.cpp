// The packed Swin's forward pass (docs/methods.md §9): patch embedding and its norm, stages of window
// blocks with patch merging between them, the final norm, average pooling and head.fc. Each block
// gathers its windows — shifted cyclically and zero-padded as training does — into one buffer of
// [nW·M², C] tokens, so qkv, proj and the MLP run as single products over the whole map, and the
// windows' attention (attention.cpp) runs over every (window, head) pair at once.
#include <algorithm>

#include "runtime/model.h"
#include "runtime/parallel.h"
#include "spec/windows.h"

namespace bitvit::runtime {

namespace {

// Buffers reused from block to block on one thread (every element is written before it is read; the
// windows' padding tokens are zeroed by the gather).
struct SwinScratch {
    std::vector<float> normed, windows, attended, branch;
};

// Window token (w, t) of the shifted, padded map reads token ((py + s) mod R, (px + s) mod R) of the
// R×R map, where (py, px) is its place in the padded map; tokens of the padding (py or px ≥ R) have
// no source. Returns the source's index, or −1.
int64_t window_source(int64_t w, int64_t t, int64_t R, int64_t M, int64_t shift) {
    const int64_t per_side = spec::padded_resolution(R, M) / M;
    const int64_t py = w / per_side * M + t / M, px = w % per_side * M + t % M;
    if (py >= R || px >= R) return -1;
    return (py + shift) % R * R + (px + shift) % R;
}

}  // namespace

void PackedModel::swin_block(const SwinStage & stage, const Block & b, std::vector<float> & x, int threads) const {
    thread_local SwinScratch s;
    const int64_t R = stage.resolution, C = stage.dim, M = stage.window, T = M * M;
    const int64_t per_side = spec::padded_resolution(R, M) / M, G = per_side * per_side, tokens = R * R;
    s.normed.resize(static_cast<size_t>(tokens * C));
    s.windows.resize(static_cast<size_t>(G * T * C));
    s.attended.resize(s.windows.size());
    s.branch.resize(s.normed.size());
    auto & sc = s;
    const int elementwise = threads_for(tokens * C * kElementwiseMacs, threads);
    // norm1, then roll(−shift), pad and partition, as the training block does: each window token is
    // its source token normalised straight into the windows buffer (padding tokens are zeros).
    parallel_for(G * T, elementwise, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
            const int64_t src = window_source(i / T, i % T, R, M, b.shift);
            float * dst = &sc.windows[i * C];
            if (src < 0) {
                std::fill(dst, dst + C, 0.0f);
            } else {
                b.norm1.forward(&x[src * C], 1, C, dst);
            }
        }
    });
    const float * mask = b.shift > 0 ? stage.shift_mask.data() : nullptr;
    attend(b, AttentionShape{C, stage.heads, T, G, mask}, variant(), s.windows.data(), s.attended.data(), threads);
    // Partition reversed, padding cropped, roll(+shift) undone, added to the residual stream, and the
    // token's norm2 in the same pass (every token has exactly one window slot, so chunks of slots
    // write disjoint tokens).
    parallel_for(G * T, elementwise, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
            const int64_t dst = window_source(i / T, i % T, R, M, b.shift);
            if (dst < 0) continue;
            float * token = &x[dst * C];
            const float * update = &sc.attended[i * C];
            for (int64_t j = 0; j < C; ++j) token[j] += update[j];
            b.norm2.forward(token, 1, C, &sc.normed[dst * C]);
        }
    });
    mlp(b, tokens, b.fc1.weight.rows, s.normed.data(), s.branch.data(), threads);
    parallel_for(tokens, elementwise, [&](int64_t t0, int64_t t1) {
        for (int64_t i = t0 * C; i < t1 * C; ++i) x[i] += sc.branch[i];
    });
}

// Patch merging: 2×2 neighbourhoods concatenated in timm's order — channel block 2·col + row — then
// LayerNorm(4C) and the reduction: x [R², C] -> [(R/2)², 2C], R and C updated.
void PackedModel::swin_merge(const SwinStage & stage, std::vector<float> & x, int64_t & R, int64_t & C, int threads) const {
    thread_local std::vector<float> merged;
    const int64_t r = R / 2, in = 4 * C;
    merged.resize(static_cast<size_t>(r * r * in));
    auto & m = merged;
    parallel_for(r * r, threads_for(r * r * in * kElementwiseMacs, threads), [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
            float * dst = &m[t * in];
            for (int64_t block = 0; block < 4; ++block) {
                const int64_t row = block % 2, col = block / 2;
                const float * src = &x[((2 * (t / r) + row) * R + 2 * (t % r) + col) * C];
                std::copy(src, src + C, dst + block * C);
            }
            stage.merge_norm.forward(dst, 1, in, dst);
        }
    });
    R = r;
    C = stage.dim;
    x.resize(static_cast<size_t>(R * R * C));  // every value written by the reduction
    stage.reduction.forward(merged.data(), R * R, x.data(), threads);
}

std::vector<float> PackedModel::forward_swin(const float * image, int threads, std::vector<std::vector<float>> * block_outputs) const {
    const spec::SwinConfig & c = swin_config_;
    std::vector<float> patches;
    im2col(image, c.patch_size, patches);
    int64_t R = c.stage_resolution(0), C = c.embed_dim;
    std::vector<float> x(static_cast<size_t>(R * R * C));
    patch_embed_.forward(patches.data(), R * R, x.data(), threads);
    parallel_for(R * R, threads_for(R * R * C * kElementwiseMacs, threads),
                 [&](int64_t t0, int64_t t1) { patch_norm_.forward(&x[t0 * C], t1 - t0, C, &x[t0 * C]); });
    for (size_t i = 0; i < stages_.size(); ++i) {
        const SwinStage & stage = stages_[i];
        if (i > 0) swin_merge(stage, x, R, C, threads);
        for (const Block & b : stage.blocks) {
            swin_block(stage, b, x, threads);
            if (block_outputs) block_outputs->push_back(x);
        }
    }
    norm_.forward(x.data(), R * R, C, x.data());
    std::vector<float> pooled(static_cast<size_t>(C), 0.0f);
    for (int64_t t = 0; t < R * R; ++t) {
        for (int64_t j = 0; j < C; ++j) pooled[j] += x[t * C + j];
    }
    for (float & v : pooled) v /= static_cast<float>(R * R);
    std::vector<float> logits(static_cast<size_t>(c.num_classes));
    head_.forward(pooled.data(), 1, logits.data());
    return logits;
}

}  // namespace bitvit::runtime
