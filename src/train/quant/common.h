// What every training quantizer shares: the project's one sign convention, the straight-through
// pattern, LSQ's gradient-scaling helpers, per-channel broadcasting, and the module base class with
// its first-batch initialisation. The quantizers themselves live one family per file (binary.h,
// bit.h, lsq.h, tervit.h, bivit.h, bi-vit.h, gsb.h), each described by its row of the quantizer
// table (src/spec/quantizers.h) and its section of docs/methods.md.
#pragma once

#include <torch/torch.h>

#include <map>
#include <set>
#include <string>

#include "spec/quantizers.h"
#include "train/deit.h"

namespace bitvit::quant {

using spec::Precision;

// The project's one binarization convention, shared with the runtime's bit packing
// (runtime/kernels/bgemm.h): −1 where x < 0, +1 elsewhere — so sign(0) = +1 (torch::sign gives 0).
torch::Tensor sign_pm1(const torch::Tensor & x);

// The straight-through pattern: forward `value` exactly, backward the gradient of `surrogate`
// (value.detach() + (surrogate − surrogate.detach())). Every STE here is written this way, because the
// common form x + (q − x).detach() rounds: its forward value is q only up to an ulp, and a deployed
// model that computes q exactly would then disagree wherever a later sign() sees that ulp (an
// attention output of exactly 0, say).
torch::Tensor straight_through(const torch::Tensor & value, const torch::Tensor & surrogate);

// Forward value x, gradient multiplied by `scale` (LSQ's grad_scale, docs/methods.md §3).
torch::Tensor grad_scale(const torch::Tensor & x, double scale);
// Forward round(x) (ties to even), gradient identity (LSQ's round_pass).
torch::Tensor round_pass(const torch::Tensor & x);

// y = (snap(clamp(x / s + z, lo, hi)) − z) · s with the identity (straight-through) gradient past
// snap — LSQ's round (lsq.h) and Bi-ViT's ActBi sign (bi-vit.h) — as one pass forward and one
// backward. s and z broadcast against x (per tensor, per channel, per head); z may be undefined (no
// zero point). Gradients: x: 1{lo ≤ u ≤ hi} with u = x/s + z; s: (q − z) − 1{inside}·x/s;
// z: s·(1{inside} − 1), summed to the shapes of s and z. Values equal the op-by-op chain's bit for bit.
enum class Snap { round, sign };
torch::Tensor clamp_snap_scale(const torch::Tensor & x, const torch::Tensor & s, const torch::Tensor & z, double lo, double hi,
                               Snap snap);

// A boolean mask as 0/1 values of `like`'s dtype.
torch::Tensor as_float(const torch::Tensor & mask, const torch::Tensor & like);
// Per output row of a weight [out, …] (over every other dimension), shaped [out, 1, …] to broadcast.
torch::Tensor row_mean(const torch::Tensor & w);
torch::Tensor row_mean_abs(const torch::Tensor & w);

// Views a per-channel parameter [C] so it broadcasts against x at `site`: [C, 1, …] for weights,
// [C] over the last dimension for token activations, [1, C, 1, 1] for per-head tensors.
torch::Tensor per_channel(const torch::Tensor & p, const SiteInfo & site, const torch::Tensor & x);

// What a deployed model needs of an activation quantizer (docs/format.md): its parameters as the
// forward pass uses them (after clamps and rounding) and its resolved options, named as in the
// table's deployed_params / deployed_options. Weight quantizers deploy through their output instead.
struct Deployed {
    std::map<std::string, torch::Tensor> tensors;  // 1-D float tensors
    std::map<std::string, double> options;
};

// A recipe's options for one quantizer, checked against its table row: unknown names, values out
// of range and fractional values of integer options throw std::invalid_argument naming both.
class Options {
  public:
    Options(const spec::QuantizerRow & row, const std::map<std::string, double> & given);
    double get(const std::string & key) const;  // the given value or the table's default
    bool flag(const std::string & key) const { return get(key) != 0; }

  private:
    std::map<std::string, double> values_;
};

// Base of every quantizer: calls init_from() once, on the first tensor it sees, then quantize().
class QuantizerImpl : public SiteTransformImpl {
  public:
    explicit QuantizerImpl(const spec::QuantizerRow & row);
    torch::Tensor forward(const torch::Tensor & x) override;
    bool initialized() const { return initialized_.item<float>() != 0.0f; }
    virtual Precision precision() const { return row_->precision; }
    virtual Deployed deployed() const { return {}; }
    const spec::QuantizerRow & row() const { return *row_; }
    // The table name it was made from ("pws", "lsq", ...).
    const char * quantizer_name() const { return row_->name; }

  protected:
    virtual void init_from(const torch::Tensor & x) {}
    virtual torch::Tensor quantize(const torch::Tensor & x) = 0;

  private:
    torch::Tensor initialized_;  // [1], persistent: 0 until the first batch has initialised the scales
    const spec::QuantizerRow * row_;
};

// The code scale of a weight whose rows are ±s_row (or 0): s_row = max |row|, shape [out].
torch::Tensor row_code_scale(const torch::Tensor & q);

}  // namespace bitvit::quant
