#include "runtime/act-quantizer.h"

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

// An operand of `planes` empty planes over rows × k, each with the bit vectors asked for.
struct PlaneBuilder {
    Operand op;
    int64_t kw;
    PlaneBuilder(int64_t rows, int64_t k) : kw(b1_words(k)) {
        op.kind = Operand::Kind::planes;
        op.rows = rows;
        op.k = k;
    }
    Plane & add(bool sign, bool mask, float scale) {
        Plane p;
        const auto words = static_cast<size_t>(op.rows * kw);
        if (sign) p.sign.assign(words, 0);
        if (mask) p.mask.assign(words, 0);
        p.scale.assign(static_cast<size_t>(op.rows), scale);
        op.planes.push_back(std::move(p));
        return op.planes.back();
    }
    void set(std::vector<uint64_t> & bits, int64_t r, int64_t j) const { bits[r * kw + j / 64] |= uint64_t{1} << (j % 64); }
};

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
    if (name == "gsb_value" || name == "gsb_attention") positive("alphas");
}

Operand ActQuantizer::encode(const float * x, int64_t rows, int64_t k, int64_t ld, SiteScope scope, int64_t head,
                             float range_max, float range_min) const {
    // The parameter value for column j: per column at token scope, per head otherwise, or the scalar.
    auto param = [&](const char * key, int64_t j) {
        const std::vector<float> & p = params.at(key);
        if (p.size() == 1) return p[0];
        return p[static_cast<size_t>(scope == SiteScope::token ? j : head)];
    };
    // Whether a parameter is the same for every column of this call (so it can scale rows).
    auto uniform = [&](const char * key) { return scope == SiteScope::per_head || params.at(key).size() == 1; };

    if (name.empty()) {
        Operand op;
        op.rows = rows;
        op.k = k;
        op.values.resize(static_cast<size_t>(rows * k));
        for (int64_t r = 0; r < rows; ++r) std::copy(x + r * ld, x + r * ld + k, op.values.begin() + r * k);
        return op;
    }
    PlaneBuilder b(rows, k);
    if (name == "sign" || name == "sign_approx" || name == "rsign" || name == "elastic_signed") {
        const bool shifted = name == "rsign" || name == "elastic_signed";
        Plane & p = b.add(true, false, name == "elastic_signed" ? params.at("alpha")[0] : 1.0f);
        for (int64_t r = 0; r < rows; ++r) {
            for (int64_t j = 0; j < k; ++j) {
                const float v = shifted ? x[r * ld + j] + param("shift", j) : x[r * ld + j];
                if (v < 0.0f) b.set(p.sign, r, j);
            }
        }
        return std::move(b.op);
    }
    if (name == "elastic_unsigned") {
        const float alpha = params.at("alpha")[0];
        Plane & p = b.add(false, true, alpha);
        for (int64_t r = 0; r < rows; ++r) {
            for (int64_t j = 0; j < k; ++j) {
                // round(clamp(u, 0, 1)) with ties to even is 1 exactly when u > 0.5.
                if ((x[r * ld + j] + param("shift", j)) / alpha > 0.5f) b.set(p.mask, r, j);
            }
        }
        return std::move(b.op);
    }
    if (name == "bool") {
        Plane & p = b.add(false, true, 1.0f);
        for (int64_t r = 0; r < rows; ++r) {
            for (int64_t j = 0; j < k; ++j) {
                if (x[r * ld + j] > 0.0f) b.set(p.mask, r, j);
            }
        }
        return std::move(b.op);
    }
    if (name == "sab") {
        Plane & p = b.add(false, true, 1.0f);
        const auto beta = static_cast<float>(options.at("beta"));
        for (int64_t r = 0; r < rows; ++r) {
            const float threshold = beta * *std::max_element(x + r * ld, x + r * ld + k);
            for (int64_t j = 0; j < k; ++j) {
                if (x[r * ld + j] >= threshold) b.set(p.mask, r, j);
            }
        }
        return std::move(b.op);
    }
    if (name == "lsq") {
        const auto qn = static_cast<float>(options.at("qn")), qp = static_cast<float>(options.at("qp"));
        const bool has_zero = params.count("zero_point") != 0;
        const bool as_int8 = uniform("step") && (!has_zero || uniform("zero_point")) && qn >= -128 && qp <= 127;
        Operand op;
        op.rows = rows;
        op.k = k;
        op.kind = as_int8 ? Operand::Kind::int8 : Operand::Kind::f32;
        (as_int8 ? op.codes.resize(static_cast<size_t>(rows * k)) : op.values.resize(static_cast<size_t>(rows * k)));
        for (int64_t r = 0; r < rows; ++r) {
            for (int64_t j = 0; j < k; ++j) {
                const float s = param("step", j), z = has_zero ? param("zero_point", j) : 0.0f;
                const float u = has_zero ? x[r * ld + j] / s + z : x[r * ld + j] / s;
                const float q = std::nearbyint(std::min(std::max(u, qn), qp));  // ties to even, as torch.round
                if (as_int8) {
                    op.codes[r * k + j] = static_cast<int8_t>(q);
                } else {
                    op.values[r * k + j] = (q - z) * s;
                }
            }
        }
        if (as_int8) {
            op.scale.assign(static_cast<size_t>(rows), param("step", 0));
            op.zero.assign(static_cast<size_t>(rows), static_cast<int32_t>(has_zero ? param("zero_point", 0) : 0.0f));
        }
        return op;
    }
    if (name == "bivit_act") {
        if (!uniform("alpha")) {
            // A per-column scale cannot leave the bit-wise product: decode to the FP32 values.
            Operand op;
            op.rows = rows;
            op.k = k;
            op.values.resize(static_cast<size_t>(rows * k));
            for (int64_t r = 0; r < rows; ++r) {
                for (int64_t j = 0; j < k; ++j) {
                    const float a = param("alpha", j), z = param("zero_point", j);
                    const float bit = x[r * ld + j] / a + z < 0.0f ? -1.0f : 1.0f;
                    op.values[r * k + j] = (bit - z) * a;
                }
            }
            return op;
        }
        const float a = param("alpha", 0), z = param("zero_point", 0);
        Plane & p = b.add(true, false, a);
        for (int64_t r = 0; r < rows; ++r) {
            for (int64_t j = 0; j < k; ++j) {
                if (x[r * ld + j] / a + z < 0.0f) b.set(p.sign, r, j);
            }
        }
        b.op.offset.assign(static_cast<size_t>(rows), -z * a);
        return std::move(b.op);
    }
    if (name == "gsb_value") {
        const std::vector<float> & a = params.at("alphas");
        const float hi1 = 0.7f * range_max, lo1 = 0.7f * range_min, hi2 = 0.9f * range_max, lo2 = 0.9f * range_min;
        b.add(true, false, a[0]);
        b.add(true, true, a[1]);
        b.add(true, true, a[2]);
        Plane *all = &b.op.planes[0], *band1 = &b.op.planes[1], *band2 = &b.op.planes[2];
        for (int64_t r = 0; r < rows; ++r) {
            for (int64_t j = 0; j < k; ++j) {
                const float v = x[r * ld + j];
                const bool negative = v < 0.0f;
                if (negative) b.set(all->sign, r, j);
                for (auto [plane, hi, lo] : {std::tuple{band1, hi1, lo1}, std::tuple{band2, hi2, lo2}}) {
                    if (v > hi || v < lo) {
                        b.set(plane->mask, r, j);
                        if (negative) b.set(plane->sign, r, j);
                    }
                }
            }
        }
        return std::move(b.op);
    }
    if (name == "gsb_attention") {
        const std::vector<float> & a = params.at("alphas");
        const float t1 = 0.7f * range_max, t2 = 0.9f * range_max;
        b.add(false, true, a[0]);
        b.add(false, true, a[1]);
        b.add(false, true, a[2]);
        for (int64_t r = 0; r < rows; ++r) {
            for (int64_t j = 0; j < k; ++j) {
                const float v = x[r * ld + j];
                if (v / a[0] > 0.5f) b.set(b.op.planes[0].mask, r, j);
                if (v > t1) b.set(b.op.planes[1].mask, r, j);
                if (v > t2) b.set(b.op.planes[2].mask, r, j);
            }
        }
        return std::move(b.op);
    }
    throw std::invalid_argument("activation quantizer '" + name + "' is not implemented by the runtime");
}

}  // namespace bitvit::runtime
