#include "trainer.h"

#include "distill.h"
#include "optimizer.h"
#include "progress.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <malloc.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>

namespace bitvit {
namespace fs = std::filesystem;
namespace F = torch::nn::functional;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

DataShape shape_of(const data::ImageDataset & d) {
    if (d.height != d.width) {
        throw std::invalid_argument("images must be square, got " + std::to_string(d.height) + "×" +
                                    std::to_string(d.width));
    }
    return {d.num_classes(), d.channels, d.height};
}

// Keeps only metric lines of epochs <= `epochs_done`, so a resumed run does not duplicate the
// epoch that was cut off between checkpoint and log.
void trim_metrics(const std::string & path, int64_t epochs_done) {
    std::ifstream in(path);
    if (!in) return;
    std::string kept, line;
    while (std::getline(in, line)) {
        try {
            if (nlohmann::json::parse(line).at("epoch").get<int64_t>() <= epochs_done) kept += line + "\n";
        } catch (const std::exception &) {
            // A torn last line from a killed run: drop it.
        }
    }
    write_file_atomic(path, kept);
}

// Appends one epoch's line to metrics.jsonl and flushes it to disk.
void append_metrics_line(const std::string & path, const EpochMetrics & m) {
    const nlohmann::json line = {{"epoch", m.epoch},         {"stage", m.stage},           {"step", m.step},
                                 {"lr", m.lr},               {"train_loss", m.train_loss}, {"train_acc", m.train_acc},
                                 {"test_loss", m.test_loss}, {"test_acc", m.test_acc},     {"images_per_sec", m.images_per_sec},
                                 {"seconds", m.seconds}};
    const std::string text = line.dump() + "\n";
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) throw CheckpointError(path + ": cannot append the epoch's metrics (" + std::strerror(errno) + ")");
    const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
    ::close(fd);
    if (!ok) throw CheckpointError(path + ": cannot append the epoch's metrics (" + std::strerror(errno) + ")");
}

}  // namespace

void set_compute_threads(int64_t threads) {
    const auto n = static_cast<int>(threads > 0 ? threads : std::max(1u, std::thread::hardware_concurrency()));
    torch::set_num_threads(n);
    // OpenBLAS (which LibTorch calls for GEMM on Debian) keeps its own pool, sized to all cores and
    // spinning between calls; left alone it takes the cores the OpenMP threads or the loader need.
    using SetThreadsFn = void (*)(int);
    if (auto fn = reinterpret_cast<SetThreadsFn>(::dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) fn(n);
}

void retain_freed_memory() {
    // A training step frees and allocates the same activation buffers every step. glibc serves
    // blocks above its (adaptive) mmap threshold by mmap and unmaps them on free, so each step paid
    // for every page again (page faults and zeroing: 13 % of a micro DeiT's FP step in perf). A
    // fixed 1 GiB threshold keeps them in the heap, and a trim threshold as high stops the heap's
    // top being returned between steps: the FP step runs 17 % faster (docs/results.md).
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

Preprocess make_preprocess(const DataSection & d) {
    Preprocess pre;
    pre.mean.assign(d.mean.begin(), d.mean.end());
    pre.std.assign(d.std.begin(), d.std.end());
    pre.crop_padding = d.crop_padding;
    pre.resized_crop_scale = d.resized_crop_scale;
    pre.hflip = d.hflip;
    pre.random_erase = d.random_erase;
    return pre;
}

TrainTestData load_train_test(const TrainConfig & config) {
    data::DatasetSpec spec;
    spec.name = config.data.name;
    spec.root = config.data.root;
    spec.image_size = config.data.image_size > 0 ? config.data.image_size : registered_shape(config.model).img_size;
    spec.channels = static_cast<int64_t>(config.data.mean.size());
    spec.crop_pct = config.data.crop_pct;
    TrainTestData out{data::load_dataset(spec, data::Split::train), data::load_dataset(spec, data::Split::test)};
    // Checked now, not when the first evaluation meets the test split after a whole epoch.
    if (out.test.channels != out.train.channels || out.test.height != out.train.height || out.test.width != out.train.width) {
        auto dims = [](const data::ImageDataset & d) {
            return std::to_string(d.channels) + "×" + std::to_string(d.height) + "×" + std::to_string(d.width);
        };
        throw data::DataError(out.test.origin + ": test images are " + dims(out.test) + " but the training images (" +
                              out.train.origin + ") are " + dims(out.train));
    }
    // Both splits must agree on the class list, or labels would mean different things.
    auto & names = out.train.num_classes() >= out.test.num_classes() ? out.train.class_names : out.test.class_names;
    out.train.class_names = names;
    out.test.class_names = names;
    if (config.data.train_subset > 0) {
        out.train = data::select(out.train, data::stratified_subset(out.train.labels, out.train.num_classes(),
                                                                    config.data.train_subset, config.train.seed));
    }
    // The test subset does not follow train.seed: runs of different seeds are scored on the same images,
    // the ones `bitvit eval --subset N` and `bitvit verify --subset N` draw.
    if (config.data.test_subset > 0) {
        out.test = data::select(out.test, data::stratified_subset(out.test.labels, out.test.num_classes(),
                                                                  config.data.test_subset, 0));
    }
    return out;
}

EvalResult evaluate(VisionModel & model, const data::ImageDataset & data, const Preprocess & pre, int64_t batch_size,
                    ProcessGroup * group) {
    torch::NoGradGuard no_grad;
    const bool was_training = model->is_training();
    model->eval();
    const int64_t rank = group ? group->rank() : 0, ranks = group ? group->world_size() : 1;
    const int64_t begin = data.size() * rank / ranks, end = data.size() * (rank + 1) / ranks;
    std::vector<int64_t> order;
    for (int64_t i = begin; i < end; ++i) order.push_back(i);
    BatchLoader loader(data, std::move(order), batch_size, false, pre, false, 0, 2);
    EvalResult r;
    r.per_class_count.assign(static_cast<size_t>(data.num_classes()), 0);
    std::vector<int64_t> correct(static_cast<size_t>(data.num_classes()), 0);
    double loss_sum = 0.0;
    while (auto batch = loader.next()) {
        auto logits = model->forward(batch->images);
        loss_sum += F::cross_entropy(logits, batch->labels, F::CrossEntropyFuncOptions().reduction(torch::kSum))
                        .item<double>();
        auto hit = (logits.argmax(1) == batch->labels);
        auto labels = batch->labels.accessor<int64_t, 1>();
        auto hits = hit.accessor<bool, 1>();
        for (int64_t j = 0; j < labels.size(0); ++j) {
            r.per_class_count[labels[j]] += 1;
            correct[labels[j]] += hits[j] ? 1 : 0;
        }
    }
    if (group) {  // every rank gets the totals: loss sum, then per class its count and hits
        std::vector<double> local = {loss_sum};
        for (size_t c = 0; c < correct.size(); ++c) local.insert(local.end(), {double(r.per_class_count[c]), double(correct[c])});
        const std::vector<double> total = group->sum(local);
        loss_sum = total[0];
        for (size_t c = 0; c < correct.size(); ++c) {
            r.per_class_count[c] = std::llround(total[1 + 2 * c]);
            correct[c] = std::llround(total[2 + 2 * c]);
        }
    }
    int64_t total_correct = 0;
    for (size_t c = 0; c < correct.size(); ++c) {
        total_correct += correct[c];
        r.count += r.per_class_count[c];
        r.per_class_accuracy.push_back(r.per_class_count[c] ? static_cast<double>(correct[c]) / r.per_class_count[c] : 0.0);
    }
    r.loss = r.count ? loss_sum / r.count : 0.0;
    r.accuracy = r.count ? static_cast<double>(total_correct) / r.count : 0.0;
    if (was_training) model->train();
    return r;
}

RunLock::RunLock(const std::string & run_dir) : dir_(run_dir) {
    std::error_code ec;
    created_ = !fs::exists(run_dir, ec);
    fs::create_directories(run_dir, ec);
    if (ec) throw CheckpointError(run_dir + ": cannot create the run directory (" + ec.message() + ")");
    const std::string path = (fs::path(run_dir) / ".lock").string();
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) throw CheckpointError(path + ": cannot open the run lock (" + std::strerror(errno) + ")");
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
        ::close(fd_);
        fd_ = -1;
        throw CheckpointError(run_dir + " is in use by another bitvit process (lock " + path + ")");
    }
}

RunLock::~RunLock() {
    if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

RunLock::RunLock(RunLock && other) noexcept : fd_(other.fd_), dir_(std::move(other.dir_)), created_(other.created_) {
    other.fd_ = -1;
}

RunLock & RunLock::operator=(RunLock && other) noexcept {
    if (this != &other) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = other.fd_;
        dir_ = std::move(other.dir_);
        created_ = other.created_;
        other.fd_ = -1;
    }
    return *this;
}

void RunLock::abandon() {
    if (fd_ < 0) return;
    ::close(fd_);
    fd_ = -1;
    if (!created_) return;
    std::error_code ec;
    for (const auto & entry : fs::directory_iterator(dir_, ec)) {
        if (entry.path().filename() != ".lock") return;  // something else is there: keep it
    }
    fs::remove_all(dir_, ec);
}

namespace {

std::atomic<bool> g_interrupt{false};

extern "C" void on_sigint(int) {
    g_interrupt.store(true);
    std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C stops at once
}

// Temporary files a killed writer left behind (format::temp_path_for: "<name>.tmp.<pid>").
void remove_stale_temp_files(const std::string & run_dir) {
    std::error_code ec;
    for (const auto & entry : fs::directory_iterator(run_dir, ec)) {
        const std::string name = entry.path().filename().string();
        if (name.find(".tmp.") != std::string::npos) fs::remove(entry.path(), ec);
    }
}

// The settings a resume may change without changing what is trained: where things are and how fast.
TrainConfig without_resumable_settings(TrainConfig c) {
    const TrainConfig defaults;
    c.train.threads = defaults.train.threads;
    c.train.log_every = defaults.train.log_every;
    c.train.eval_batch_size = defaults.train.eval_batch_size;
    c.data.prefetch = defaults.data.prefetch;
    c.data.root = defaults.data.root;
    return c;
}

}  // namespace

bool interrupted() { return g_interrupt.load(); }

namespace {

// Rank 0 (or the only process) owns the run directory; the other ranks take no lock.
RunLock lock_for(const std::string & run_dir, ProcessGroup * group) {
    return group && group->rank() != 0 ? RunLock() : RunLock(run_dir);
}

}  // namespace

Trainer::Trainer(TrainConfig config, std::string run_dir, TrainTestData data, ProcessGroup * group)
    : Trainer(CheckpointState{std::move(config)}, run_dir, lock_for(run_dir, group), std::move(data), false, group) {}

Trainer::Trainer(CheckpointState state, std::string run_dir, RunLock lock, TrainTestData data, bool resuming, ProcessGroup * group)
    : state_(std::move(state)), run_dir_(std::move(run_dir)), lock_(std::move(lock)), data_(std::move(data)), group_(group) {
    try {
        setup(resuming);
    } catch (...) {
        lock_.abandon();
        throw;
    }
}

void Trainer::setup(bool resuming) {
    const DataShape shape = shape_of(data_.train);
    if (resuming && (shape.num_classes != state_.shape.num_classes || shape.in_chans != state_.shape.in_chans ||
                     shape.img_size != state_.shape.img_size)) {
        throw CheckpointError(checkpoint_path() + ": the data set no longer matches the checkpoint's shape");
    }
    state_.shape = shape;
    state_.class_names = data_.train.class_names;
    pre_ = make_preprocess(state_.config.data);
    if (static_cast<int64_t>(pre_.mean.size()) != shape.in_chans) {
        throw ConfigError("data.mean has " + std::to_string(pre_.mean.size()) + " values but the images have " +
                          std::to_string(shape.in_chans) + " channels");
    }
    if (data_.train.size() < state_.config.train.batch_size) {
        throw ConfigError("train.batch_size " + std::to_string(state_.config.train.batch_size) +
                          " is larger than the training set (" + std::to_string(data_.train.size()) + " images)");
    }
    const int64_t ranks = group_ ? group_->world_size() : 1;
    if (state_.config.train.data_parallel != ranks) {
        throw ConfigError(resuming ? run_dir_ + " was trained on " + std::to_string(state_.config.train.data_parallel) +
                                         " rank(s) (train.data_parallel) and cannot continue on " + std::to_string(ranks) +
                                         ": resume it with --nproc " + std::to_string(state_.config.train.data_parallel) +
                                         " (or that many ranks under your launcher)"
                                   : "train.data_parallel = " + std::to_string(state_.config.train.data_parallel) + " asks for that many ranks but this is " +
                                         std::to_string(ranks) + ": run `bitvit train --nproc " +
                                         std::to_string(state_.config.train.data_parallel) + "`, or set train.data_parallel=" +
                                         std::to_string(ranks));
    }
    // threads = 0 (all cores) shares the host's cores among the ranks on it.
    const int64_t local_ranks = group_ ? group_->local_world_size() : 1;
    const int64_t threads = state_.config.train.threads;
    set_compute_threads(threads > 0 ? threads : std::max<int64_t>(1, std::thread::hardware_concurrency() / local_ranks));
    retain_freed_memory();
    torch::manual_seed(state_.config.train.seed);  // rank 0's weights are broadcast: the others' draws do not matter
    validate_stages(shape);
    if (!writes()) {
        enter_stage(static_cast<size_t>(state_.stage), resuming);
        return;
    }
    remove_stale_temp_files(run_dir_);
    if (resuming) {
        trim_metrics((fs::path(run_dir_) / "metrics.jsonl").string(), state_.epoch);
    } else {
        if (fs::exists(checkpoint_path())) {
            throw CheckpointError(run_dir_ + " already holds a run (checkpoint.pt); use --resume to continue it "
                                             "or choose another --out");
        }
        write_file_atomic((fs::path(run_dir_) / "config.toml").string(), state_.config.to_toml());
    }
    enter_stage(static_cast<size_t>(state_.stage), resuming);
}

std::unique_ptr<Trainer> Trainer::start(TrainConfig config, const std::string & run_dir, const DataLoaderFn & load_data,
                                        ProcessGroup * group) {
    RunLock lock = lock_for(run_dir, group);
    try {
        if ((!group || group->rank() == 0) && fs::exists(fs::path(run_dir) / "checkpoint.pt")) {
            throw CheckpointError(run_dir + " already holds a run (checkpoint.pt); use --resume " + run_dir +
                                  " to continue it or choose another --out");
        }
        validate_stage_sources(config, nullptr);  // before the data: its shape is not known yet
        TrainTestData data = load_data(config);
        return std::unique_ptr<Trainer>(new Trainer(CheckpointState{std::move(config)}, run_dir, std::move(lock), std::move(data), false, group));
    } catch (...) {
        lock.abandon();
        throw;
    }
}

namespace {

// What feature distillation pairs up, block by block: the family, per block the width, heads and
// tokens per attention (a window's for Swin). Teacher and student must agree on it.
std::vector<int64_t> feature_layout(const ModelSection & model, const DataShape & shape) {
    if (is_swin(model)) {
        const SwinConfig c = resolve_swin_config(model, shape);
        std::vector<int64_t> layout = {1, c.img_size, c.patch_size};
        for (int64_t i = 0; i < c.num_stages(); ++i) {
            for (int64_t j = 0; j < c.depths[i]; ++j) layout.insert(layout.end(), {c.stage_dim(i), c.num_heads[i], c.stage_window(i)});
        }
        return layout;
    }
    const DeitConfig c = resolve_model_config(model, shape);
    return {0, c.depth, c.embed_dim, c.num_heads, c.num_tokens()};
}

// A stage's init checkpoint or teacher: readable, and trained on this data's normalisation (and, when
// the data's shape is known, on its shape).
void check_stage_source(const TrainConfig & config, const StageSection & st, const std::string & ref, const char * role,
                        const DataShape * shape) {
    const std::string path = config.checkpoint_ref(ref);
    CheckpointState from;
    try {
        from = read_checkpoint_state(path);
    } catch (const CheckpointError & e) {
        throw ConfigError("stage '" + st.name + "': " + role + " " + e.what() +
                          (ref == "fp" ? " (train.fp_checkpoint; train the fp recipe first or pass --fp-checkpoint)" : ""));
    }
    if (shape && (from.shape.num_classes != shape->num_classes || from.shape.img_size != shape->img_size ||
                  from.shape.in_chans != shape->in_chans)) {
        throw ConfigError("stage '" + st.name + "': " + role + " " + path + " was trained on data of another shape");
    }
    if (from.config.data.mean != config.data.mean || from.config.data.std != config.data.std) {
        throw ConfigError("stage '" + st.name + "': " + role + " " + path + " expects other input normalisation (data.mean / data.std)");
    }
    if (role == std::string("teacher") && st.distill.uses_features()) {
        if (feature_layout(from.config.model, from.shape) != feature_layout(config.model, shape ? *shape : from.shape)) {
            throw ConfigError("stage '" + st.name + "': feature distillation needs a teacher of the student's depth, width, heads and tokens");
        }
    }
}

}  // namespace

void validate_stage_sources(const TrainConfig & config, const DataShape * shape) {
    DataShape guess = registered_shape(config.model);
    guess.in_chans = static_cast<int64_t>(config.data.mean.size());
    for (size_t i = 0; i < config.stages.size(); ++i) {
        const StageSection & st = config.stages[i];
        build_stage_model(config, shape ? *shape : guess, i);  // throws for bad patterns or quantizers
        if (st.init != "scratch" && st.init != "previous") check_stage_source(config, st, st.init, "init checkpoint", shape);
        if (st.distill.uses_teacher()) check_stage_source(config, st, st.distill.teacher, "teacher", shape);
    }
}

void Trainer::validate_stages(const DataShape & shape) const { validate_stage_sources(state_.config, &shape); }

void Trainer::enter_stage(size_t index, bool resuming) {
    const StageSection & st = state_.config.stages.at(index);
    VisionModel previous = model_;
    model_ = build_stage_model(state_.config, state_.shape, index);
    if (!resuming) {
        if (st.init == "previous" && previous) {
            copy_matching_weights(*previous, *model_, "the previous stage's model");
        } else if (st.init != "scratch" && st.init != "previous") {
            const std::string path = state_.config.checkpoint_ref(st.init);
            LoadedModel from = load_model(path);
            copy_matching_weights(*from.model, *model_, path);
        }
    }
    optimizer_ = make_optimizer(st.optim, *model_);
    if (resuming) load_checkpoint_weights(checkpoint_path(), *model_, optimizer_.get(), true);
    model_->set_capture(st.distill.uses_features());
    teacher_ = nullptr;
    if (st.distill.uses_teacher()) {
        teacher_ = load_model(state_.config.checkpoint_ref(st.distill.teacher)).model;
        for (auto & p : teacher_->parameters()) p.set_requires_grad(false);
        teacher_->set_capture(st.distill.uses_features());
    }
    averager_.reset();  // its hooks are on the previous stage's parameters
    if (group_) {
        broadcast_model();
        averager_ = std::make_unique<GradientAverager>(*group_, model_->parameters());
    }
    pending_init_ = group_ && group_->world_size() > 1;
}

void Trainer::broadcast_model() {
    std::vector<torch::Tensor> tensors = model_->parameters();
    for (const auto & b : model_->buffers()) tensors.push_back(b);
    group_->broadcast(tensors);
}

void Trainer::initialise_on_whole_batch(const BatchLoader & loader, int64_t b) {
    if (group_->rank() == 0) {
        torch::NoGradGuard no_grad;
        model_->forward_heads(loader.whole_batch(b).images);
    }
    broadcast_model();
}

bool Trainer::agreed_interrupt() {
    if (!group_) return interrupted();
    return group_->sum({interrupted() ? 1.0 : 0.0})[0] > 0;
}

std::unique_ptr<Trainer> Trainer::resume(const std::string & run_dir, const std::vector<std::string> & overrides,
                                         const DataLoaderFn & load_data, bool allow_inexact, ProcessGroup * group) {
    RunLock lock = lock_for(run_dir, group);  // first: a run still finishing must not change the checkpoint under us
    try {
        const std::string path = (fs::path(run_dir) / "checkpoint.pt").string();
        CheckpointState state = read_checkpoint_state(path);
        if (!overrides.empty()) {
            TrainConfig changed = parse_config(state.config.to_toml(), path + " (stored config)", overrides);
            if (!allow_inexact && without_resumable_settings(changed).to_toml() != without_resumable_settings(state.config).to_toml()) {
                std::string list;
                for (const auto & o : overrides) list += (list.empty() ? "" : ", ") + o;
                throw ConfigError(run_dir + ": the overrides (" + list + ") change what this run trains (its model, data, "
                                  "schedule or quantizers), so the resumed run would not be the one that was started. "
                                  "Start a new run, or pass --allow-inexact-resume to continue anyway "
                                  "(resuming may change only train.threads, train.log_every, train.eval_batch_size, "
                                  "data.prefetch and data.root)");
            }
            state.config = std::move(changed);
        }
        TrainTestData data = load_data(state.config);
        return std::unique_ptr<Trainer>(new Trainer(std::move(state), run_dir, std::move(lock), std::move(data), true, group));
    } catch (...) {
        lock.abandon();
        throw;
    }
}

std::string Trainer::checkpoint_path() const { return (fs::path(run_dir_) / "checkpoint.pt").string(); }

void Trainer::check_weights_finite(const std::string & when) const {
    for (const auto & item : model_->named_parameters()) {
        if (!torch::isfinite(item.value()).all().item<bool>()) {
            throw NonFiniteError("parameter " + item.key() + " became NaN/Inf " + when +
                                 "; the last good checkpoint is " + checkpoint_path() + " (epoch " +
                                 std::to_string(state_.epoch) + ")");
        }
    }
}

EpochMetrics Trainer::train_epoch() {
    const TrainConfig & c = state_.config;
    const StageSection & st = stage();
    const int64_t epoch = state_.epoch;  // 0-based index over all stages
    const int64_t steps_per_epoch = data_.train.size() / c.train.batch_size;
    const int64_t total_steps = steps_per_epoch * st.epochs;
    const auto warmup_steps = static_cast<int64_t>(std::llround(st.optim.warmup_epochs * steps_per_epoch));
    model_->train();
    // A resumed part-epoch continues at its next batch, with its running sums.
    CheckpointState::PartialEpoch part = state_.partial;
    state_.partial = {};
    const Shard shard = group_ ? Shard{group_->rank(), group_->world_size()} : Shard{};
    BatchLoader loader(data_.train, epoch_order(data_.train.size(), c.train.seed, epoch), c.train.batch_size, true,
                       pre_, true, mix_seed(c.train.seed, static_cast<uint64_t>(epoch), 1), c.data.prefetch, part.batches, shard);
    std::optional<Progress> progress;
    if (writes()) progress.emplace(epoch + 1, c.total_epochs(), loader.num_batches(), c.train.log_every);
    const auto start = Clock::now();
    double lr = 0.0;
    while (auto batch = loader.next()) {
        lr = scheduled_lr(st.optim, state_.step, warmup_steps, total_steps);
        set_lr(*optimizer_, lr);
        if (pending_init_) {
            initialise_on_whole_batch(loader, part.batches);
            pending_init_ = false;
        }
        if (group_ && group_->world_size() > 1) {
            // Each rank's own random stream (drop-path), a function of the step alone, so a resumed
            // run draws what the uninterrupted one drew.
            torch::manual_seed(mix_seed(c.train.seed, static_cast<uint64_t>(group_->rank()),
                                        (static_cast<uint64_t>(epoch) << 32) + static_cast<uint64_t>(part.batches)));
        }
        const StepResult step = train_step(*batch);
        part.loss_sum += step.loss * step.images;
        part.correct += step.correct;
        part.seen += step.images;
        ++part.batches;
        if (progress) progress->update(part.batches, part.loss_sum / part.seen, static_cast<double>(part.correct) / part.seen, part.seen);
        if (step.interrupted && part.batches < loader.num_batches()) {
            part.seconds += seconds_since(start);
            save_partial(part);
            return {};
        }
    }
    EpochMetrics m;
    m.stage = st.name;
    m.seconds = part.seconds + seconds_since(start);
    m.images_per_sec = part.seen / m.seconds;
    m.epoch = epoch + 1;
    m.lr = lr;
    m.train_loss = part.loss_sum / part.seen;
    m.train_acc = static_cast<double>(part.correct) / part.seen;
    return m;
}

void Trainer::save_partial(const CheckpointState::PartialEpoch & partial) {
    check_weights_finite("before the interrupt");
    if (!writes()) return;
    CheckpointState state = state_;
    state.partial = partial;
    save_checkpoint(checkpoint_path(), state, *model_, optimizer_.get());
    std::fprintf(stderr, "\ninterrupted: epoch %lld stopped after batch %lld; checkpoint %s written\ncontinue with: bitvit train --resume %s\n",
                 static_cast<long long>(state_.epoch + 1), static_cast<long long>(partial.batches), checkpoint_path().c_str(),
                 run_dir_.c_str());
}

void Trainer::fail_non_finite(double loss, const Batch & batch) const {
    const std::string where = " at epoch " + std::to_string(state_.epoch + 1) + " (stage '" + stage().name + "', step " +
                              std::to_string(state_.step) + ")";
    const std::string kept = state_.epoch > 0 ? "; the last good checkpoint is " + checkpoint_path() + " (epoch " +
                                                    std::to_string(state_.epoch) + ")"
                                              : "; no checkpoint was written yet (the run failed in its first epoch)";
    if (!torch::isfinite(batch.images).all().item<bool>()) {
        throw NonFiniteError("the input batch holds NaN or Inf" + where + kept +
                             ": the data's normalisation (data.mean, data.std) or the images are at fault, not the training");
    }
    throw NonFiniteError("loss is " + std::to_string(loss) + where + kept + ". Lower optim.lr or check the data.");
}

Trainer::StepResult Trainer::train_step(const Batch & batch) {
    const StageSection & st = stage();
    for (auto & p : model_->parameters()) p.mutable_grad() = torch::Tensor();
    const BatchLoss b = stage_loss(model_, teacher_ ? &teacher_ : nullptr, batch.images, batch.labels, st.distill,
                                   st.optim.label_smoothing);
    const auto n = static_cast<double>(batch.labels.size(0));
    StepResult result{b.loss.item<double>(), b.correct, batch.labels.size(0), interrupted()};
    // Several ranks: the step's metrics are summed while backward runs, and a NaN on any rank is
    // seen by all after it (every rank takes part in the same collectives, then every rank stops).
    if (averager_) averager_->begin({result.loss * n, double(result.correct), n, result.interrupted ? 1.0 : 0.0});
    b.loss.backward();
    if (averager_) {
        // The shards are equal, so the batch loss is the mean of theirs.
        const std::vector<double> total = averager_->finish();
        result = {total[0] / total[2], std::llround(total[1]), std::llround(total[2]), total[3] > 0};
    }
    if (!std::isfinite(result.loss)) fail_non_finite(result.loss, batch);
    if (st.optim.clip_grad > 0) {
        const double norm = clip_gradients(*model_, st.optim.clip_grad);
        if (!std::isfinite(norm)) {
            throw NonFiniteError("gradient norm is " + std::to_string(norm) + " at epoch " + std::to_string(state_.epoch + 1) +
                                 " step " + std::to_string(state_.step) + "; the last good checkpoint is " + checkpoint_path());
        }
    }
    optimizer_->step();
    ++state_.step;
    return result;
}

std::vector<EpochMetrics> Trainer::fit(int64_t stop_after_epoch) {
    std::vector<EpochMetrics> history;
    const TrainConfig & c = state_.config;
    const std::string metrics_path = (fs::path(run_dir_) / "metrics.jsonl").string();
    g_interrupt.store(false);
    interrupted_ = false;
    const auto previous_handler = std::signal(SIGINT, on_sigint);
    while (state_.epoch < c.total_epochs() && (stop_after_epoch < 0 || state_.epoch < stop_after_epoch)) {
        if (state_.stage_epoch == stage().epochs) {
            // The stage is complete: the next one starts from this model (or its own init).
            ++state_.stage;
            state_.stage_epoch = 0;
            state_.step = 0;
            enter_stage(static_cast<size_t>(state_.stage), false);
            if (writes()) std::fprintf(stderr, "stage %lld/%zu: %s (%lld epoch%s)\n", static_cast<long long>(state_.stage + 1),
                         c.stages.size(), stage().name.c_str(), static_cast<long long>(stage().epochs), stage().epochs == 1 ? "" : "s");
        }
        EpochMetrics m = train_epoch();
        if (m.epoch == 0) {  // interrupted: the part-epoch is checkpointed
            interrupted_ = true;
            break;
        }
        check_weights_finite("during epoch " + std::to_string(m.epoch));
        last_eval_ = evaluate(model_, data_.test, pre_, c.train.eval_batch_size, group_);
        m.step = state_.step;
        m.test_loss = last_eval_.loss;
        m.test_acc = last_eval_.accuracy;
        state_.epoch = m.epoch;
        state_.stage_epoch += 1;
        state_.best_test_acc = std::max(state_.best_test_acc, last_eval_.accuracy);
        // The metrics line first, then the checkpoint: a kill between the two leaves a line for an epoch
        // the checkpoint lacks, which resuming trims and writes again — never a checkpointed epoch
        // without its line.
        history.push_back(m);
        const bool stop = agreed_interrupt();
        interrupted_ = stop;
        if (!writes()) {
            if (stop) break;
            continue;
        }
        append_metrics_line(metrics_path, m);
        save_checkpoint(checkpoint_path(), state_, *model_, optimizer_.get());
        std::fprintf(stderr, "epoch %lld/%lld (%s): train loss %.4f acc %.2f%% | test loss %.4f acc %.2f%% | %.0f img/s, %.1f s\n",
                     static_cast<long long>(m.epoch), static_cast<long long>(c.total_epochs()), m.stage.c_str(),
                     m.train_loss, 100 * m.train_acc, m.test_loss, 100 * m.test_acc, m.images_per_sec, m.seconds);
        if (stop) {
            std::fprintf(stderr, "interrupted after epoch %lld; continue with: bitvit train --resume %s\n",
                         static_cast<long long>(m.epoch), run_dir_.c_str());
            break;
        }
    }
    std::signal(SIGINT, previous_handler == SIG_ERR ? SIG_DFL : previous_handler);
    return history;
}

}  // namespace bitvit
