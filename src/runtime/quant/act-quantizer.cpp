#include "runtime/quant/act-quantizer.h"

#include <cmath>
#include <set>
#include <stdexcept>

#include "format/text.h"
#include "runtime/quant/encode-util.h"

namespace bitvit::runtime {

ActQuantizer ActQuantizer::named(const std::string & name, std::map<std::string, std::vector<float>> params,
                                 std::map<std::string, double> options) {
    ActQuantizer q;
    q.params = std::move(params);
    q.options = std::move(options);
    if (name.empty()) return q;
    q.row = spec::find_quantizer(name);
    if (!q.row) {
        throw std::invalid_argument("unknown activation quantizer " + format::excerpt(name) + " (known: " +
                                    spec::quantizer_names_list() + ")");
    }
    if (q.row->sites == spec::kWeightSite) {
        throw std::invalid_argument(std::string("quantizer '") + q.row->name + "' quantizes weights, not activations");
    }
    return q;
}

namespace {

bool size_fits(spec::ParamSize size, int64_t n, int64_t channels) {
    switch (size) {
        case spec::ParamSize::channel: return n == channels;
        case spec::ParamSize::scalar: return n == 1;
        case spec::ParamSize::channel_or_scalar: return n == 1 || n == channels;
        case spec::ParamSize::three: return n == 3;
    }
    return false;
}

const char * check_failure(spec::ParamCheck check, float v) {
    if (!std::isfinite(v)) return "holds a non-finite value";
    if (check == spec::ParamCheck::positive && !(v > 0.0f)) return "must be positive";
    // Zero points are integers (rounded at export) of a size an int32 holds.
    if (check == spec::ParamCheck::integer && (v != std::nearbyint(v) || std::fabs(v) > 65536.0f)) {
        return "values must be integers within ±65536";
    }
    return nullptr;
}

}  // namespace

void ActQuantizer::validate(const std::string & site, spec::SiteClass site_class, int64_t channels) const {
    auto fail = [&](const std::string & problem) { throw std::invalid_argument("site " + site + ": " + problem); };
    if (!row) {
        if (!params.empty() || !options.empty()) fail("a full-precision site has quantizer parameters");
        return;
    }
    const std::string who = std::string("quantizer ") + row->name;
    if (!spec::serves(*row, site_class)) {
        fail(who + " cannot quantize " + spec::site_classes(site_class) + " (it serves " + spec::site_classes(row->sites) + ")");
    }
    std::set<std::string> expected;
    for (const auto & p : row->deployed_params) {
        expected.insert(p.name);
        const auto it = params.find(p.name);
        if (it == params.end()) {
            if (p.required) fail(who + " needs parameter '" + p.name + "'");
            continue;
        }
        const auto n = static_cast<int64_t>(it->second.size());
        if (!size_fits(p.size, n, channels)) {
            fail("parameter '" + std::string(p.name) + "' has " + std::to_string(n) + " values (channels: " + std::to_string(channels) + ")");
        }
        for (float v : it->second) {
            if (const char * problem = check_failure(p.check, v)) fail("parameter '" + std::string(p.name) + "' " + problem);
        }
    }
    for (const auto & [key, values] : params) {
        if (!expected.count(key)) fail(who + " has no parameter " + format::excerpt(key));
    }
    std::set<std::string> known;
    for (const auto & o : row->deployed_options) {
        known.insert(o.name);
        const auto it = options.find(o.name);
        if (it == options.end()) fail(who + " needs option '" + o.name + "'");
        const double v = it->second;
        if (!(v >= o.lo && v <= o.hi) || (o.integer && v != std::floor(v))) {
            fail("option " + std::string(o.name) + " = " + std::to_string(v) + " is out of range for " + who);
        }
    }
    for (const auto & [key, value] : options) {
        if (!known.count(key)) fail(who + " has no option " + format::excerpt(key));
    }
    if (is(spec::Quantizer::lsq) && !(options.at("qn") < options.at("qp"))) fail("options qn, qp must have qn < qp");
}

bool ActQuantizer::encodes_int8() const {
    if (!is(spec::Quantizer::lsq)) return false;
    const auto zero = params.find("zero_point");
    return params.at("step").size() == 1 && (zero == params.end() || zero->second.size() == 1) &&
           options.at("qn") >= -128 && options.at("qp") <= 127;
}

LayerInputs ActQuantizer::token_operand() const {
    if (!row) return LayerInputs::f32;
    if (is(spec::Quantizer::lsq)) return encodes_int8() ? LayerInputs::int8 : LayerInputs::f32;
    if (is(spec::Quantizer::actbi) && params.at("alpha").size() > 1) return LayerInputs::f32;
    return LayerInputs::planes;
}

Operand ActQuantizer::encode_sign_bits(const uint64_t * bits, int64_t rows, int64_t k) const {
    if (!sign_only()) throw std::invalid_argument(std::string("encode_sign_bits needs a sign quantizer, not '") + name() + "'");
    Operand op = quant::plane_operand(rows, k);
    quant::add_plane(op, std::vector<uint64_t>(bits, bits + rows * b1_words(k)), {}, 1.0f);
    return op;
}

Operand ActQuantizer::encode(const float * x, int64_t rows, int64_t k, int64_t ld, SiteScope scope, int64_t head,
                             float range_max, float range_min) const {
    if (!row) {
        Operand op = quant::f32_operand(rows, k);
        for (int64_t r = 0; r < rows; ++r) std::copy(x + r * ld, x + r * ld + k, op.values.begin() + r * k);
        return op;
    }
    switch (row->family) {
        case spec::Family::binary: return quant::encode_binary(*this, x, rows, k, ld, scope, head);
        case spec::Family::bit: return quant::encode_bit(*this, x, rows, k, ld, scope, head);
        case spec::Family::lsq: return quant::encode_lsq(*this, x, rows, k, ld, scope, head);
        case spec::Family::bivit: return quant::encode_bivit(*this, x, rows, k, ld);
        case spec::Family::bi_vit: return quant::encode_bi_vit(*this, x, rows, k, ld, scope, head);
        case spec::Family::gsb: return quant::encode_gsb(*this, x, rows, k, ld, range_max, range_min);
        case spec::Family::tervit: break;  // weights only
    }
    throw std::invalid_argument(std::string("activation quantizer '") + name() + "' is not implemented by the runtime");
}

}  // namespace bitvit::runtime
