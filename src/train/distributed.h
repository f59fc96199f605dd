// Data parallelism over processes on LibTorch's c10d (Gloo on CPU): one rank per process, launched
// as torchrun launches (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), on one host or many.
// Rank 0 hosts the TCPStore the ranks meet at. Every rank holds the whole model and steps its own
// optimiser on gradients averaged over all ranks, so the ranks stay equal without copying weights
// after a step; weights (and first-batch quantizer initialisations) are broadcast from rank 0
// whenever a stage begins. docs/training.md has the launch walkthrough and the timeout rule.
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace c10d {
class Store;
class ProcessGroupGloo;
class Work;
}  // namespace c10d

namespace bitvit {

// A collective failed: a rank died, hung past the timeout, or could not be reached. The message
// names this rank, the operation, and the ranks that stopped (with their own error, when they left
// one) or did not answer.
class DistributedError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// Where this process sits among the ranks, as a launcher's environment gives it.
struct RankEnv {
    int rank = 0, world_size = 1, local_rank = 0, local_world_size = 1;  // local: on this host
    std::string master_addr = "127.0.0.1";
    int master_port = 29500;
    bool from_environment = false;  // RANK and WORLD_SIZE were set: this process is one rank of several
};

// Reads RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT. Neither RANK nor WORLD_SIZE set:
// a single process. Throws DistributedError naming the variable for a missing or malformed value.
RankEnv rank_env_from_environment();

class ProcessGroup {
  public:
    // Meets the other ranks (rank 0 serves the store at master_addr:master_port) within `timeout`,
    // which also bounds every later collective: a rank that dies is noticed at once (its sockets
    // close), one that hangs after `timeout`; the error follows within a few seconds more.
    ProcessGroup(const RankEnv & env, std::chrono::milliseconds timeout);
    ~ProcessGroup();
    ProcessGroup(const ProcessGroup &) = delete;
    ProcessGroup & operator=(const ProcessGroup &) = delete;

    int rank() const { return env_.rank; }
    int world_size() const { return env_.world_size; }
    int local_world_size() const { return env_.local_world_size; }

    // Overwrites `tensors` (same shapes and order on every rank) with rank 0's values.
    void broadcast(const std::vector<torch::Tensor> & tensors);
    // The element-wise sum of `values` over the ranks (metrics, counts, flags), in float64.
    std::vector<double> sum(const std::vector<double> & values);
    // Starts summing `flat` (one contiguous tensor) over the ranks in place and returns at once;
    // `wait` completes it, rethrowing a failure as DistributedError naming `what`.
    c10::intrusive_ptr<c10d::Work> start_sum(torch::Tensor flat);
    void wait(const c10::intrusive_ptr<c10d::Work> & work, const std::string & what);
    // Leaves `message` in the store for the other ranks, which name it when their next collective
    // fails because this rank stopped. Call before exiting on an error; never throws.
    void report_failure(const std::string & message) noexcept;

  private:
    // Rethrows a collective's failure as DistributedError naming `what` and the ranks that did not
    // report the failure themselves within a short grace period (the dead or hung ones).
    [[noreturn]] void fail(const std::string & what, const std::exception & cause);

    RankEnv env_;
    std::chrono::milliseconds timeout_;
    c10::intrusive_ptr<c10d::Store> store_;
    c10::intrusive_ptr<c10d::ProcessGroupGloo> group_;
};

// Averages a model's gradients over the ranks while its backward pass still runs, as PyTorch's
// DistributedDataParallel does (its c10d::Reducer cannot be used here: Debian's libtorch-dev lacks
// the distributed-autograd headers reducer.hpp includes). The parameters are split into buckets of
// about `bucket_bytes`, in reverse order, the order backward produces their gradients. A hook on each
// parameter copies its gradient into its bucket as autograd computes it; a bucket whose gradients
// are all in is all-reduced at once, in the background, while backward goes on with earlier layers.
// Buckets start in one fixed order on every rank, as collectives must.
//
// One backward pass per step, between begin() and finish(), with the gradients cleared before it.
// The hooks live as long as this object; make a new one for a new model.
class GradientAverager {
  public:
    GradientAverager(ProcessGroup & group, const std::vector<torch::Tensor> & params, int64_t bucket_bytes = 1 << 20);
    ~GradientAverager();
    GradientAverager(const GradientAverager &) = delete;
    GradientAverager & operator=(const GradientAverager &) = delete;

    // Before the backward pass: starts summing `metrics` over the ranks (loss, counts, flags: the
    // step needs no collective of its own that would make the ranks wait for each other before
    // backward) and arms the hooks.
    void begin(const std::vector<double> & metrics);
    // After it: sends the buckets still held (a parameter without a gradient this step sends
    // zeros and keeps no gradient, on every rank alike), waits for all, leaves each parameter that
    // received a gradient with its mean over the ranks (a view into its bucket), and returns the
    // metrics' sums.
    std::vector<double> finish();

    size_t bucket_count() const { return buckets_.size(); }
    // Between backward and finish(): the buckets already sent, the overlap backward gave them.
    size_t buckets_started() const { return next_bucket_; }

  private:
    struct Slot {
        size_t bucket = 0;
        int64_t offset = 0;    // in the bucket's elements
        bool received = false;  // this step's backward pass produced its gradient
    };
    struct Bucket {
        torch::Tensor flat;  // float32 [sum of its parameters' numel]
        size_t size = 0, received = 0;
        c10::intrusive_ptr<c10d::Work> work;
    };
    void on_gradient(size_t index, const torch::Tensor & grad);
    void start_ready_buckets();  // in bucket order: those whose gradients are all in

    ProcessGroup & group_;
    std::vector<torch::Tensor> params_;
    std::vector<unsigned> hooks_;  // params_[i]'s hook handle
    std::vector<Slot> slots_;
    std::vector<Bucket> buckets_;
    size_t next_bucket_ = 0;  // buckets before it have started
    bool armed_ = false;
    torch::Tensor metrics_;       // float64 [metrics]
    c10::intrusive_ptr<c10d::Work> metrics_work_;
};

// A TCP port free on loopback now (the kernel's choice), for a store that binds it moments later.
int free_loopback_port();

// For `bitvit train` run without a launcher: starts `nproc` ranks of this program (argv as given)
// on this host — loopback store on a free port, RANK etc. set, each in its own process group so a
// terminal's Ctrl-C reaches them once, through this launcher — and waits. A rank that fails makes
// the launcher stop the rest (after `grace` for them to report their own errors) and return its
// exit status, having printed which rank failed and how.
int launch_local_ranks(int nproc, char ** argv, std::chrono::milliseconds grace);

}  // namespace bitvit
