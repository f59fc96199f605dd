// Checkpoints: one LibTorch archive holding everything a run needs to continue exactly where it stopped
// (model, optimiser, step, epoch, RNG) and everything a user needs to use the model without the recipe
// (the resolved config, the architecture's data-dependent sizes, the class names). Written atomically:
// a killed writer leaves the previous checkpoint intact.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

#include "config.h"
#include "deit.h"
#include "swin.h"

namespace bitvit {

class CheckpointError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// The parts of the architecture that come from the data set rather than the recipe.
struct DataShape {
    int64_t num_classes = 0, in_chans = 0, img_size = 0;
};

// True when the recipe's model is a Swin (model.name is a registered Swin architecture).
bool is_swin(const ModelSection & model);

// The configuration a run trains: the recipe's named architecture with its overrides, sized for the
// data set (a customised size gets a name of its own). Throws std::invalid_argument if the data
// cannot feed the model, or for an override the architecture does not have.
DeitConfig resolve_model_config(const ModelSection & model, const DataShape & shape);
SwinConfig resolve_swin_config(const ModelSection & model, const DataShape & shape);

// The data shape the named architecture was registered for (classes, channels, image size; the
// model.img_size override applied): what a recipe is checked against before its data is read.
DataShape registered_shape(const ModelSection & model);

// Throws std::invalid_argument naming the model when training it could not fit in this machine's
// physical memory (parameters, gradients and Adam's moments), before anything is allocated.
void check_fits_in_memory(const std::string & name, int64_t parameter_count);

// The full-precision model of a recipe's architecture with the given block variant.
VisionModel build_model(const ModelSection & model, const DataShape & shape, const BlockVariant & variant);

// The model of one stage of a recipe: the architecture with that stage's quantizers installed.
// Throws std::invalid_argument naming the stage for a pattern that matches no site, an unknown
// quantizer, or a quantizer that cannot serve a site.
VisionModel build_stage_model(const TrainConfig & config, const DataShape & shape, size_t stage);

// The DeiT inside `model`, where DeiT's own members are needed (its blocks, pos_embed); throws
// std::invalid_argument naming `what` and the model otherwise.
Deit as_deit(const VisionModel & model, const std::string & what);

// What copy_named_tensors could not do: names of `dst` absent from the source (and not allowed to
// be), "name [source shape] (expected [shape])" for each shape mismatch, and source names `dst` lacks.
struct TensorCopyReport {
    std::vector<std::string> missing, mismatched, unused;
    bool clean() const { return missing.empty() && mismatched.empty() && unused.empty(); }
};

// Copies every parameter and buffer of `dst` from the tensor of the same name in `source`; names for
// which may_be_absent() is true keep dst's values when `source` lacks them. Reports every offender
// at once instead of stopping at the first, and copies everything that fits.
TensorCopyReport copy_named_tensors(const torch::OrderedDict<std::string, torch::Tensor> & source, torch::nn::Module & dst,
                                    const std::function<bool(const std::string &)> & may_be_absent);

// Copies every parameter and buffer of `dst` from the same name in `src`. Method tensors that `src`
// lacks (is_method_tensor: quantizer state, variant parameters) keep their initial values (quantizers
// initialise on their first batch); any other missing or mis-shaped tensor throws
// std::invalid_argument naming it and `what` (where src came from).
void copy_matching_weights(torch::nn::Module & src, torch::nn::Module & dst, const std::string & what);

struct CheckpointState {
    TrainConfig config;
    DataShape shape;
    std::vector<std::string> class_names;
    int64_t epoch = 0;        // epochs completed, over all stages
    int64_t stage = 0;        // index of the stage being trained (or just finished)
    int64_t stage_epoch = 0;  // epochs completed within that stage
    int64_t step = 0;         // optimiser steps taken within that stage
    double best_test_acc = 0.0;
    // A run stopped part-way through an epoch (Ctrl-C): the batches of epoch `epoch + 1` done so far,
    // and that epoch's running sums, so the resumed epoch trains the rest and reports the same metrics.
    struct PartialEpoch {
        int64_t batches = 0, correct = 0, seen = 0;
        double loss_sum = 0.0, seconds = 0.0;
    } partial;
};

// Writes `path` through a temporary file in the same directory and a rename, after fsync.
void save_checkpoint(const std::string & path, const CheckpointState & state, torch::nn::Module & model,
                     torch::optim::Optimizer * optimizer);

// Reads the state and the model weights (and the optimiser state when `optimizer` is non-null). The
// model must have been built from resolve_model_config(state.config.model, state.shape); use
// read_checkpoint_state() first to learn it. Errors name the file and what is missing or mismatched.
CheckpointState read_checkpoint_state(const std::string & path);
// With restore_rng, LibTorch's CPU generator is set to the state saved with the checkpoint (resume).
void load_checkpoint_weights(const std::string & path, torch::nn::Module & model, torch::optim::Optimizer * optimizer,
                             bool restore_rng = false);

// Convenience for eval/info/teachers: the state and its stage's model with the checkpoint's weights,
// in eval mode.
struct LoadedModel {
    CheckpointState state;
    VisionModel model{nullptr};
};
LoadedModel load_model(const std::string & path);

// Writes bytes to `path` atomically (temp file, fsync, rename); for small text files of the run.
void write_file_atomic(const std::string & path, const std::string & bytes);

}  // namespace bitvit
