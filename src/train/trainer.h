// The training loop: AdamW/Adam with per-step cosine schedule and linear warm-up, label smoothing,
// gradient clipping, per-epoch evaluation, JSONL metrics, atomic per-epoch checkpoints, exact resume,
// and a hard stop (with the last good checkpoint kept) on a non-finite loss.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>

#include "checkpoint.h"
#include "config.h"
#include "data/image-dataset.h"
#include "deit.h"
#include "distributed.h"
#include "loader.h"

namespace bitvit {

// Thrown when the loss, gradient norm or weights become NaN or Inf: the message names the epoch and
// step, and the run directory still holds the checkpoint of the last completed epoch.
class NonFiniteError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

struct EvalResult {
    int64_t count = 0;
    double loss = 0.0;      // mean cross-entropy (no smoothing)
    double accuracy = 0.0;  // top-1, in [0, 1]
    std::vector<int64_t> per_class_count;
    std::vector<double> per_class_accuracy;
};

// With a process group, each rank scores its contiguous share of `data` and every rank returns the
// totals (the counts are exact; the mean loss differs from one process's only in summation order).
EvalResult evaluate(VisionModel & model, const data::ImageDataset & data, const Preprocess & pre, int64_t batch_size,
                    ProcessGroup * group = nullptr);

// Sets LibTorch's intra-op threads and OpenBLAS's pool to `threads` (0 = all cores).
void set_compute_threads(int64_t threads);

// Keeps freed memory in this process's heap instead of returning it to the OS, so that the buffers
// every training step frees and allocates again are not page-faulted in anew each step.
void retain_freed_memory();

// The preprocessing a config asks for (augmentation applies to training batches only).
Preprocess make_preprocess(const DataSection & data);

// The train and test splits a config names, with its subsets applied.
struct TrainTestData {
    data::ImageDataset train, test;
};
TrainTestData load_train_test(const TrainConfig & config);

struct EpochMetrics {
    std::string stage;
    int64_t epoch = 0;  // 1-based: the epoch just completed
    int64_t step = 0;
    double lr = 0.0, train_loss = 0.0, train_acc = 0.0, test_loss = 0.0, test_acc = 0.0;
    double images_per_sec = 0.0, seconds = 0.0;
};

// An exclusive lock on a run directory (flock on DIR/.lock), held while a Trainer lives, so two
// processes never train into the same directory and overwrite each other's checkpoints.
class RunLock {
  public:
    RunLock() = default;
    explicit RunLock(const std::string & run_dir);  // throws CheckpointError if another process holds it
    ~RunLock();
    RunLock(RunLock && other) noexcept;
    RunLock & operator=(RunLock && other) noexcept;
    // For a run that failed to start: releases the lock and removes the directory again if this lock
    // created it and it holds nothing but the lock file.
    void abandon();

  private:
    int fd_ = -1;
    std::string dir_;
    bool created_ = false;
};

// Set by SIGINT while a Trainer runs fit(): training stops at the next step boundary, writes a
// checkpoint of the part-epoch, and fit() returns with interrupted() true. A second SIGINT ends the
// process at once.
bool interrupted();

using DataLoaderFn = std::function<TrainTestData(const TrainConfig &)>;

// Checks that need no data: every stage's model builds (patterns, quantizers), every init checkpoint
// and teacher is readable and expects this recipe's normalisation — and, when `shape` is given, was
// trained on data of that shape. Throws ConfigError naming the stage.
void validate_stage_sources(const TrainConfig & config, const DataShape * shape);

// With a ProcessGroup, a Trainer is one rank of data-parallel training: train.data_parallel must be
// the group's size, each rank trains on its shard of every batch, and only rank 0 touches the run
// directory (lock, config, metrics, checkpoints) and prints; the others read its checkpoint to resume.
class Trainer {
  public:
    // A new run writing into run_dir (created; must not already hold a checkpoint).
    Trainer(TrainConfig config, std::string run_dir, TrainTestData data, ProcessGroup * group = nullptr);
    // The same, checking first what needs no data — the run directory (locked, not already a run),
    // every stage's quantizers, init checkpoints and teachers — so a mistake is reported before the
    // data set is read, and a failed start leaves no directory behind.
    static std::unique_ptr<Trainer> start(TrainConfig config, const std::string & run_dir, const DataLoaderFn & load_data,
                                          ProcessGroup * group = nullptr);
    // Continues the run in run_dir from its checkpoint (locked before it is read). `overrides` apply
    // on top of its stored config; those that would change what the run trains (model, data,
    // schedule, quantizers) are refused unless allow_inexact, since the resumed run would no longer
    // equal an uninterrupted one. A run resumes on as many ranks as it was started on.
    static std::unique_ptr<Trainer> resume(const std::string & run_dir, const std::vector<std::string> & overrides,
                                           const DataLoaderFn & load_data, bool allow_inexact = false,
                                           ProcessGroup * group = nullptr);

    // Trains until config.train.epochs (or until `stop_after_epoch` epochs are complete, when >= 0),
    // checkpointing after every epoch. Returns the metrics of the epochs it ran.
    std::vector<EpochMetrics> fit(int64_t stop_after_epoch = -1);
    // The test-set evaluation of the last epoch fit() completed (count 0 if it completed none).
    const EvalResult & last_eval() const { return last_eval_; }
    // Whether the last fit() stopped early for Ctrl-C (on any rank), its part-epoch checkpointed.
    bool was_interrupted() const { return interrupted_; }

    VisionModel & model() { return model_; }
    const TrainConfig & config() const { return state_.config; }
    int64_t epochs_done() const { return state_.epoch; }
    std::string checkpoint_path() const;
    const TrainTestData & data() const { return data_; }

  private:
    Trainer(CheckpointState state, std::string run_dir, RunLock lock, TrainTestData data, bool resuming, ProcessGroup * group);
    // Rank 0, or the only process: the one that writes the run directory and prints.
    bool writes() const { return !group_ || group_->rank() == 0; }
    // Whether Ctrl-C reached any rank (every rank must call it at the same point).
    bool agreed_interrupt();
    // Overwrites every rank's model with rank 0's parameters and buffers.
    void broadcast_model();
    // Before the first step of a stage on several ranks: rank 0 runs the whole batch `b` once so
    // quantizers that initialise on their first input see what one process would, then broadcasts.
    void initialise_on_whole_batch(const BatchLoader & loader, int64_t b);
    void setup(bool resuming);
    // Checks that need no data: every stage's model builds, init checkpoints and teachers exist and
    // expect this data's normalisation and shape (when known).
    void validate_stages(const DataShape & shape) const;
    // Stops with NonFiniteError on a non-finite loss, saying whether the inputs or the training diverged.
    [[noreturn]] void fail_non_finite(double loss, const Batch & batch) const;
    // Writes a checkpoint of the epoch in progress and its running sums (Ctrl-C).
    void save_partial(const CheckpointState::PartialEpoch & partial);
    // Builds the model, optimiser and teacher of stage `index`; when resuming, loads them from the
    // run's checkpoint, otherwise starts from the stage's init.
    void enter_stage(size_t index, bool resuming);
    EpochMetrics train_epoch();
    struct StepResult {
        double loss = 0.0;                  // the whole batch's mean loss, over every rank
        int64_t correct = 0, images = 0;    // over every rank
        bool interrupted = false;           // Ctrl-C reached some rank: every rank stops here
    };
    // One optimiser step on this rank's shard of a batch, its gradients averaged over the ranks.
    StepResult train_step(const Batch & batch);
    void check_weights_finite(const std::string & when) const;
    const StageSection & stage() const { return state_.config.stages.at(static_cast<size_t>(state_.stage)); }

    CheckpointState state_;
    std::string run_dir_;
    RunLock lock_;
    TrainTestData data_;
    Preprocess pre_;
    VisionModel model_{nullptr};
    VisionModel teacher_{nullptr};  // none without distillation
    ProcessGroup * group_ = nullptr;
    bool pending_init_ = false;  // several ranks, the stage's first batch not yet run whole on rank 0
    std::unique_ptr<torch::optim::Optimizer> optimizer_;
    std::unique_ptr<GradientAverager> averager_;  // several ranks: the stage's model's gradient all-reduce
    EvalResult last_eval_;
    bool interrupted_ = false;
};

}  // namespace bitvit
