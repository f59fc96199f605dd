// Quantizers as modules that can be installed at any model site (see deit.h): each owns its learnable
// parameters and its first-batch initialisation state (a persistent `initialized` buffer, so a
// resumed run never re-initialises), and applies one function of ste.h.
//
// Names (QuantizerSpec::name) and options, with defaults:
//   sign                    clipped-STE sign, no scale (BNN; BiViT/BiBERT q, k, v)
//   sign_approx             sign with Bi-Real's ApproxSign gradient
//   bool                    1{x > 0} with clipped STE (BiBERT Bool on softmax-free attention scores)
//   rsign                   learnable per-channel shift, then sign_approx (ReActNet)
//   xnor                    weights: detached per-row mean|W| · sign(W), clipped STE (XNOR-Net, ReActNet)
//   bwn                     weights: mean|W| · sign(W − mean W), per tensor, identity STE (BiT, GSB)
//   row_centred             weights: detached per-row mean|W| · sign(W − row mean), clipped STE (BiBERT)
//   pws                     weights: learnable per-row scale · sign(W − row mean) (BiViT PWS)
//   elastic_signed          learnable per-channel shift, α·sign(x); gsb_gradient = 0 (BiT) or 1 (GSB)
//   elastic_unsigned        learnable per-channel shift, α·round(clamp(x/α, 0, 1)) (BiT)
//   lsq                     bits = 8, signed = 1, per_channel = 0, zero_point = 0 (LSQ / LSQ+)
//   twn                     per_row = 0 (TWN) or 1 (TerViT channel-wise)
//   sab                     beta = 0.25 (BiViT softmax-aware attention binarization)
//   bivit_act               per-channel (per-head) learnable α and zero point, 1 bit (Bi-ViT ActBi)
//   gsb_value, gsb_attention  three-group superposition (GSB)
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "train/deit.h"

namespace bitvit::quant {

struct QuantizerSpec {
    std::string name;
    std::map<std::string, double> options;
};

// Builds the quantizer for a site. Throws std::invalid_argument naming the quantizer for an unknown
// name, an unknown or out-of-range option, or a site kind the quantizer cannot serve (a weight
// quantizer on an activation, say).
SiteTransform make_quantizer(const QuantizerSpec & spec, const SiteInfo & site);
std::vector<std::string> quantizer_names();

// How a quantizer's output is stored and multiplied at deployment: `bits` per value, and `groups`
// superposed binary planes (GSB: 3). Full precision is {32, 1}.
struct Precision {
    int bits = 32;
    int groups = 1;
};

// What a deployed model needs of an activation quantizer (docs/format.md): its parameters as the
// forward pass uses them (after clamps and rounding) and its resolved options. Weight quantizers
// deploy through their output instead (see export.h).
struct Deployed {
    std::map<std::string, torch::Tensor> tensors;  // 1-D float tensors
    std::map<std::string, double> options;
};

// Base of every quantizer: calls init_from() once, on the first tensor it sees, then quantize().
class QuantizerImpl : public SiteTransformImpl {
  public:
    torch::Tensor forward(const torch::Tensor & x) override;
    bool initialized() const { return initialized_.item<float>() != 0.0f; }
    virtual Precision precision() const { return {1, 1}; }
    virtual Deployed deployed() const { return {}; }
    // The registry name it was made from ("pws", "lsq", ...).
    const std::string & quantizer_name() const { return name_; }

  protected:
    QuantizerImpl();
    virtual void init_from(const torch::Tensor & x) {}
    virtual torch::Tensor quantize(const torch::Tensor & x) = 0;

  private:
    friend SiteTransform make_quantizer(const QuantizerSpec & spec, const SiteInfo & site);
    torch::Tensor initialized_;  // [1], persistent: 0 until the first batch has initialised the scales
    std::string name_;
};

// The precision a site's transform gives (full precision when none is installed).
Precision precision_of(const SiteTransform & transform);

// Views a per-channel parameter [C] so it broadcasts against x at `site`: [C, 1, …] for weights,
// [C] over the last dimension for token activations, [1, C, 1, 1] for per-head tensors.
torch::Tensor per_channel(const torch::Tensor & p, const SiteInfo & site, const torch::Tensor & x);

}  // namespace bitvit::quant
