// The packed model's self-attention: qkv, each head's q·kᵀ, softmax and probs·v on the kernels their
// operands call for, then proj. Tokens come in groups that attend only within themselves — one group
// of all tokens for DeiT, Swin's windows — and the linear layers run over all groups at once, so a
// window's small products pay no kernel overhead of their own; the per-head products run over every
// (window, head) pair in parallel. Fast paths are taken where the quantizers allow, each equal to the
// generic path value for value (tests/test-export.cpp, AttentionPaths):
//   - q, k and v all sign-quantized: the qkv product hands over sign bits, and each head's q, k and
//     vᵀ operands are cut from them — no floats for q, k, v;
//   - SAB on the attention map: decided from the scores, skipping every exp (quant/act-quantizer.h);
//   - a sign quantizer on softmax probabilities (all ≥ 0, sign(0) = +1): the map is all +1, so the
//     scores are never computed.
#include <algorithm>
#include <atomic>
#include <cmath>

#include "runtime/kernels/activations.h"
#include "runtime/model.h"
#include "runtime/parallel.h"

namespace bitvit::runtime {

namespace {

std::atomic<bool> g_fast_paths{true};

// Buffers reused from block to block (and image to image) on one thread: every element is written
// before it is read, so they are resized, never cleared.
struct AttentionScratch {
    std::vector<float> qkv, q, k, vt, probs, merged;
    std::vector<uint64_t> qkv_bits, q_bits, k_bits, vt_bits;
};

// What one block's attention computes and how (the shapes, and which fast paths apply). N is the
// tokens of one window (group), G the windows; a "unit" is one (window, head) pair, u = w·H + h.
struct AttentionPlan {
    const Block & b;
    int64_t D, H, N, d, G;
    const float * mask;    // [G, N, N] added to the scores, or null
    bool qk_norm, qkv_shift;
    bool qkv_as_signs;     // q, k, v from qkv's sign bits
    bool qk_in_place;      // q, k read from qkv [N, 3·D] in place (row stride 3·D), not copied per head
    bool all_positive;     // the map is all +1 whatever the scores: skip them
    bool sab_from_scores;  // SAB decided from the scores
    bool softmax, attn_bias;
    int threads;
};

AttentionPlan plan_for(const Block & b, const AttentionShape & shape, const spec::BlockVariant & v, int threads) {
    const bool fast = g_fast_paths.load(std::memory_order_relaxed);
    AttentionPlan p{b,          shape.dim, shape.heads, shape.tokens, shape.dim / shape.heads, shape.windows,
                    shape.mask, v.qk_norm, v.qkv_shift};
    p.qkv_as_signs = fast && b.q.sign_only() && b.k.sign_only() && b.v.sign_only() && !v.qk_norm && !v.qkv_shift;
    p.qk_in_place = fast && !v.qk_norm && !v.qkv_shift && !b.q.needs_range() && !b.k.needs_range();
    p.all_positive = fast && v.softmax && !v.attn_bias && b.probs.sign_only();
    p.sab_from_scores = fast && v.softmax && !v.attn_bias && b.probs.is(spec::Quantizer::sab);
    p.softmax = v.softmax;
    p.attn_bias = v.attn_bias;
    p.threads = threads;
    return p;
}

// Max and min over one sample's tensor at a site, for the quantizers that need them (GSB): per
// window, the sample training sees (a Swin's attention runs on [B·nW, H, M², ·] windows). `v` holds
// the windows' tensors back to back, `per_window` values each: [G] pairs (max, min).
std::vector<std::pair<float, float>> ranges_for(const ActQuantizer & q, const std::vector<float> & v, int64_t G, int64_t per_window) {
    std::vector<std::pair<float, float>> out(static_cast<size_t>(G), {0.0f, 0.0f});
    if (!q.needs_range()) return out;
    for (int64_t w = 0; w < G; ++w) {
        const auto [lo, hi] = std::minmax_element(v.begin() + w * per_window, v.begin() + (w + 1) * per_window);
        out[static_cast<size_t>(w)] = {*hi, *lo};
    }
    return out;
}

// One head's operands from the qkv product's sign bits (rows [N] of b1_words(3·D) words: q, k, v
// side by side): q_bits and k_bits [N, b1_words(d)] (head h's columns of q and of k), vt_bits
// [d, b1_words(N)] (vᵀ: each value channel's tokens as one packed row, transposed 64 × 64 at a time).
void split_head_signs(const uint64_t * qkv_bits, int64_t N, int64_t D, int64_t d, int64_t h, uint64_t * q_bits,
                      uint64_t * k_bits, uint64_t * vt_bits) {
    const int64_t row_words = b1_words(3 * D), dw = b1_words(d), nw = b1_words(N);
    for (int64_t n = 0; n < N; ++n) {
        const uint64_t * row = qkv_bits + n * row_words;
        for (int64_t w = 0; w < dw; ++w) {
            const int64_t count = std::min<int64_t>(64, d - w * 64);
            q_bits[n * dw + w] = b1_field(row, h * d + w * 64, count);
            k_bits[n * dw + w] = b1_field(row, D + h * d + w * 64, count);
        }
    }
    for (int64_t n0 = 0; n0 < N; n0 += 64) {
        for (int64_t j0 = 0; j0 < d; j0 += 64) {
            const int64_t channels = std::min<int64_t>(64, d - j0);
            uint64_t block[64] = {};  // [token n0 + t] bit j: v's channel j0 + j; tokens past N stay 0
            for (int64_t t = 0; t < 64 && n0 + t < N; ++t) {
                block[t] = b1_field(qkv_bits + (n0 + t) * row_words, 2 * D + h * d + j0, channels);
            }
            transpose_b1_64x64(block);  // [channel j0 + j] bit t: token n0 + t
            for (int64_t j = 0; j < channels; ++j) vt_bits[(j0 + j) * nw + n0 / 64] = block[j];
        }
    }
}

// qkv as sign bits (all windows' tokens in one product), cut into each unit's q, k and vᵀ bits.
void project_signs(const AttentionPlan & p, const float * x, AttentionScratch & s) {
    const int64_t dw = b1_words(p.d), nw = b1_words(p.N), row_words = b1_words(3 * p.D);
    s.qkv_bits.resize(static_cast<size_t>(p.G * p.N * row_words));
    p.b.qkv.forward_signs(x, p.G * p.N, s.qkv_bits.data(), /*through_gelu=*/false, p.threads);
    s.q_bits.resize(static_cast<size_t>(p.G * p.H * p.N * dw));
    s.k_bits.resize(s.q_bits.size());
    s.vt_bits.resize(static_cast<size_t>(p.G * p.H * p.d * nw));
    auto & sc = s;  // this thread's scratch, for the workers
    parallel_for(p.G * p.H, threads_for(p.G * p.N * 3 * p.D * kElementwiseMacs, p.threads), [&](int64_t u0, int64_t u1) {
        for (int64_t u = u0; u < u1; ++u) {
            split_head_signs(sc.qkv_bits.data() + u / p.H * p.N * row_words, p.N, p.D, p.d, u % p.H, &sc.q_bits[u * p.N * dw],
                             &sc.k_bits[u * p.N * dw], &sc.vt_bits[u * p.d * nw]);
        }
    });
}

// Unit u's q and k copied out of its window's qkv [N, 3·D] (when not read in place), normed and
// shifted as the block variant says, and vᵀ [d, N] in blocks of 16 tokens: each channel writes 16
// adjacent floats (one cache line) while the block's 16 rows of v stay in L1.
void split_head_floats(const AttentionPlan & p, AttentionScratch & s, int64_t u) {
    const int64_t D = p.D, N = p.N, d = p.d, h = u % p.H;
    const float * qkv = s.qkv.data() + u / p.H * N * 3 * D;
    float * q = p.qk_in_place ? nullptr : s.q.data() + u * N * d;
    float * k = p.qk_in_place ? nullptr : s.k.data() + u * N * d;
    if (!p.qk_in_place) {
        for (int64_t n = 0; n < N; ++n) {
            const float * row = qkv + n * 3 * D + h * d;
            std::copy(row, row + d, q + n * d);
            std::copy(row + D, row + D + d, k + n * d);
        }
    }
    if (p.qk_norm) {
        p.b.norm_q.forward(q, N, d, q);
        p.b.norm_k.forward(k, N, d, k);
    }
    if (p.qkv_shift) {
        for (int64_t n = 0; n < N; ++n) {
            for (int64_t j = 0; j < d; ++j) {
                q[n * d + j] += p.b.shift_q[h * d + j];
                k[n * d + j] += p.b.shift_k[h * d + j];
            }
        }
    }
    for (int64_t n0 = 0; n0 < N; n0 += 16) {
        const int64_t n1 = std::min<int64_t>(N, n0 + 16);
        for (int64_t j = 0; j < d; ++j) {
            const float shift = p.qkv_shift ? p.b.shift_v[h * d + j] : 0.0f;
            float * dst = s.vt.data() + (u * d + j) * N;
            for (int64_t n = n0; n < n1; ++n) {
                const float v = qkv[n * 3 * D + 2 * D + h * d + j];
                dst[n] = p.qkv_shift ? v + shift : v;
            }
        }
    }
}

void project_floats(const AttentionPlan & p, const float * x, AttentionScratch & s) {
    s.qkv.resize(static_cast<size_t>(p.G * p.N * 3 * p.D));
    p.b.qkv.forward(x, p.G * p.N, s.qkv.data(), p.threads);
    if (!p.qk_in_place) {
        s.q.resize(static_cast<size_t>(p.G * p.H * p.N * p.d));
        s.k.resize(s.q.size());
    }
    s.vt.resize(static_cast<size_t>(p.G * p.H * p.N * p.d));
    auto & sc = s;
    parallel_for(p.G * p.H, threads_for(p.G * p.N * 3 * p.D * kElementwiseMacs, p.threads), [&](int64_t u0, int64_t u1) {
        for (int64_t u = u0; u < u1; ++u) split_head_floats(p, sc, u);
    });
}

// Each unit's map [N, N] into s.probs: scaled q·kᵀ, plus the window bias and mask (Swin) before
// the softmax (unless SAB reads the scores), then the attention bias (GSB).
void attention_maps(const AttentionPlan & p, AttentionScratch & s, int unit_threads) {
    const int64_t N = p.N, d = p.d, dw = b1_words(d), H = p.H;
    const auto q_ranges = ranges_for(p.b.q, s.q, p.G, H * N * d);
    const auto k_ranges = ranges_for(p.b.k, s.k, p.G, H * N * d);
    const auto scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
    const float * window_bias = p.b.window_bias.empty() ? nullptr : p.b.window_bias.data();
    auto & sc = s;
    parallel_for(p.G * H, unit_threads, [&](int64_t u0, int64_t u1) {
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t w = u / H, h = u % H;
            const float * qkv = sc.qkv.data() + w * N * 3 * p.D;
            const float * qh_in = p.qk_in_place ? qkv + h * d : sc.q.data() + u * N * d;
            const float * kh_in = p.qk_in_place ? qkv + p.D + h * d : sc.k.data() + u * N * d;
            const int64_t ld = p.qk_in_place ? 3 * p.D : d;
            const auto [q_max, q_min] = q_ranges[static_cast<size_t>(w)];
            const auto [k_max, k_min] = k_ranges[static_cast<size_t>(w)];
            const Operand qh = p.qkv_as_signs ? p.b.q.encode_sign_bits(&sc.q_bits[u * N * dw], N, d)
                                              : p.b.q.encode(qh_in, N, d, ld, SiteScope::per_head, h, q_max, q_min);
            const Operand kh = p.qkv_as_signs ? p.b.k.encode_sign_bits(&sc.k_bits[u * N * dw], N, d)
                                              : p.b.k.encode(kh_in, N, d, ld, SiteScope::per_head, h, k_max, k_min);
            float * scores = sc.probs.data() + u * N * N;
            matmul(qh, kh, scores);
            // One pass: scale, then the window bias, then the mask (training's order of additions).
            const float * bias = window_bias ? window_bias + h * N * N : nullptr;
            const float * mask = p.mask ? p.mask + w * N * N : nullptr;
            for (int64_t i = 0; i < N * N; ++i) {
                float v = scores[i] * scale;
                if (bias) v += bias[i];
                if (mask) v += mask[i];
                scores[i] = v;
            }
            if (p.softmax && !p.sab_from_scores) softmax_rows(scores, N, N, N);
            if (p.attn_bias) {
                for (int64_t i = 0; i < N * N; ++i) scores[i] += p.b.attn_bias[h * N * N + i];
            }
        }
    });
}

// Each unit's map times its vᵀ, merged back into tokens [G·N, D].
void attention_values(const AttentionPlan & p, AttentionScratch & s, int unit_threads) {
    const int64_t N = p.N, d = p.d, nw = b1_words(N), H = p.H;
    const auto v_ranges = ranges_for(p.b.v, s.vt, p.G, H * d * N);
    const auto p_ranges = ranges_for(p.b.probs, s.probs, p.G, H * N * N);
    s.merged.resize(static_cast<size_t>(p.G * N * p.D));
    auto & sc = s;
    parallel_for(p.G * H, unit_threads, [&](int64_t u0, int64_t u1) {
        std::vector<float> head_out(static_cast<size_t>(N * d));
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t w = u / H, h = u % H;
            const auto [v_max, v_min] = v_ranges[static_cast<size_t>(w)];
            const auto [p_max, p_min] = p_ranges[static_cast<size_t>(w)];
            const float * ph_in = sc.probs.data() + u * N * N;
            const Operand ph = p.sab_from_scores ? p.b.probs.encode_sab_from_scores(ph_in, N, N, N)
                                                 : p.b.probs.encode(ph_in, N, N, N, SiteScope::per_head, h, p_max, p_min);
            const Operand vh = p.qkv_as_signs ? p.b.v.encode_sign_bits(&sc.vt_bits[u * d * nw], d, N)
                                              : p.b.v.encode(sc.vt.data() + u * d * N, d, N, N, SiteScope::per_head, h, v_max, v_min);
            matmul(ph, vh, head_out.data());
            float * merged = sc.merged.data() + w * N * p.D;
            for (int64_t n = 0; n < N; ++n) {
                std::copy(head_out.data() + n * d, head_out.data() + (n + 1) * d, merged + n * p.D + h * d);
            }
        }
    });
}

}  // namespace

void set_attention_fast_paths(bool on) { g_fast_paths.store(on); }

void attend(const Block & b, const AttentionShape & shape, const spec::BlockVariant & variant, const float * x, float * out,
            int threads) {
    thread_local AttentionScratch scratch;
    const AttentionPlan p = plan_for(b, shape, variant, threads);
    if (p.qkv_as_signs) {
        project_signs(p, x, scratch);
    } else {
        project_floats(p, x, scratch);
    }
    scratch.probs.resize(static_cast<size_t>(p.G * p.H * p.N * p.N));
    // q·kᵀ and probs·v: N·N·d each per unit.
    const int unit_threads = threads_for(p.G * p.H * p.N * p.N * p.d, threads);
    if (p.all_positive) {
        std::fill(scratch.probs.begin(), scratch.probs.end(), 1.0f);
    } else {
        attention_maps(p, scratch, unit_threads);
    }
    attention_values(p, scratch, unit_threads);
    b.proj.forward(scratch.merged.data(), p.G * p.N, out, threads);
}

}  // namespace bitvit::runtime
