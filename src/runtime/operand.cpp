#include "runtime/operand.h"

#include <cmath>
#include <stdexcept>

#include "runtime/kernels/float-gemm.h"
#include "runtime/kernels/int8-gemm.h"
#include "runtime/kernels/plane-gemm.h"

namespace bitvit::runtime {

namespace {

PlaneBits bits_of(const Plane & p) {
    return {p.sign.empty() ? nullptr : p.sign.data(), p.mask.empty() ? nullptr : p.mask.data()};
}

bool bit_at(const std::vector<uint64_t> & bits, int64_t kw, int64_t r, int64_t j) {
    return (bits[r * kw + j / 64] >> (j % 64)) & 1;
}

// bt [k, n] = transpose of rows × k values.
std::vector<float> transposed(const std::vector<float> & values, int64_t rows, int64_t k) {
    std::vector<float> t(values.size());
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t j = 0; j < k; ++j) t[j * rows + r] = values[r * k + j];
    }
    return t;
}

// dots[i][j] = Σ_k px[i][k]·pw[j][k] for one pair of planes, through the fastest kernel for their
// kinds (plane-gemm.h gives the identities):
//   ±1 · ±1           XNOR:  k − 2·popcount(sx ^ sw)
//   {0,1} · ±1        AND:   popcount(mx) − 2·popcount(mx & sw)
//   {0,1} · {0,1}     AND:   popcount(mx & mw)
//   {0,1} · ternary   AND:   popcount(mx & mw) − 2·popcount(mx & sw)
// and the scalar general form for the rest (a ternary or ±1 left side against masks).
void plane_pair_dots(const Plane & px, const Plane & pw, int64_t m, int64_t n, int64_t k, int32_t * dots) {
    const BgemmKernel & kernel = bgemm_kernel();
    const int64_t kw = b1_words(k);
    auto panels = [&](const std::vector<uint64_t> & bits) { return repack_b1_panels(bits.data(), n, k, kernel.nr); };
    const bool x_pm1 = px.mask.empty(), x_01 = px.sign.empty();
    const bool w_pm1 = pw.mask.empty(), w_01 = pw.sign.empty();
    if (x_pm1 && w_pm1) {
        if (pw.packed.n == n) {
            kernel.gemm(m, px.sign.data(), kw, pw.packed, dots, n);
        } else {
            kernel.gemm(m, px.sign.data(), kw, panels(pw.sign), dots, n);
        }
        return;
    }
    if (!x_01) {
        plane_gemm_ref(m, n, k, bits_of(px), bits_of(pw), dots, n);
        return;
    }
    if (w_01) {
        kernel.and_gemm(m, px.mask.data(), kw, panels(pw.mask), dots, n);
        return;
    }
    // Σ over the mask's ones of (1 − 2·s): present − 2·negative, with present = popcount(mx) (±1 right
    // side) or popcount(mx & mw) (ternary right side).
    // Scratch reused on this thread: the kernel writes every element, so it is never cleared.
    thread_local std::vector<int32_t> negative, present;
    if (negative.size() < static_cast<size_t>(m * n)) negative.resize(static_cast<size_t>(m * n));
    kernel.and_gemm(m, px.mask.data(), kw, panels(pw.sign), negative.data(), n);
    if (w_pm1) {
        if (present.size() < static_cast<size_t>(m)) present.resize(static_cast<size_t>(m));
        plane_row_sums(m, k, PlaneBits{nullptr, px.mask.data()}, present.data());
        for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < n; ++j) dots[i * n + j] = present[i] - 2 * negative[i * n + j];
        }
    } else {
        kernel.and_gemm(m, px.mask.data(), kw, panels(pw.mask), dots, n);
        for (int64_t i = 0; i < m * n; ++i) dots[i] -= 2 * negative[i];
    }
}

// Σ over planes p of x and q of w: scale_p[i]·scale_q[j]·(plane_p · plane_q), plus the offsets'
// cross terms (offset · Σ_j of the other side's values).
// Returns whether `bias` went into the epilogue (one pair of planes, no offsets: the common case).
bool planes_matmul(const Operand & x, const Operand & w, float * out, const float * bias) {
    const int64_t m = x.rows, n = w.rows, k = x.k;
    // Scratch for the integer dots, reused across calls on this thread (no allocation, no zeroing).
    thread_local std::vector<int32_t> dots;
    if (dots.size() < static_cast<size_t>(m * n)) dots.resize(static_cast<size_t>(m * n));
    const bool one_pair = x.planes.size() == 1 && w.planes.size() == 1 && x.offset.empty() && w.offset.empty();
    if (is_pm1_plane(x) && is_pm1_plane(w)) {
        // ±1 × ±1 (a W1A1 linear, binary q·kᵀ): scales and bias applied as the results leave the
        // registers. A weight comes prepared; an activation on the right (k) is repacked here.
        const BgemmKernel & kernel = bgemm_kernel();
        const Plane & pw = w.planes[0];
        const PackedB1 transient = pw.packed.n == n ? PackedB1{} : repack_b1_panels(pw.sign.data(), n, k, kernel.nr);
        const ScaledOut o{out, n, x.planes[0].scale.data(), pw.scale.data(), bias};
        kernel.gemm_scaled(m, x.planes[0].sign.data(), b1_words(k), pw.packed.n == n ? pw.packed : transient, o);
        return true;
    }
    const bool fuse_bias = bias && one_pair;
    bool first = true;
    for (const Plane & px : x.planes) {
        for (const Plane & pw : w.planes) {
            plane_pair_dots(px, pw, m, n, k, dots.data());
            // (scale_x·scale_w)·dot (+ bias), the order QLinear uses in training; the first pair assigns.
            for (int64_t i = 0; i < m; ++i) {
                const float sx = px.scale[i];
                float * o = out + i * n;
                const int32_t * d = dots.data() + i * n;
                if (fuse_bias) {
                    for (int64_t j = 0; j < n; ++j) o[j] = sx * pw.scale[j] * static_cast<float>(d[j]) + bias[j];
                } else if (first) {
                    for (int64_t j = 0; j < n; ++j) o[j] = sx * pw.scale[j] * static_cast<float>(d[j]);
                } else {
                    for (int64_t j = 0; j < n; ++j) o[j] += sx * pw.scale[j] * static_cast<float>(d[j]);
                }
            }
            first = false;
        }
    }
    // Σ_j value[r][j] of one side without its offset: Σ_p scale_p[r]·rowsum(plane_p).
    auto plane_sums = [](const Operand & op) {
        std::vector<float> sums(static_cast<size_t>(op.rows), 0.0f);
        std::vector<int32_t> row(static_cast<size_t>(op.rows));
        for (const Plane & p : op.planes) {
            plane_row_sums(op.rows, op.k, bits_of(p), row.data());
            for (int64_t r = 0; r < op.rows; ++r) sums[r] += p.scale[r] * static_cast<float>(row[r]);
        }
        return sums;
    };
    if (!x.offset.empty()) {
        const std::vector<float> w_sums = plane_sums(w);
        for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < n; ++j) out[i * n + j] += x.offset[i] * w_sums[j];
        }
    }
    if (!w.offset.empty()) {
        const std::vector<float> x_sums = plane_sums(x);
        for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < n; ++j) out[i * n + j] += w.offset[j] * x_sums[i];
        }
    }
    if (!x.offset.empty() && !w.offset.empty()) {
        for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < n; ++j) out[i * n + j] += static_cast<float>(k) * x.offset[i] * w.offset[j];
        }
    }
    return fuse_bias;
}

// A one-plane weight without offset as int8 codes m·(1 − 2s) ∈ {−1, 0, +1}: rows × k.
std::vector<int8_t> plane_codes(const Operand & w) {
    const Plane & p = w.planes[0];
    const int64_t kw = b1_words(w.k);
    std::vector<int8_t> codes(static_cast<size_t>(w.rows * w.k));
    for (int64_t r = 0; r < w.rows; ++r) {
        for (int64_t j = 0; j < w.k; ++j) {
            const bool on = p.mask.empty() || bit_at(p.mask, kw, r, j);
            const bool negative = !p.sign.empty() && bit_at(p.sign, kw, r, j);
            codes[r * w.k + j] = on ? (negative ? -1 : 1) : 0;
        }
    }
    return codes;
}

bool is_single_plane(const Operand & w) { return w.kind == Operand::Kind::planes && w.planes.size() == 1 && w.offset.empty(); }

// Σ_j s_x(c_x − z_x)·s_w(c_w − z_w) = s_x·s_w·(Σ c_x c_w − z_w Σ c_x − z_x Σ c_w + k z_x z_w), exact in
// int64. w: int8 codes, or a single plane (zero point 0) whose codes prepare_weight packed.
void int8_matmul(const Operand & x, const Operand & w, float * out, const float * bias) {
    const int64_t m = x.rows, n = w.rows, k = x.k;
    const PackedI8 transient = w.codes_packed.bytes.empty() ? repack_i8_panels(w.codes.data(), n, k) : PackedI8{};
    const PackedI8 & wp = w.codes_packed.bytes.empty() ? transient : w.codes_packed;
    const bool plane = w.kind == Operand::Kind::planes;
    const float * w_scale = plane ? w.planes[0].scale.data() : w.scale.data();
    thread_local std::vector<int32_t> dots;
    dots.resize(static_cast<size_t>(m * n));
    int8_kernel().gemm(m, x.codes.data(), k, wp, dots.data(), n);
    for (int64_t i = 0; i < m; ++i) {
        int64_t sx = 0;
        for (int64_t j = 0; j < k; ++j) sx += x.codes[i * k + j];
        const int64_t zx = x.zero[i];
        for (int64_t j = 0; j < n; ++j) {
            const int64_t zw = plane ? 0 : w.zero[j];
            const int64_t exact = dots[i * n + j] - zw * sx - zx * wp.row_sums[j] + k * zx * zw;
            const float product = x.scale[i] * w_scale[j] * static_cast<float>(exact);
            out[i * n + j] = bias ? product + bias[j] : product;
        }
    }
}

void f32_planes_matmul(const Operand & x, const Operand & w, float * out) {
    const int64_t m = x.rows, n = w.rows, k = x.k;
    thread_local std::vector<float> partial;  // reused across calls on this thread
    partial.resize(static_cast<size_t>(m * n));
    std::fill(out, out + m * n, 0.0f);
    for (const Plane & pw : w.planes) {
        if (!pw.sign_t.empty() || !pw.mask_t.empty()) {
            const PlaneBits wt{pw.sign_t.empty() ? nullptr : pw.sign_t.data(), pw.mask_t.empty() ? nullptr : pw.mask_t.data()};
            f32_plane_gemm(selected_isa(), m, n, k, x.values.data(), wt, partial.data(), n);
        } else {
            f32_plane_gemm_ref(m, n, k, x.values.data(), bits_of(pw), partial.data(), n);
        }
        for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < n; ++j) out[i * n + j] += pw.scale[j] * partial[i * n + j];
        }
    }
    if (!w.offset.empty()) {
        for (int64_t i = 0; i < m; ++i) {
            float row_sum = 0.0f;
            for (int64_t p = 0; p < k; ++p) row_sum += x.values[i * k + p];
            for (int64_t j = 0; j < n; ++j) out[i * n + j] += w.offset[j] * row_sum;
        }
    }
}

// x [m, k] · w [n, k]ᵀ; a prepared f32 weight brings its transpose, anything else is transposed here.
void f32_matmul(const Operand & x, const Operand & w, float * out) {
    const std::vector<float> xv = x.kind == Operand::Kind::f32 ? std::vector<float>() : x.decode();
    const float * a = x.kind == Operand::Kind::f32 ? x.values.data() : xv.data();
    if (w.kind == Operand::Kind::f32 && !w.values_t.empty()) return sgemm(x.rows, w.rows, x.k, a, w.values_t.data(), out, w.rows);
    const std::vector<float> wt = transposed(w.kind == Operand::Kind::f32 ? w.values : w.decode(), w.rows, w.k);
    sgemm(x.rows, w.rows, x.k, a, wt.data(), out, w.rows);
}

}  // namespace

std::vector<float> Operand::decode() const {
    std::vector<float> out(static_cast<size_t>(rows * k), 0.0f);
    switch (kind) {
        case Kind::f32: return values;
        case Kind::int8:
            for (int64_t r = 0; r < rows; ++r) {
                for (int64_t j = 0; j < k; ++j) out[r * k + j] = scale[r] * static_cast<float>(codes[r * k + j] - zero[r]);
            }
            return out;
        case Kind::planes: {
            const int64_t kw = b1_words(k);
            for (int64_t r = 0; r < rows; ++r) {
                for (int64_t j = 0; j < k; ++j) {
                    float v = offset.empty() ? 0.0f : offset[r];
                    for (const Plane & p : planes) {
                        if (!p.mask.empty() && !bit_at(p.mask, kw, r, j)) continue;
                        const bool negative = !p.sign.empty() && bit_at(p.sign, kw, r, j);
                        v += negative ? -p.scale[r] : p.scale[r];
                    }
                    out[r * k + j] = v;
                }
            }
            return out;
        }
    }
    return out;
}

bool is_pm1_plane(const Operand & op) {
    return op.kind == Operand::Kind::planes && op.planes.size() == 1 && op.offset.empty() && op.planes[0].mask.empty() &&
           !op.planes[0].sign.empty();
}

void matmul(const Operand & x, const Operand & w, float * out, const float * bias) {
    if (x.k != w.k) {
        throw std::invalid_argument("matmul: operands disagree on k (" + std::to_string(x.k) + " vs " + std::to_string(w.k) + ")");
    }
    using Kind = Operand::Kind;
    bool bias_added = false;
    if (x.kind == Kind::planes && w.kind == Kind::planes) {
        bias_added = planes_matmul(x, w, out, bias);
    } else if (x.kind == Kind::int8 && x.k <= kInt8GemmMaxK &&
               (w.kind == Kind::int8 || (is_single_plane(w) && !w.codes_packed.bytes.empty()))) {
        int8_matmul(x, w, out, bias);
        bias_added = true;
    } else if (x.kind == Kind::f32 && w.kind == Kind::planes) {
        f32_planes_matmul(x, w, out);
    } else {
        f32_matmul(x, w, out);
    }
    if (!bias || bias_added) return;
    for (int64_t i = 0; i < x.rows; ++i) {
        for (int64_t j = 0; j < w.rows; ++j) out[i * w.rows + j] += bias[j];
    }
}

namespace {

// Canonical bits of rows × k values, transposed: k rows of b1_words(rows) words.
std::vector<uint64_t> transposed_bits(const std::vector<uint64_t> & bits, int64_t rows, int64_t k) {
    const int64_t kw = b1_words(k), rw = b1_words(rows);
    std::vector<uint64_t> t(static_cast<size_t>(k * rw), 0);
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t j = 0; j < k; ++j) {
            if (bit_at(bits, kw, r, j)) t[j * rw + r / 64] |= uint64_t{1} << (r % 64);
        }
    }
    return t;
}

}  // namespace

void prepare_weight(Operand & w, LayerInputs inputs) {
    if (w.kind == Operand::Kind::f32) w.values_t = transposed(w.values, w.rows, w.k);
    if (w.kind == Operand::Kind::int8) w.codes_packed = repack_i8_panels(w.codes.data(), w.rows, w.k);
    if (inputs == LayerInputs::int8 && is_single_plane(w)) w.codes_packed = repack_i8_panels(plane_codes(w).data(), w.rows, w.k);
    if (w.kind != Operand::Kind::planes) return;
    for (Plane & p : w.planes) {
        if (p.mask.empty() && !p.sign.empty()) p.packed = repack_b1_panels(p.sign.data(), w.rows, w.k, bgemm_kernel().nr);
        if (inputs == LayerInputs::f32) {
            if (!p.sign.empty()) p.sign_t = transposed_bits(p.sign, w.rows, w.k);
            if (!p.mask.empty()) p.mask_t = transposed_bits(p.mask, w.rows, w.k);
        }
    }
}

void validate_operand(const Operand & op, const std::string & what) {
    auto fail = [&](const std::string & problem) { throw std::invalid_argument(what + ": " + problem); };
    if (op.rows < 0 || op.k <= 0) fail("bad shape " + std::to_string(op.rows) + " × " + std::to_string(op.k));
    const auto rows = static_cast<size_t>(op.rows);
    auto check_finite = [&](const std::vector<float> & v, const char * name) {
        for (float f : v) {
            if (!std::isfinite(f)) fail(std::string(name) + " holds a non-finite value");
        }
    };
    switch (op.kind) {
        case Operand::Kind::f32:
            if (op.values.size() != rows * static_cast<size_t>(op.k)) fail("value count does not match the shape");
            check_finite(op.values, "values");
            return;
        case Operand::Kind::int8:
            if (op.codes.size() != rows * static_cast<size_t>(op.k) || op.scale.size() != rows || op.zero.size() != rows) {
                fail("code, scale or zero-point count does not match the shape");
            }
            check_finite(op.scale, "scale");
            return;
        case Operand::Kind::planes: {
            if (op.planes.empty()) fail("no planes");
            if (!op.offset.empty() && op.offset.size() != rows) fail("offset count does not match the rows");
            check_finite(op.offset, "offset");
            const int64_t kw = b1_words(op.k);
            const uint64_t tail = op.k % 64 == 0 ? ~uint64_t{0} : (uint64_t{1} << (op.k % 64)) - 1;
            for (const Plane & p : op.planes) {
                if (p.sign.empty() && p.mask.empty()) fail("a plane has neither sign nor mask bits");
                if (p.scale.size() != rows) fail("plane scale count does not match the rows");
                check_finite(p.scale, "plane scale");
                for (const auto * bits : {&p.sign, &p.mask}) {
                    if (bits->empty()) continue;
                    if (bits->size() != rows * static_cast<size_t>(kw)) fail("plane bit count does not match the shape");
                    for (size_t r = 0; r < rows; ++r) {
                        if ((*bits)[r * kw + kw - 1] & ~tail) fail("padding bits past k are set");
                    }
                }
                if (!p.sign.empty() && !p.mask.empty()) {
                    for (size_t i = 0; i < p.sign.size(); ++i) {
                        if (p.sign[i] & ~p.mask[i]) fail("sign bits set outside the mask");
                    }
                }
            }
            return;
        }
    }
}

}  // namespace bitvit::runtime
