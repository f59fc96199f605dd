// Export: a trained model as a packed bitvit model (docs/format.md), the file the runtime runs.
// Weight sites keep only what deployment needs — sign bits (and a mask for ternary) with per-row
// scales, or 8-bit codes with per-row steps — taken from the quantizer's own output, so whatever a
// method folds into its weights (XNOR/BWN/PWS scales, TWN thresholds, LSQ steps) is exactly what the
// trained model used. Activation sites keep their quantizer's deployed parameters.
#pragma once

#include <string>
#include <vector>

#include "layers.h"

namespace bitvit {

struct ExportOptions {
    std::string method;        // recorded in the metadata ("bivit", ...)
    std::vector<double> mean;  // input normalisation on [0, 1] pixels, per channel
    std::vector<double> std;
    // Store the full-precision tensors (patch embedding, head, embeddings, norms, biases) and the
    // weight scales as F16 (format version 2): about half of what is not bits, and the runtime's
    // answers are no longer bit-identical to the trained model's (bitvit verify measures the
    // agreement). Activation-quantizer parameters stay F32: they decide thresholds.
    bool half_storage = false;
    // The classes' names, index = class (metadata "class_names", so the runtime can name its
    // predictions); empty = not recorded.
    std::vector<std::string> class_names;
};

struct ExportSummary {
    int64_t file_bytes = 0;     // the packed file
    int64_t fp32_bytes = 0;     // the same model's parameters in FP32
    int64_t packed_sites = 0;   // weight sites stored as bits or codes
};

// Writes `model` (a DeiT or a Swin; in eval mode, quantizers initialised) to `path` atomically. Throws
// std::invalid_argument naming the site when a quantized weight does not have the form its quantizer
// promises (e.g. a binary weight whose row values differ in magnitude) or a quantizer has no
// deployed form.
ExportSummary export_packed(VisionModel model, const ExportOptions & options, const std::string & path);

}  // namespace bitvit
