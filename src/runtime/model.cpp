// The packed DeiT's forward pass: linear layers on the kernels their operands call for, the block
// (attention in attention.cpp), the residual stream and the heads. Swin's stages are in swin.cpp,
// loading is in load.cpp.
#include "runtime/model.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <thread>

#include "runtime/kernels/activations.h"
#include "runtime/parallel.h"

namespace bitvit::runtime {

void LayerNorm::forward(const float * x, int64_t rows, int64_t dim, float * out) const {
    layer_norm_rows(x, rows, dim, weight.data(), bias.data(), eps, out);
}

void Linear::forward(const float * x, int64_t tokens, float * y, int threads) const {
    // Token quantizers act row by row, so chunks of tokens are independent products.
    parallel_for(tokens, threads_for(tokens * weight.k * weight.rows, threads), [&](int64_t t0, int64_t t1) {
        const Operand in = input.encode(x + t0 * weight.k, t1 - t0, weight.k, weight.k, SiteScope::token, 0);
        matmul(in, weight, y + t0 * weight.rows, bias.empty() ? nullptr : bias.data());
    });
}

void Linear::forward_signs(const float * x, int64_t tokens, uint64_t * bits, bool through_gelu, int threads) const {
    const int64_t out_words = b1_words(weight.rows);
    parallel_for(tokens, threads_for(tokens * weight.k * weight.rows, threads), [&](int64_t t0, int64_t t1) {
        const Operand in = input.encode(x + t0 * weight.k, t1 - t0, weight.k, weight.k, SiteScope::token, 0);
        const BgemmKernel & kernel = bgemm_kernel();
        const SignOut o{bits + t0 * out_words, nullptr, nullptr, bias.empty() ? nullptr : bias.data(), through_gelu,
                        gelu_negative_floor()};
        const bool xnor = is_pm1_plane(in) && is_pm1_plane(weight) && weight.planes[0].packed.n == weight.rows;
        if (xnor) {
            SignOut scaled = o;
            scaled.row_scale = in.planes[0].scale.data();
            scaled.col_scale = weight.planes[0].scale.data();
            kernel.gemm_signs(t1 - t0, in.planes[0].sign.data(), b1_words(weight.k), weight.planes[0].packed, scaled);
            return;
        }
        thread_local std::vector<float> values;
        values.resize(static_cast<size_t>((t1 - t0) * weight.rows));
        matmul(in, weight, values.data(), o.bias);
        pack_value_signs(values.data(), t1 - t0, weight.rows, o, o.bits, kernel.negative_bits);
    });
}

void Linear::forward_from_signs(const uint64_t * bits, int64_t tokens, float * y, int threads) const {
    const int64_t in_words = b1_words(weight.k);
    parallel_for(tokens, threads_for(tokens * weight.k * weight.rows, threads), [&](int64_t t0, int64_t t1) {
        const Operand in = input.encode_sign_bits(bits + t0 * in_words, t1 - t0, weight.k);
        matmul(in, weight, y + t0 * weight.rows, bias.empty() ? nullptr : bias.data());
    });
}

std::string PackedModel::describe() const {
    auto n = [](int64_t v) { return std::to_string(v); };
    const int64_t C = in_chans(), S = img_size();
    std::string text = "input " + n(C) + "×" + n(S) + "×" + n(S);
    if (!swin_) {
        const ModelConfig & c = config_;
        return text + ", patch " + n(c.patch_size) + ", " + n(c.num_tokens()) + " tokens; dim " + n(c.embed_dim) + ", depth " +
               n(c.depth) + ", heads " + n(c.num_heads) + ", hidden " + n(c.hidden()) + ", classes " + n(c.num_classes);
    }
    const spec::SwinConfig & c = swin_config_;
    text += ", patch " + n(c.patch_size) + ", window " + n(c.window_size) + "; stages";
    for (int64_t i = 0; i < c.num_stages(); ++i) {
        text += std::string(i ? "," : "") + " " + n(c.stage_resolution(i)) + "×" + n(c.stage_resolution(i)) + "×" +
                n(c.stage_dim(i)) + " (" + n(c.depths[i]) + " blocks, " + n(c.num_heads[i]) + " heads, " +
                n(c.stage_window(i)) + "×" + n(c.stage_window(i)) + " windows)";
    }
    return text + "; classes " + n(c.num_classes);
}

void PackedModel::normalize(const uint8_t * pixels, float * image) const {
    const int64_t plane = img_size() * img_size();
    for (int64_t c = 0; c < in_chans(); ++c) {
        // The training loader's arithmetic (src/train/loader.cpp), so inputs match bit for bit.
        const float scale = 1.0f / (255.0f * std_[c]);
        const float shift = -mean_[c] / std_[c];
        for (int64_t i = 0; i < plane; ++i) image[c * plane + i] = pixels[c * plane + i] * scale + shift;
    }
}

void PackedModel::im2col(const float * image, int64_t P, std::vector<float> & patches) const {
    const int64_t C = in_chans(), S = img_size(), G = S / P, patch_len = C * P * P;
    patches.resize(static_cast<size_t>(G * G * patch_len));
    for (int64_t gy = 0; gy < G; ++gy) {
        for (int64_t gx = 0; gx < G; ++gx) {
            float * dst = patches.data() + (gy * G + gx) * patch_len;
            for (int64_t ch = 0; ch < C; ++ch) {
                for (int64_t y = 0; y < P; ++y) {
                    const float * src = image + ch * S * S + (gy * P + y) * S + gx * P;
                    std::copy(src, src + P, dst + (ch * P + y) * P);
                }
            }
        }
    }
}

void PackedModel::embed(const float * image, float * x, int threads) const {
    const ModelConfig & c = config_;
    const int64_t D = c.embed_dim, N = c.num_tokens(), G = c.grid();
    const int64_t first_patch = c.distilled ? 2 : 1;
    std::vector<float> patches;
    im2col(image, c.patch_size, patches);
    patch_embed_.forward(patches.data(), G * G, x + first_patch * D, threads);
    std::copy(cls_token_.begin(), cls_token_.end(), x);
    if (c.distilled) std::copy(dist_token_.begin(), dist_token_.end(), x + D);
    for (int64_t i = 0; i < N * D; ++i) x[i] += pos_embed_[i];
}

void PackedModel::mlp(const Block & b, int64_t N, int64_t H, const float * normed, float * out, int threads) const {
    const spec::BlockVariant & v = variant();
    const bool relu = v.mlp_act == "relu", rprelu = v.mlp_act == "rprelu";
    // fc2 keeps only the sign of a GELU or ReLU activation when its input quantizer is sign (a clamp
    // to ±clip keeps the sign too): GELU is reduced to its sign — exactly, including its underflow to
    // −0 far below zero — straight from fc1's products (no floats stored), and ReLU's output is never
    // negative.
    const bool only_sign = b.fc2.input.sign_only() && !rprelu;
    thread_local std::vector<float> hidden;
    thread_local std::vector<uint64_t> hidden_bits;
    if (only_sign && !relu) {
        hidden_bits.resize(static_cast<size_t>(N * b1_words(H)));
        b.fc1.forward_signs(normed, N, hidden_bits.data(), /*through_gelu=*/true, threads);
        b.fc2.forward_from_signs(hidden_bits.data(), N, out, threads);
        return;
    }
    hidden.resize(static_cast<size_t>(N * H));
    auto & h_all = hidden;  // this thread's buffer, captured by reference into the parallel region
    b.fc1.forward(normed, N, h_all.data(), threads);
    const auto clip = static_cast<float>(v.mlp_clip);
    parallel_for(N, threads_for(N * H * kElementwiseMacs, threads), [&](int64_t t0, int64_t t1) {
        float * h = &h_all[t0 * H];
        const int64_t count = (t1 - t0) * H;
        if (only_sign) {  // ReLU: fc2's sign quantizer sees +1 everywhere (sign(0) = +1)
            std::fill(h, h + count, 1.0f);
            return;
        }
        if (rprelu) {
            for (int64_t i = 0; i < count; ++i) {
                const int64_t ch = i % H;
                const float shifted = h[i] + b.act_shift[ch];
                h[i] = (shifted >= 0.0f ? shifted : shifted * b.act_slope[ch]) + b.act_bias[ch];
            }
        } else if (relu) {
            for (int64_t i = 0; i < count; ++i) h[i] = std::max(h[i], 0.0f);
        } else {
            runtime::gelu(h, count);
        }
        if (v.mlp_clip > 0) {
            for (int64_t i = 0; i < count; ++i) h[i] = std::min(std::max(h[i], -clip), clip);
        }
    });
    b.fc2.forward(h_all.data(), N, out, threads);
}

std::vector<float> PackedModel::forward(const float * image, int threads, std::vector<std::vector<float>> * block_outputs) const {
    return swin_ ? forward_swin(image, threads, block_outputs) : forward_deit(image, threads, block_outputs);
}

std::vector<float> PackedModel::forward_deit(const float * image, int threads, std::vector<std::vector<float>> * block_outputs) const {
    const ModelConfig & c = config_;
    const int64_t D = c.embed_dim, N = c.num_tokens();
    std::vector<float> x(static_cast<size_t>(N * D)), normed(x.size()), branch(x.size());
    embed(image, x.data(), threads);
    // Token-wise passes (the residual add and the next LayerNorm) split over tokens like the linears,
    // fused into one pass over a token's values.
    auto add_then_norm = [&](const LayerNorm & norm, bool add) {
        parallel_for(N, threads_for(N * D * kElementwiseMacs, threads), [&](int64_t t0, int64_t t1) {
            if (add) {
                for (int64_t i = t0 * D; i < t1 * D; ++i) x[i] += branch[i];
            }
            norm.forward(&x[t0 * D], t1 - t0, D, &normed[t0 * D]);
        });
    };
    add_then_norm(blocks_.front().norm1, false);
    for (size_t bi = 0; bi < blocks_.size(); ++bi) {
        const Block & b = blocks_[bi];
        attend(b, AttentionShape{D, c.num_heads, N, 1}, c.variant, normed.data(), branch.data(), threads);
        add_then_norm(b.norm2, true);
        mlp(b, N, c.hidden(), normed.data(), branch.data(), threads);
        add_then_norm(bi + 1 < blocks_.size() ? blocks_[bi + 1].norm1 : norm_, true);
        if (block_outputs) block_outputs->push_back(x);
    }
    std::vector<float> logits(static_cast<size_t>(c.num_classes));
    head_.forward(normed.data(), 1, logits.data());
    if (c.distilled) {
        std::vector<float> dist(logits.size());
        head_dist_.forward(normed.data() + D, 1, dist.data());
        for (size_t i = 0; i < logits.size(); ++i) logits[i] = (logits[i] + dist[i]) / 2;
    }
    return logits;
}

std::vector<std::vector<float>> PackedModel::predict(const uint8_t * pixels, int64_t count, int threads) const {
    const int64_t image_size = in_chans() * img_size() * img_size();
    std::vector<std::vector<float>> logits(static_cast<size_t>(count));
    std::atomic<int64_t> next{0};
    auto worker = [&] {
        std::vector<float> image(static_cast<size_t>(image_size));
        for (int64_t i = next++; i < count; i = next++) {
            normalize(pixels + i * image_size, image.data());
            logits[static_cast<size_t>(i)] = forward(image.data());
        }
    };
    const int n = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    if (count < n) {
        // Fewer images than threads (batch 1): split each image's tokens and heads instead.
        std::vector<float> image(static_cast<size_t>(image_size));
        for (int64_t i = 0; i < count; ++i) {
            normalize(pixels + i * image_size, image.data());
            logits[static_cast<size_t>(i)] = forward(image.data(), n);
        }
        return logits;
    }
    std::vector<std::thread> pool;
    for (int t = 1; t < n; ++t) pool.emplace_back(worker);
    worker();
    for (auto & t : pool) t.join();
    return logits;
}

}  // namespace bitvit::runtime
