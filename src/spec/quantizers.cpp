#include "spec/quantizers.h"

#include <cstdio>
#include <stdexcept>

namespace bitvit::spec {

namespace {

constexpr unsigned kActivations = kTokenSite | kHeadSite | kAttentionSite;
constexpr unsigned kAnySite = kWeightSite | kActivations;

const OptionSpec kFlag0 = {"", 0, 0, 1, true, ""};

OptionSpec flag(const char * name, bool fallback, const char * meaning) {
    OptionSpec o = kFlag0;
    o.name = name;
    o.fallback = fallback ? 1 : 0;
    o.meaning = meaning;
    return o;
}

std::vector<QuantizerRow> build_table() {
    using P = ParamSpec;
    const P shift{"shift", ParamSize::channel, true, ParamCheck::finite};
    const P alpha1{"alpha", ParamSize::scalar, true, ParamCheck::positive};
    return {
        {Quantizer::sign, "sign", Family::binary, "BNN (§1)", kAnySite, {}, {}, {}, {}, Encoding::pm1_plane, {1, 1},
         "sign(x), sign(0) = +1", "g·1{|x| < 1} (clipped STE)"},
        {Quantizer::sign_approx, "sign_approx", Family::binary, "Bi-Real (§1)", kAnySite, {}, {}, {}, {}, Encoding::pm1_plane,
         {1, 1}, "sign(x)", "g·(2 − 2|x|)·1{|x| < 1} (ApproxSign)"},
        {Quantizer::bool_, "bool", Family::binary, "BiBERT Bool (§1)", kAttentionSite, {}, {}, {}, {},
         Encoding::zero_one_plane, {1, 1}, "1{x > 0} on softmax-free scores", "g·1{|x| ≤ 1}"},
        {Quantizer::rsign, "rsign", Family::binary, "ReActNet RSign (§1)", kTokenSite | kHeadSite, {"shift"}, {}, {shift}, {},
         Encoding::pm1_plane, {1, 1}, "sign(x + b), b per channel", "ApproxSign; b learned"},
        {Quantizer::xnor, "xnor", Family::binary, "XNOR-Net, ReActNet, Bi-ViT (§1)", kWeightSite, {}, {}, {}, {},
         Encoding::pm1_plane, {1, 1}, "mean_row|W|·sign(W)", "g·1{|W| ≤ 1}, the scale outside the chain"},
        {Quantizer::row_centred, "row_centred", Family::binary, "BiBERT (§1)", kWeightSite, {}, {}, {}, {},
         Encoding::pm1_plane, {1, 1}, "mean_row|W|·sign(W − mean_row W)",
         "u − mean_row u, u = g·1{|W − mean_row W| ≤ 1}"},
        {Quantizer::bwn, "bwn", Family::bit, "BiT, GSB (§2)", kWeightSite, {}, {}, {}, {}, Encoding::pm1_plane, {1, 1},
         "mean|W|·sign(W − mean W), per tensor", "g (identity)"},
        {Quantizer::elastic_signed, "elastic_signed", Family::bit, "BiT, GSB (§2, §7)", kTokenSite | kHeadSite,
         {"shift", "alpha"},
         {flag("gsb_gradient", false, "1: GSB's α-gradient with the clip term")},
         {shift, alpha1}, {}, Encoding::pm1_plane, {1, 1}, "α·sign(x + b)",
         "g·1{|x/α| ≤ 1}; α: Σ sign·g/√n (BiT) or Σ (sign − u·1{|u| ≤ 1})·g/√n (GSB)"},
        {Quantizer::elastic_unsigned, "elastic_unsigned", Family::bit, "BiT (§2)", kActivations, {"shift", "alpha"}, {},
         {shift, alpha1}, {}, Encoding::zero_one_plane, {1, 1}, "α·round(clamp((x + b)/α, 0, 1))",
         "LSQ with Qn = 0, Qp = 1"},
        {Quantizer::lsq, "lsq", Family::lsq, "LSQ, LSQ+, Q-ViT (§3)", kAnySite, {"step", "zero_point"},
         {{"bits", 8, 2, 16, true, "bit width"},
          flag("signed", true, "signed range [−2^(b−1), 2^(b−1) − 1], else [0, 2^b − 1]"),
          flag("per_channel", false, "one step (and zero point) per channel"),
          flag("zero_point", false, "learnable zero point (LSQ+)")},
         {{"step", ParamSize::channel_or_scalar, true, ParamCheck::positive},
          {"zero_point", ParamSize::channel_or_scalar, false, ParamCheck::integer}},
         {{"qn", -65536, 65536, true}, {"qp", -65536, 65536, true}},
         Encoding::int8_codes, {8, 1}, "(round(clamp(x/s + z, Qn, Qp)) − z)·s",
         "LSQ: x inside the range; s and z grad-scaled by 1/√(n·Qp)"},
        {Quantizer::twn, "twn", Family::tervit, "TWN, TerViT (§4)", kWeightSite, {},
         {flag("per_row", false, "1: a threshold and scale per output channel (TerViT)")}, {}, {},
         Encoding::ternary_planes, {2, 1}, "α·ternary(W), Δ = 0.7·mean|W|", "g (identity)"},
        {Quantizer::sab, "sab", Family::bivit, "BiViT SAB (§5)", kAttentionSite, {},
         {{"beta", 0.25, 1e-6, 1, false, "threshold as a fraction of the row maximum"}}, {}, {{"beta", 1e-6, 1, false}},
         Encoding::zero_one_plane, {1, 1}, "1{P ≥ β·max_row P}", "g into the post-softmax P"},
        {Quantizer::pws, "pws", Family::bivit, "BiViT PWS (§5)", kWeightSite, {"scale"}, {}, {}, {}, Encoding::pm1_plane,
         {1, 1}, "s_row·sign(W − mean_row W), s learned (init mean_row|W|)",
         "u − mean_row u, u = s·g·1{|W_c| < 1}; s: Σ_in g·sign(W_c)"},
        {Quantizer::actbi, "actbi", Family::bi_vit, "Bi-ViT ActBi (§6)", kActivations, {"alpha", "zero_point"}, {},
         {{"alpha", ParamSize::channel, true, ParamCheck::positive}, {"zero_point", ParamSize::channel, true, ParamCheck::integer}},
         {}, Encoding::offset_plane, {1, 1}, "(sign(clamp(x/α + round z, −1, 1)) − round z)·α, per channel or head",
         "1{|x/α + z| ≤ 1}; α, z learned, grad-scaled by 1/√n"},
        {Quantizer::linear_bi, "linear_bi", Family::bi_vit, "Bi-ViT LinearBi (§6, §9)", kWeightSite, {"alpha"}, {}, {}, {},
         Encoding::pm1_plane, {1, 1}, "α_row·sign(clamp(W/α_row, −1, 1)), α learned (init 2·mean|W|)",
         "1{|W/α| ≤ 1}; α: Σ_in (sign − u·1{|u| ≤ 1})·g/√n, u = W/α"},
        {Quantizer::gsb_value, "gsb_value", Family::gsb, "GSB (§7)", kHeadSite, {"alphas"}, {},
         {{"alphas", ParamSize::three, true, ParamCheck::positive}}, {}, Encoding::group_planes, {1, 3},
         "Σ_i α_i·sign(v)·M_i, bands at 0.7 and 0.9 of max/min", "§7 equations (up to 3g into v)"},
        {Quantizer::gsb_attention, "gsb_attention", Family::gsb, "GSB (§7)", kAttentionSite, {"alphas"}, {},
         {{"alphas", ParamSize::three, true, ParamCheck::positive}}, {}, Encoding::group_planes, {1, 3},
         "α1·round(clamp(P/α1, 0, 1)) + α2·M1 + α3·M2", "§7 equations"},
    };
}

}  // namespace

const char * family_name(Family family) {
    switch (family) {
        case Family::binary: return "binary";
        case Family::bit: return "bit";
        case Family::lsq: return "lsq";
        case Family::tervit: return "tervit";
        case Family::bivit: return "bivit";
        case Family::bi_vit: return "bi-vit";
        case Family::gsb: return "gsb";
    }
    return "?";
}

const std::vector<QuantizerRow> & quantizer_table() {
    static const std::vector<QuantizerRow> table = [] {
        std::vector<QuantizerRow> rows = build_table();
        for (size_t i = 0; i < rows.size(); ++i) {
            if (static_cast<size_t>(rows[i].id) != i) throw std::logic_error("quantizer table out of enum order");
        }
        return rows;
    }();
    return table;
}

const QuantizerRow * find_quantizer(std::string_view name) {
    for (const auto & row : quantizer_table()) {
        if (name == row.name) return &row;
    }
    return nullptr;
}

const QuantizerRow & quantizer_row(Quantizer id) { return quantizer_table().at(static_cast<size_t>(id)); }

std::string quantizer_names_list() {
    std::string out;
    for (const auto & row : quantizer_table()) out += (out.empty() ? "" : ", ") + std::string(row.name);
    return out;
}

std::string site_classes(unsigned mask) {
    std::string out;
    const std::pair<SiteClass, const char *> names[] = {
        {kWeightSite, "weights"}, {kTokenSite, "linear inputs"}, {kHeadSite, "q/k/v"}, {kAttentionSite, "attention map"}};
    for (const auto & [bit, name] : names) {
        if (mask & bit) out += (out.empty() ? "" : ", ") + std::string(name);
    }
    return out;
}

const char * renamed_quantizer(std::string_view old_name) {
    if (old_name == "bivit_act") return "actbi";  // Bi-ViT's ActBi; the old name read as BiViT's
    return nullptr;
}

namespace {

// A Markdown table cell: '|' would end the cell.
std::string cell(const std::string & text) {
    std::string out;
    for (char c : text) out += c == '|' ? std::string("\\|") : std::string(1, c);
    return out;
}

}  // namespace

std::string quantizer_table_markdown() {
    std::string out = "| name | family | sites | forward | backward / learned | options | source |\n"
                      "|---|---|---|---|---|---|---|\n";
    for (const auto & row : quantizer_table()) {
        std::string options;
        for (const auto & o : row.options) {
            char value[32];
            std::snprintf(value, sizeof value, "%g", o.fallback);
            options += (options.empty() ? "" : "; ") + std::string("`") + o.name + "` = " + value + " (" + o.meaning + ")";
        }
        out += "| `" + std::string(row.name) + "` | " + family_name(row.family) + " | " + site_classes(row.sites) + " | " +
               cell(row.forward) + " | " + cell(row.backward) + " | " + cell(options.empty() ? "—" : options) + " | " +
               row.source + " |\n";
    }
    return out;
}

}  // namespace bitvit::spec
