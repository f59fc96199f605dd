// The one table of quantizers. Every part of bitvit reads it: the training registry (which sites a
// quantizer serves, its options with their defaults and ranges), export, the runtime's validation of
// a packed file's sites and its dispatch (a Quantizer id decided at load), `bitvit ops` (precision)
// and the documentation (`bitvit quantizers --markdown` writes docs/quantization.md's table; a test
// keeps the two equal). Adding a quantizer means one row here and its implementation in its family's
// files: src/train/quant/<family>.cpp and, for activations, src/runtime/quant/<family>.cpp.
// Torch-free: the runtime links it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bitvit::spec {

enum class Quantizer : uint8_t {
    sign, sign_approx, bool_, rsign, xnor, row_centred,  // binary baselines: BNN, Bi-Real, ReActNet, XNOR-Net, BiBERT
    bwn, elastic_signed, elastic_unsigned,                // BiT (GSB reuses them)
    lsq,                                                  // LSQ / LSQ+ (8-bit stages, Q-ViT)
    twn,                                                  // TWN / TerViT
    sab, pws,                                             // BiViT
    actbi, linear_bi,                                     // Bi-ViT
    gsb_value, gsb_attention,                             // GSB
};

// Where each paper's quantizers live (one training file and one runtime file per family).
enum class Family : uint8_t { binary, bit, lsq, tervit, bivit, bi_vit, gsb };
const char * family_name(Family family);

// The classes of site a quantizer may serve (bit mask).
enum SiteClass : unsigned {
    kWeightSite = 1,     // a linear or conv weight [out, in...]
    kTokenSite = 2,      // a linear layer's input [tokens, C]
    kHeadSite = 4,       // per-head q, k, v [B, H, N, d]
    kAttentionSite = 8,  // the attention map [B, H, N, N] (the probs site)
};

// A recipe option: `{ name = "lsq", bits = 4 }`. Flags are options in [0, 1] with integer = true.
struct OptionSpec {
    const char * name;
    double fallback, lo, hi;
    bool integer;
    const char * meaning;
};

// A parameter tensor "<site>.<name>" of an activation site in a packed file (1-D F32, docs/format.md).
enum class ParamSize : uint8_t { channel, scalar, channel_or_scalar, three };
enum class ParamCheck : uint8_t { finite, positive, integer };  // integer: |v| ≤ 65536, whole
struct ParamSpec {
    const char * name;
    ParamSize size;
    bool required;
    ParamCheck check;
};

// An option the runtime reads from a packed file's site entry ({"quantizer", "options"}).
struct DeployedOption {
    const char * name;
    double lo, hi;
    bool integer;
};

// How the runtime holds a quantizer's output (runtime/operand.h).
enum class Encoding : uint8_t {
    pm1_plane,      // ±1 bits, times a scale (per row for a weight)
    zero_one_plane, // {0, 1} bits, times a scale
    offset_plane,   // ±1 bits times α, minus α·z (ActBi)
    int8_codes,     // integer codes, step and zero point
    ternary_planes, // sign and mask bits, times a per-row scale
    group_planes,   // three superposed planes (GSB)
};

// Bits per value and superposed groups, for the OPs and size accounting. Full precision: {32, 1}.
struct Precision {
    int bits = 32;
    int groups = 1;
};

struct QuantizerRow {
    Quantizer id;
    const char * name;
    Family family;
    const char * source;                // paper and docs/methods.md section
    unsigned sites;                     // SiteClass mask
    std::vector<const char *> learned;  // learnable parameters (checkpoint names under <site>_quantizer.)
    std::vector<OptionSpec> options;
    std::vector<ParamSpec> deployed_params;      // activation sites only
    std::vector<DeployedOption> deployed_options;
    Encoding encoding;
    Precision precision;                 // for lsq the bit width comes from its option `bits`
    const char * forward;                // the forward value, for the docs
    const char * backward;               // the gradients, for the docs
};

const std::vector<QuantizerRow> & quantizer_table();
// The row named `name`, or nullptr.
const QuantizerRow * find_quantizer(std::string_view name);
const QuantizerRow & quantizer_row(Quantizer id);
// "sign, sign_approx, …" for messages.
std::string quantizer_names_list();
// Whether the row serves a site of class `site_class`.
inline bool serves(const QuantizerRow & row, SiteClass site_class) { return (row.sites & site_class) != 0; }
// The names a row's site mask covers, "weights, attention map", for messages and docs.
std::string site_classes(unsigned mask);
// Names that older files and recipes used, and what they are called now (nullptr if none).
const char * renamed_quantizer(std::string_view old_name);

// The table as the Markdown docs/quantization.md carries.
std::string quantizer_table_markdown();

}  // namespace bitvit::spec
