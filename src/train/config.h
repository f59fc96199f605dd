// A training run's configuration: read from a recipe file (TOML), overridden by `--set section.key=value`
// flags, validated in full before any work starts, and stored verbatim in every checkpoint so that a
// run can be resumed, evaluated or inspected without the recipe file at hand.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "spec/architecture.h"

namespace bitvit {

using spec::BlockVariant;

class ConfigError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

struct ModelSection {
    std::string name = "deit_micro_patch4_28";  // see deit_config_names() and swin_config_names()
    double drop_path = 0.0;                       // overrides the architecture's stochastic depth
    // Optional architecture overrides (0 = keep the named architecture's value).
    int64_t embed_dim = 0, depth = 0, num_heads = 0;
    int64_t img_size = 0, patch_size = 0;  // e.g. an imported timm model's (bitvit import)
    double mlp_ratio = 0.0;
    // Swin only (empty / 0 = the named architecture's): blocks and heads per stage, window size.
    // embed_dim, img_size, patch_size and mlp_ratio above apply to Swin too; depth and num_heads do not.
    std::vector<int64_t> depths, stage_heads;
    int64_t window_size = 0;
    // Block variant of a full-precision model; a stage's [stage.model] overrides it.
    BlockVariant variant;
};

struct DataSection {
    std::string name = "fashion-mnist";  // fashion-mnist, mnist, cifar10, cifar100, imagefolder
    std::string root;                    // "" = the data set's default location
    int64_t image_size = 0;              // imagefolder resize target; 0 = the model's img_size
    // imagefolder: 0 = resize whole images; in (0, 1]: timm's eval transform, shorter side to
    // image_size / crop_pct (bicubic), centre crop (0.875: DeiT's pretrained configs; 0.9: Swin's)
    double crop_pct = 0.0;
    int64_t train_subset = 0;            // 0 = all; N = stratified, seeded subset of N images
    int64_t test_subset = 0;             // 0 = all; N = stratified subset of the test split (quick checks)
    int64_t crop_padding = 2;            // random crop after zero padding by this many pixels; 0 = off
    double resized_crop_scale = 0.0;     // > 0: RandomResizedCrop (area in [this, 1]) instead of the padded crop
    bool hflip = true;                   // random horizontal flip
    double random_erase = 0.0;           // probability of erasing one random rectangle (loader.h)
    std::vector<double> mean = {0.2860};  // per channel, on [0, 1] pixels (Fashion-MNIST's statistics)
    std::vector<double> std = {0.3530};
    int64_t prefetch = 4;                // batches prepared ahead on the loader thread
};

struct OptimSection {
    std::string optimizer = "adamw";  // adamw, adam
    double lr = 1e-3;                  // peak learning rate, reached after warm-up
    double min_lr = 1e-5;              // cosine floor
    double warmup_lr = 1e-6;           // learning rate at step 0
    double warmup_epochs = 1.0;        // linear warm-up length (fractional epochs allowed)
    double weight_decay = 0.05;        // decoupled (AdamW) or L2 (Adam); never on norms, biases, tokens
    double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
    double label_smoothing = 0.1;
    double clip_grad = 1.0;  // max global gradient norm; 0 = off
};

struct TrainSection {
    int64_t epochs = 30;
    int64_t batch_size = 128;
    int64_t eval_batch_size = 500;
    uint64_t seed = 0;
    // LibTorch intra-op threads; 0 = all cores. Default 1: on the 2-core machines here a second
    // OpenMP thread contends with OpenBLAS's own threads and slows small-model training down.
    int64_t threads = 1;
    int64_t log_every = 50;       // steps between log lines when stderr is not a terminal
    // Data-parallel ranks (processes, c10d over Gloo): every batch is split into this many equal
    // shards whose gradients are averaged before each rank's identical optimiser step. `bitvit train`
    // starts that many local ranks unless a launcher already set RANK/WORLD_SIZE (docs/training.md).
    int64_t data_parallel = 1;
    // Multiplies every stage's epochs (rounded, at least 1) when the recipe is read — and its warm-up
    // by the same factor, so the schedule keeps its shape — then resets to 1 in the stored config:
    // quick profiles of long recipes.
    double epoch_scale = 1.0;
    // The full-precision checkpoint that stage inits and teachers name as "fp" (CLI --fp-checkpoint).
    std::string fp_checkpoint = "teachers/deit_micro_patch4_28-fp.pt";  // the shipped teacher (teachers/README.md)
};

// One quantizer placed at the sites a pattern names. A pattern is either a block-local site
// ("attn.qkv.weight": that site in every block) or a full site name ("blocks.0.attn.q",
// "head.weight"); a full name overrides a block-local pattern. Quantizer "fp" means none.
struct QuantizerAssignment {
    std::string pattern;
    std::string quantizer;
    std::map<std::string, double> options;
};

struct DistillSection {
    std::string teacher;        // checkpoint of the frozen teacher ("fp" = train.fp_checkpoint)
    std::string kind = "none";  // none, distribution, hard, soft (see docs/quantization.md)
    double alpha = 0.5;         // weight of the teacher term in hard / soft
    double tau = 1.0;           // temperature of distribution / soft
    // Feature distillation, added to the logit loss (weights; 0 = off). Teacher and student must
    // have the same depth; see docs/quantization.md for each definition.
    double attn_mse = 0.0;      // Σ_layers MSE(student scores, teacher scores) (BiT)
    double hidden_mse = 0.0;    // Σ_layers MSE(student block output, teacher block output)
    double dmd = 0.0;           // BiBERT direction-matching distillation on q, k, v
    double rank = 0.0;          // ranking-aware attention distillation (Bi-ViT)
    int64_t rank_top_k = 16;    // teacher's top-K keys per query whose order is distilled
    double rank_tau = 1.0;      // temperature of the pairwise logistic ranking loss

    bool uses_features() const { return attn_mse > 0 || hidden_mse > 0 || dmd > 0 || rank > 0; }
    bool uses_teacher() const { return kind != "none" || uses_features(); }
};

// One training stage: a quantizer map, a length, an optimiser, a start point and distillation.
struct StageSection {
    std::string name = "main";
    int64_t epochs = 0;
    // "scratch" (random init), "previous" (the previous stage's weights; the first stage: scratch),
    // "fp" (train.fp_checkpoint), or a checkpoint path whose model weights start the stage
    // (quantizer parameters that the checkpoint lacks are initialised on the first batch).
    std::string init = "previous";
    OptimSection optim;     // the top-level [optim], overridden by [stage.optim]
    BlockVariant variant;   // the top-level [model] variant, overridden by [stage.model]
    std::vector<QuantizerAssignment> quantizers;
    DistillSection distill;
};

struct TrainConfig {
    ModelSection model;
    DataSection data;
    OptimSection optim;
    TrainSection train;
    // Never empty after parsing: a recipe without [[stage]] tables is one stage "main" of
    // train.epochs epochs with the top-level [optim] and no quantizers.
    std::vector<StageSection> stages;
    bool staged = false;  // the recipe has [[stage]] tables (otherwise stages holds the implicit one)

    int64_t total_epochs() const;
    // A checkpoint reference of a stage ("fp" -> train.fp_checkpoint, anything else unchanged).
    std::string checkpoint_ref(const std::string & ref) const { return ref == "fp" ? train.fp_checkpoint : ref; }

    // TOML text holding every field, so the config can round-trip through a checkpoint.
    std::string to_toml() const;
};

// Parses TOML text and applies overrides ("optim.lr=5e-4", "data.name=\"mnist\"" or data.name=mnist:
// a value that does not parse as TOML is taken as a string). Unknown sections or keys, wrong value
// types and out-of-range values throw ConfigError naming the key and `origin` (a file name or
// "checkpoint").
TrainConfig parse_config(const std::string & toml_text, const std::string & origin,
                         const std::vector<std::string> & overrides = {});

// Reads a recipe file; throws ConfigError naming the file if it cannot be read or parsed.
TrainConfig load_config_file(const std::string & path, const std::vector<std::string> & overrides = {});

}  // namespace bitvit
