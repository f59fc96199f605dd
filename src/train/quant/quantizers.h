// The quantizer registry of training: builds the module for a site from a recipe's spec, reading
// the quantizer table (src/spec/quantizers.h) for the sites each quantizer serves and its options.
// The quantizers themselves are grouped one family per file; this header brings them all in.
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "train/deit.h"
#include "train/quant/bi-vit.h"
#include "train/quant/binary.h"
#include "train/quant/bit.h"
#include "train/quant/bivit.h"
#include "train/quant/common.h"
#include "train/quant/gsb.h"
#include "train/quant/lsq.h"
#include "train/quant/tervit.h"

namespace bitvit::quant {

struct QuantizerSpec {
    std::string name;
    std::map<std::string, double> options;
};

// The table's class of a site kind.
spec::SiteClass site_class(SiteKind kind);

// Builds the quantizer for a site. Throws std::invalid_argument naming the quantizer for an unknown
// name (and the new name of a renamed one), an unknown or out-of-range option, or a site the
// quantizer cannot serve (a weight quantizer on an activation, say).
SiteTransform make_quantizer(const QuantizerSpec & spec, const SiteInfo & site);
std::vector<std::string> quantizer_names();

// The precision a site's transform gives (full precision when none is installed).
Precision precision_of(const SiteTransform & transform);

}  // namespace bitvit::quant
