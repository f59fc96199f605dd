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
    // Replaces every defined gradient of `params` by its mean over the ranks, all-reducing them in
    // buckets of about `bucket_bytes` (flattened float32), all buckets in flight at once. Every rank
    // must have gradients for the same parameters (the same model: the same graph).
    void average_gradients(const std::vector<torch::Tensor> & params, int64_t bucket_bytes = 8 << 20);
    // The element-wise sum of `values` over the ranks (metrics, counts, flags), in float64.
    std::vector<double> sum(const std::vector<double> & values);
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

// A TCP port free on loopback now (the kernel's choice), for a store that binds it moments later.
int free_loopback_port();

// For `bitvit train` run without a launcher: starts `nproc` ranks of this program (argv as given)
// on this host — loopback store on a free port, RANK etc. set, each in its own process group so a
// terminal's Ctrl-C reaches them once, through this launcher — and waits. A rank that fails makes
// the launcher stop the rest (after `grace` for them to report their own errors) and return its
// exit status, having printed which rank failed and how.
int launch_local_ranks(int nproc, char ** argv, std::chrono::milliseconds grace);

}  // namespace bitvit
