// Pretrained models in and out: timm / DeiT state dicts (safetensors, or torch.save .pth files) to a
// bitvit checkpoint, with timm's adaptations for another input size, channel count or class count;
// and a bitvit checkpoint back to timm-named safetensors. docs/training.md ("Importing") documents
// the name mapping and each adaptation.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "spec/architecture.h"
#include "layers.h"

namespace bitvit {

class ImportError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// A file's tensors by timm name, F32, contiguous, in the file's order ("module." prefixes removed).
// Reads safetensors (every offset, size and dtype validated) or a torch.save zip archive (pickle read
// by format::read_torch_state_dict: data only, nothing executed; every view checked against its
// storage record). Throws ImportError naming the file and, where it applies, the tensor. `found_at`
// receives where in a .pth the state dict was ("" for the top level, "model", …).
torch::OrderedDict<std::string, torch::Tensor> read_state_dict(const std::string & path, std::string * found_at = nullptr);

struct ImportOptions {
    std::string model;           // a registered architecture the file must match; "" = inferred from shapes
    int64_t num_heads = 0;       // for an unregistered width (heads are not in the weights)
    int64_t img_size = 0;        // adapt to another input size (position embedding resampled); 0 = the file's
    int64_t window_size = 0;     // Swin: adapt to another window (relative position bias tables resampled); 0 = the file's
    int64_t in_chans = 0;        // adapt to another channel count (timm's adapt_input_conv); 0 = the file's
    int64_t num_classes = 0;     // another class count: the classifier re-initialised; 0 = the file's
    bool drop_distillation = false;          // a distilled DeiT imported as a plain one
    std::vector<std::string> allow_missing;  // name prefixes that may be absent ("head"): freshly initialised
    std::vector<double> mean, std;           // input normalisation; default ImageNet's (1 channel: its average)
    uint64_t seed = 0;                       // the initialisation of whatever is re-initialised
};

struct ImportSummary {
    VisionModel model{nullptr};            // the model written (DeiT or Swin)
    std::vector<std::string> adaptations;  // one line each, for the user
    std::string found_at;                  // where in a .pth the state dict was ("model", …)
};

// Reads `path`, infers or checks the architecture, adapts, and writes a bitvit checkpoint `out`
// (atomically) usable as a stage's init, a teacher, or by eval/export/info. Throws ImportError.
ImportSummary import_checkpoint(const std::string & path, const ImportOptions & options, const std::string & out);

// The `bitvit train --set` overrides that make a recipe build the imported model and read data the way
// it was normalised ("model.embed_dim=48", "data.mean=[0.286]", …): with them and --fp-checkpoint,
// every staged recipe starts from and distils from the import.
std::vector<std::string> train_overrides(const std::string & imported_checkpoint);

// The model of a bitvit checkpoint as timm-named safetensors: the latent FP weights under timm's
// names, the quantizers' and block variants' own tensors under "bitvit." + their bitvit name, the
// resolved recipe in the metadata ("bitvit.recipe"). Written atomically. Returns the tensor count.
size_t export_timm(const std::string & checkpoint, const std::string & out);

}  // namespace bitvit
