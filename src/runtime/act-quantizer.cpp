#include "runtime/act-quantizer.h"

#include <emmintrin.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <stdexcept>
#include <tuple>

namespace bitvit::runtime {

namespace {

// What each quantizer's parameters are: "channel" tensors have one value per channel, "scalar" one.
struct ParamSpec {
    const char * name;
    enum { channel, scalar, channel_or_scalar, three } size;
    bool required;
};
struct QuantizerSpec {
    const char * name;
    std::vector<ParamSpec> params;
    std::vector<const char *> options;
};

const std::vector<QuantizerSpec> & specs() {
    static const std::vector<QuantizerSpec> all = {
        {"sign", {}, {}},
        {"sign_approx", {}, {}},
        {"bool", {}, {}},
        {"rsign", {{"shift", ParamSpec::channel, true}}, {}},
        {"elastic_signed", {{"shift", ParamSpec::channel, true}, {"alpha", ParamSpec::scalar, true}}, {}},
        {"elastic_unsigned", {{"shift", ParamSpec::channel, true}, {"alpha", ParamSpec::scalar, true}}, {}},
        {"sab", {}, {"beta"}},
        {"lsq",
         {{"step", ParamSpec::channel_or_scalar, true}, {"zero_point", ParamSpec::channel_or_scalar, false}},
         {"qn", "qp"}},
        {"bivit_act", {{"alpha", ParamSpec::channel, true}, {"zero_point", ParamSpec::channel, true}}, {}},
        {"gsb_value", {{"alphas", ParamSpec::three, true}}, {}},
        {"gsb_attention", {{"alphas", ParamSpec::three, true}}, {}},
    };
    return all;
}

const QuantizerSpec * find_spec(const std::string & name) {
    for (const auto & s : specs()) {
        if (name == s.name) return &s;
    }
    return nullptr;
}

}  // namespace

const std::vector<std::string> & act_quantizer_names() {
    static const std::vector<std::string> names = [] {
        std::vector<std::string> n;
        for (const auto & s : specs()) n.emplace_back(s.name);
        return n;
    }();
    return names;
}

void ActQuantizer::validate(const std::string & site, int64_t channels) const {
    auto fail = [&](const std::string & problem) { throw std::invalid_argument("site " + site + ": " + problem); };
    if (name.empty()) {
        if (!params.empty() || !options.empty()) fail("a full-precision site has quantizer parameters");
        return;
    }
    const QuantizerSpec * spec = find_spec(name);
    if (!spec) {
        std::string known;
        for (const auto & n : act_quantizer_names()) known += (known.empty() ? "" : ", ") + n;
        fail("unknown activation quantizer '" + name + "' (known: " + known + ")");
    }
    std::set<std::string> expected;
    for (const auto & p : spec->params) {
        expected.insert(p.name);
        const auto it = params.find(p.name);
        if (it == params.end()) {
            if (p.required) fail("quantizer " + name + " needs parameter '" + p.name + "'");
            continue;
        }
        const auto n = static_cast<int64_t>(it->second.size());
        const bool ok = (p.size == ParamSpec::channel && n == channels) || (p.size == ParamSpec::scalar && n == 1) ||
                        (p.size == ParamSpec::channel_or_scalar && (n == 1 || n == channels)) ||
                        (p.size == ParamSpec::three && n == 3);
        if (!ok) fail("parameter '" + std::string(p.name) + "' has " + std::to_string(n) + " values (channels: " +
                      std::to_string(channels) + ")");
        for (float v : it->second) {
            if (!std::isfinite(v)) fail("parameter '" + std::string(p.name) + "' holds a non-finite value");
        }
    }
    for (const auto & [key, values] : params) {
        if (!expected.count(key)) fail("quantizer " + name + " has no parameter '" + key + "'");
    }
    std::set<std::string> known_options(spec->options.begin(), spec->options.end());
    for (const auto & [key, value] : options) {
        if (!known_options.count(key)) fail("quantizer " + name + " has no option '" + key + "'");
        if (!std::isfinite(value)) fail("option '" + key + "' is not finite");
    }
    for (const auto & key : spec->options) {
        if (!options.count(key)) fail("quantizer " + name + " needs option '" + key + "'");
    }
    auto positive = [&](const char * key) {
        for (float v : params.at(key)) {
            if (!(v > 0.0f)) fail("parameter '" + std::string(key) + "' must be positive");
        }
    };
    if (name == "sab" && !(options.at("beta") > 0.0 && options.at("beta") <= 1.0)) fail("option beta must be in (0, 1]");
    if (name == "lsq") {
        const double qn = options.at("qn"), qp = options.at("qp");
        if (qn != std::floor(qn) || qp != std::floor(qp) || !(qn < qp) || qn < -65536 || qp > 65536) {
            fail("options qn, qp must be integers with qn < qp within ±65536");
        }
        positive("step");
    }
    if (name == "elastic_signed" || name == "elastic_unsigned" || name == "bivit_act") positive("alpha");
    // Zero points are integers (rounded at export) of a size an int32 holds.
    if (params.count("zero_point")) {
        for (float z : params.at("zero_point")) {
            if (z != std::nearbyint(z) || std::fabs(z) > 65536.0f) fail("zero_point values must be integers within ±65536");
        }
    }
    if (name == "gsb_value" || name == "gsb_attention") positive("alphas");
}

namespace {

// A parameter as one call sees it: one value per column (token scope, [C]) or one value for the
// whole call (a per-head site's head, or a scalar parameter).
struct ParamView {
    const float * data = nullptr;
    bool per_column = false;
    float operator[](int64_t j) const { return per_column ? data[j] : data[0]; }
};

// Round to nearest, ties to even (torch.round), for |u| < 2^22: adding and removing 1.5·2^23 leaves
// no fraction bits under the default rounding mode. std::nearbyint does the same but is a library
// call in the baseline x86-64 build (no SSE4.1 ROUNDSS), which kept LSQ encoding scalar.
inline float round_half_even(float u) {
    constexpr float kMagic = 12582912.0f;  // 1.5·2^23
    return (u + kMagic) - kMagic;
}

// rows × k bits, bit (r, j) = pred(r, j, x[r·ld + j]); each word is built in a register.
template <typename Pred>
std::vector<uint64_t> pack_bits(const float * x, int64_t rows, int64_t k, int64_t ld, Pred pred) {
    const int64_t kw = b1_words(k);
    std::vector<uint64_t> bits(static_cast<size_t>(rows * kw));
    for (int64_t r = 0; r < rows; ++r) {
        const float * row = x + r * ld;
        for (int64_t w = 0; w < kw; ++w) {
            const int64_t base = w * 64, n = std::min<int64_t>(64, k - base);
            uint64_t word = 0;
            for (int64_t b = 0; b < n; ++b) word |= static_cast<uint64_t>(pred(r, base + b, row[base + b])) << b;
            bits[static_cast<size_t>(r * kw + w)] = word;
        }
    }
    return bits;
}

enum class Cmp { lt, gt, ge };

// The common predicates, 4 floats per SSE2 compare (baseline x86-64): bit (r, j) = cmp(x + shift[j],
// threshold[r]) where shift is optional and threshold one value per row. Same float operations as
// the scalar form, so the same bits.
template <Cmp C>
std::vector<uint64_t> pack_compare(const float * x, int64_t rows, int64_t k, int64_t ld, const ParamView * shift,
                                   const std::vector<float> & threshold) {
    const int64_t kw = b1_words(k);
    std::vector<uint64_t> bits(static_cast<size_t>(rows * kw));
    auto cmp_scalar = [](float v, float t) { return C == Cmp::lt ? v < t : C == Cmp::gt ? v > t : v >= t; };
    for (int64_t r = 0; r < rows; ++r) {
        const float * row = x + r * ld;
        const float t = threshold[threshold.size() == 1 ? 0 : r];
        const __m128 tv = _mm_set1_ps(t);
        for (int64_t w = 0; w < kw; ++w) {
            const int64_t base = w * 64, n = std::min<int64_t>(64, k - base);
            uint64_t word = 0;
            int64_t b = 0;
            for (; b + 4 <= n; b += 4) {
                __m128 v = _mm_loadu_ps(row + base + b);
                if (shift) v = _mm_add_ps(v, shift->per_column ? _mm_loadu_ps(shift->data + base + b) : _mm_set1_ps(shift->data[0]));
                const __m128 m = C == Cmp::lt ? _mm_cmplt_ps(v, tv) : C == Cmp::gt ? _mm_cmpgt_ps(v, tv) : _mm_cmpge_ps(v, tv);
                word |= static_cast<uint64_t>(_mm_movemask_ps(m)) << b;
            }
            for (; b < n; ++b) {
                const float v = shift ? row[base + b] + (*shift)[base + b] : row[base + b];
                word |= static_cast<uint64_t>(cmp_scalar(v, t)) << b;
            }
            bits[static_cast<size_t>(r * kw + w)] = word;
        }
    }
    return bits;
}

// max_j x[j] over n ≥ 1 finite values, four lanes at a time: max is exact in any order, so this is
// std::max_element's value without its serial, branching loop.
float row_max(const float * x, int64_t n) {
    int64_t j = 0;
    float best = x[0];
    if (n >= 4) {
        __m128 lanes = _mm_loadu_ps(x);
        for (j = 4; j + 4 <= n; j += 4) lanes = _mm_max_ps(lanes, _mm_loadu_ps(x + j));
        alignas(16) float four[4];
        _mm_store_ps(four, lanes);
        best = std::max(std::max(four[0], four[1]), std::max(four[2], four[3]));
    }
    for (; j < n; ++j) best = std::max(best, x[j]);
    return best;
}

Operand plane_operand(int64_t rows, int64_t k) {
    Operand op;
    op.kind = Operand::Kind::planes;
    op.rows = rows;
    op.k = k;
    return op;
}

void add_plane(Operand & op, std::vector<uint64_t> sign, std::vector<uint64_t> mask, float scale) {
    Plane plane;
    plane.sign = std::move(sign);
    plane.mask = std::move(mask);
    plane.scale.assign(static_cast<size_t>(op.rows), scale);
    op.planes.push_back(std::move(plane));
}

Operand f32_operand(int64_t rows, int64_t k) {
    Operand op;
    op.rows = rows;
    op.k = k;
    op.values.resize(static_cast<size_t>(rows * k));
    return op;
}

}  // namespace

Operand ActQuantizer::encode_sab_from_scores(const float * scores, int64_t rows, int64_t k, int64_t ld) const {
    if (name != "sab") throw std::invalid_argument("encode_sab_from_scores needs the sab quantizer, not '" + name + "'");
    const auto log_beta = static_cast<float>(std::log(options.at("beta")));
    std::vector<float> threshold(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) threshold[r] = row_max(scores + r * ld, k) + log_beta;
    Operand op = plane_operand(rows, k);
    add_plane(op, {}, pack_compare<Cmp::ge>(scores, rows, k, ld, nullptr, threshold), 1.0f);
    return op;
}

Operand ActQuantizer::encode_sign_bits(const uint64_t * bits, int64_t rows, int64_t k) const {
    if (name != "sign" && name != "sign_approx") {
        throw std::invalid_argument("encode_sign_bits needs a sign quantizer, not '" + name + "'");
    }
    Operand op = plane_operand(rows, k);
    add_plane(op, std::vector<uint64_t>(bits, bits + rows * b1_words(k)), {}, 1.0f);
    return op;
}

bool ActQuantizer::encodes_int8() const {
    if (name != "lsq") return false;
    const auto zero = params.find("zero_point");
    return params.at("step").size() == 1 && (zero == params.end() || zero->second.size() == 1) &&
           options.at("qn") >= -128 && options.at("qp") <= 127;
}

Operand ActQuantizer::encode(const float * x, int64_t rows, int64_t k, int64_t ld, SiteScope scope, int64_t head,
                             float range_max, float range_min) const {
    auto view = [&](const char * key) {
        const std::vector<float> & p = params.at(key);
        if (p.size() == 1) return ParamView{p.data(), false};
        return scope == SiteScope::token ? ParamView{p.data(), true} : ParamView{p.data() + head, false};
    };
    const std::vector<uint64_t> none;

    if (name.empty()) {
        Operand op = f32_operand(rows, k);
        for (int64_t r = 0; r < rows; ++r) std::copy(x + r * ld, x + r * ld + k, op.values.begin() + r * k);
        return op;
    }
    Operand op = plane_operand(rows, k);
    const std::vector<float> zero_threshold = {0.0f};
    if (name == "sign" || name == "sign_approx") {
        std::vector<uint64_t> bits(static_cast<size_t>(rows * b1_words(k)));
        pack_sign_rows(bgemm_kernel(), x, rows, k, ld, bits.data());
        add_plane(op, std::move(bits), none, 1.0f);
        return op;
    }
    if (name == "rsign" || name == "elastic_signed") {
        const ParamView shift = view("shift");
        add_plane(op, pack_compare<Cmp::lt>(x, rows, k, ld, &shift, zero_threshold), none,
                  name == "elastic_signed" ? params.at("alpha")[0] : 1.0f);
        return op;
    }
    if (name == "elastic_unsigned") {
        const ParamView shift = view("shift");
        const float alpha = params.at("alpha")[0];
        // round(clamp(u, 0, 1)) with ties to even is 1 exactly when u > 0.5.
        add_plane(op, none, pack_bits(x, rows, k, ld, [&](int64_t, int64_t j, float v) { return (v + shift[j]) / alpha > 0.5f; }),
                  alpha);
        return op;
    }
    if (name == "bool") {
        add_plane(op, none, pack_compare<Cmp::gt>(x, rows, k, ld, nullptr, zero_threshold), 1.0f);
        return op;
    }
    if (name == "sab") {
        const auto beta = static_cast<float>(options.at("beta"));
        std::vector<float> threshold(static_cast<size_t>(rows));
        for (int64_t r = 0; r < rows; ++r) threshold[r] = beta * row_max(x + r * ld, k);
        add_plane(op, none, pack_compare<Cmp::ge>(x, rows, k, ld, nullptr, threshold), 1.0f);
        return op;
    }
    if (name == "lsq") {
        const auto qn = static_cast<float>(options.at("qn")), qp = static_cast<float>(options.at("qp"));
        const bool has_zero = params.count("zero_point") != 0;
        const ParamView step = view("step");
        const ParamView zero = has_zero ? view("zero_point") : ParamView{};
        const bool as_int8 = !step.per_column && !zero.per_column && qn >= -128 && qp <= 127;
        auto code = [&](int64_t j, float v) {
            const float u = has_zero ? v / step[j] + zero[j] : v / step[j];
            return round_half_even(std::min(std::max(u, qn), qp));  // |u| ≤ 65536 once clamped (validated)
        };
        if (!as_int8) {
            Operand f = f32_operand(rows, k);
            for (int64_t r = 0; r < rows; ++r) {
                for (int64_t j = 0; j < k; ++j) {
                    f.values[r * k + j] = (code(j, x[r * ld + j]) - (has_zero ? zero[j] : 0.0f)) * step[j];
                }
            }
            return f;
        }
        Operand q;
        q.kind = Operand::Kind::int8;
        q.rows = rows;
        q.k = k;
        q.codes.resize(static_cast<size_t>(rows * k));
        // One step and zero point for the whole tensor (as_int8): a loop the compiler vectorises.
        const float s = step[0], z = has_zero ? zero[0] : 0.0f;
        for (int64_t r = 0; r < rows; ++r) {
            const float * row = x + r * ld;
            int8_t * out = q.codes.data() + r * k;
            for (int64_t j = 0; j < k; ++j) {
                const float u = has_zero ? row[j] / s + z : row[j] / s;
                const float c = round_half_even(std::min(std::max(u, qn), qp));
                out[j] = static_cast<int8_t>(c == c ? c : 0.0f);  // NaN input: code 0, not UB
            }
        }
        q.scale.assign(static_cast<size_t>(rows), step[0]);
        q.zero.assign(static_cast<size_t>(rows), has_zero ? static_cast<int32_t>(zero[0]) : 0);
        return q;
    }
    if (name == "bivit_act") {
        const ParamView alpha = view("alpha"), zero = view("zero_point");
        auto negative = [&](int64_t, int64_t j, float v) { return v / alpha[j] + zero[j] < 0.0f; };
        if (alpha.per_column) {
            // A per-column scale cannot leave the bit-wise product: decode to the FP32 values.
            Operand f = f32_operand(rows, k);
            for (int64_t r = 0; r < rows; ++r) {
                for (int64_t j = 0; j < k; ++j) {
                    const float bit = negative(r, j, x[r * ld + j]) ? -1.0f : 1.0f;
                    f.values[r * k + j] = (bit - zero[j]) * alpha[j];
                }
            }
            return f;
        }
        add_plane(op, pack_bits(x, rows, k, ld, negative), none, alpha[0]);
        op.offset.assign(static_cast<size_t>(rows), -zero[0] * alpha[0]);
        return op;
    }
    if (name == "gsb_value") {
        // v̂ = α1·s + α2·s·m1 + α3·s·m2: one ±1 plane and two ternary planes sharing its signs.
        const std::vector<float> & a = params.at("alphas");
        const float hi1 = 0.7f * range_max, lo1 = 0.7f * range_min, hi2 = 0.9f * range_max, lo2 = 0.9f * range_min;
        std::vector<uint64_t> sign = pack_bits(x, rows, k, ld, [](int64_t, int64_t, float v) { return v < 0.0f; });
        std::vector<uint64_t> band1 = pack_bits(x, rows, k, ld, [&](int64_t, int64_t, float v) { return v > hi1 || v < lo1; });
        std::vector<uint64_t> band2 = pack_bits(x, rows, k, ld, [&](int64_t, int64_t, float v) { return v > hi2 || v < lo2; });
        std::vector<uint64_t> sign1(sign.size()), sign2(sign.size());
        for (size_t i = 0; i < sign.size(); ++i) {
            sign1[i] = sign[i] & band1[i];
            sign2[i] = sign[i] & band2[i];
        }
        add_plane(op, std::move(sign), none, a[0]);
        add_plane(op, std::move(sign1), std::move(band1), a[1]);
        add_plane(op, std::move(sign2), std::move(band2), a[2]);
        return op;
    }
    if (name == "gsb_attention") {
        const std::vector<float> & a = params.at("alphas");
        const float t1 = 0.7f * range_max, t2 = 0.9f * range_max, a0 = a[0];
        add_plane(op, none, pack_bits(x, rows, k, ld, [&](int64_t, int64_t, float v) { return v / a0 > 0.5f; }), a[0]);
        add_plane(op, none, pack_bits(x, rows, k, ld, [&](int64_t, int64_t, float v) { return v > t1; }), a[1]);
        add_plane(op, none, pack_bits(x, rows, k, ld, [&](int64_t, int64_t, float v) { return v > t2; }), a[2]);
        return op;
    }
    throw std::invalid_argument("activation quantizer '" + name + "' is not implemented by the runtime");
}

}  // namespace bitvit::runtime
