#include "train/quant/quantizers.h"

#include <stdexcept>

namespace bitvit::quant {

spec::SiteClass site_class(SiteKind kind) {
    switch (kind) {
        case SiteKind::weight: return spec::kWeightSite;
        case SiteKind::token_activation: return spec::kTokenSite;
        case SiteKind::head_activation: return spec::kHeadSite;
        case SiteKind::attention_map: return spec::kAttentionSite;
    }
    return spec::kWeightSite;
}

Precision precision_of(const SiteTransform & transform) {
    const auto quantizer = std::dynamic_pointer_cast<QuantizerImpl>(transform);
    return quantizer ? quantizer->precision() : Precision{};
}

SiteTransform make_quantizer(const QuantizerSpec & spec, const SiteInfo & site) {
    const spec::QuantizerRow * row = spec::find_quantizer(spec.name);
    if (!row) {
        if (const char * now = spec::renamed_quantizer(spec.name)) {
            throw std::invalid_argument("quantizer '" + spec.name + "' is now called '" + now + "'");
        }
        throw std::invalid_argument("unknown quantizer '" + spec.name + "' (known: " + spec::quantizer_names_list() + ")");
    }
    const spec::SiteClass cls = site_class(site.kind);
    if (!spec::serves(*row, cls)) {
        throw std::invalid_argument(std::string("quantizer '") + row->name + "' cannot quantize " + spec::site_classes(cls) +
                                    " (it serves " + spec::site_classes(row->sites) + ")");
    }
    const Options options(*row, spec.options);
    switch (row->family) {
        case spec::Family::binary: return make_binary(*row, options, site);
        case spec::Family::bit: return make_bit(*row, options, site);
        case spec::Family::lsq: return make_lsq(*row, options, site);
        case spec::Family::tervit: return make_tervit(*row, options, site);
        case spec::Family::bivit: return make_bivit(*row, options, site);
        case spec::Family::bi_vit: return make_bi_vit(*row, options, site);
        case spec::Family::gsb: return make_gsb(*row, options, site);
    }
    throw std::logic_error("quantizer family without a factory");
}

std::vector<std::string> quantizer_names() {
    std::vector<std::string> names;
    for (const auto & row : spec::quantizer_table()) names.emplace_back(row.name);
    return names;
}

}  // namespace bitvit::quant
