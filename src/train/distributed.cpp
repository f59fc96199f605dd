#include "distributed.h"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace bitvit {

namespace {

using Clock = std::chrono::steady_clock;

// How long a rank whose collective failed waits for the others to leave their own reports, before
// it names those that left none as dead or hung.
constexpr auto kReportGrace = std::chrono::seconds(3);

std::string failure_key(int rank) { return "bitvit/failed/" + std::to_string(rank); }

// The integer in environment variable `name`, or `fallback` when unset.
int env_int(const char * name, int fallback, int min) {
    const char * text = std::getenv(name);
    if (!text || !*text) return fallback;
    char * end = nullptr;
    errno = 0;
    const long value = std::strtol(text, &end, 10);
    if (errno != 0 || *end != '\0' || value < min || value > 1 << 30) {
        throw DistributedError(std::string("environment variable ") + name + "='" + text + "' is not an integer >= " +
                               std::to_string(min));
    }
    return static_cast<int>(value);
}

bool is_loopback(const std::string & host) { return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1"; }

// The Gloo transport device: loopback for a one-host run, the interface GLOO_SOCKET_IFNAME names
// (as PyTorch reads it), else the address this host's name resolves to.
std::shared_ptr<::gloo::transport::Device> gloo_device(const std::string & master_addr) {
    if (const char * ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname) {
        return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
    }
    if (is_loopback(master_addr)) return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
    return c10d::ProcessGroupGloo::createDefaultDevice();
}

}  // namespace

RankEnv rank_env_from_environment() {
    RankEnv env;
    const bool has_rank = std::getenv("RANK") != nullptr, has_world = std::getenv("WORLD_SIZE") != nullptr;
    if (!has_rank && !has_world) return env;
    if (has_rank != has_world) {
        throw DistributedError(std::string("environment variable ") + (has_rank ? "WORLD_SIZE" : "RANK") +
                               " is not set but " + (has_rank ? "RANK" : "WORLD_SIZE") +
                               " is: a launcher sets both (bitvit train --nproc N does it for one host)");
    }
    env.from_environment = true;
    env.world_size = env_int("WORLD_SIZE", 1, 1);
    env.rank = env_int("RANK", 0, 0);
    if (env.rank >= env.world_size) {
        throw DistributedError("RANK=" + std::to_string(env.rank) + " is not below WORLD_SIZE=" + std::to_string(env.world_size));
    }
    env.local_rank = env_int("LOCAL_RANK", env.rank, 0);
    env.local_world_size = env_int("LOCAL_WORLD_SIZE", env.world_size, 1);
    if (const char * addr = std::getenv("MASTER_ADDR"); addr && *addr) env.master_addr = addr;
    env.master_port = env_int("MASTER_PORT", env.master_port, 1);
    if (env.master_port > 65535) throw DistributedError("MASTER_PORT=" + std::to_string(env.master_port) + " is not a port");
    return env;
}

ProcessGroup::ProcessGroup(const RankEnv & env, std::chrono::milliseconds timeout) : env_(env), timeout_(timeout) {
    const std::string where = env.master_addr + ":" + std::to_string(env.master_port);
    const std::string who = "rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size);
    c10d::TCPStoreOptions options;
    options.port = static_cast<uint16_t>(env.master_port);
    options.isServer = env.rank == 0;
    options.numWorkers = static_cast<size_t>(env.world_size);
    options.waitWorkers = true;  // rank 0 returns once every rank has reached the store
    options.timeout = timeout;
    try {
        store_ = c10::make_intrusive<c10d::TCPStore>(env.master_addr, options);
    } catch (const std::exception & e) {
        throw DistributedError(who + ": " +
                               (env.rank == 0 ? "cannot serve the rendezvous store at " + where
                                              : "cannot reach rank 0's rendezvous store at " + where) +
                               " within " + std::to_string(timeout.count() / 1000) + " s (" + e.what() +
                               "): check MASTER_ADDR/MASTER_PORT, that the port is free on rank 0's host, and that every rank was started");
    }
    try {
        auto gloo_options = c10d::ProcessGroupGloo::Options::create(timeout);
        gloo_options->devices.push_back(gloo_device(env.master_addr));
        group_ = c10::make_intrusive<c10d::ProcessGroupGloo>(store_, env.rank, env.world_size, gloo_options);
    } catch (const std::exception & e) {
        throw DistributedError(who + ": the ranks met at " + where + " but could not connect to each other (" + e.what() +
                               "); on several hosts set GLOO_SOCKET_IFNAME to the interface they share");
    }
}

ProcessGroup::~ProcessGroup() = default;

void ProcessGroup::report_failure(const std::string & message) noexcept {
    try {
        store_->set(failure_key(env_.rank), std::vector<uint8_t>(message.begin(), message.end()));
    } catch (...) {
        // The store is gone with rank 0: the others learn of this rank's end from its closed sockets.
    }
}

void ProcessGroup::fail(const std::string & what, const std::exception & cause) {
    std::string silent, stopped;
    try {
        report_failure("its " + what + " failed");
        const auto deadline = Clock::now() + kReportGrace;
        std::vector<bool> reported(static_cast<size_t>(env_.world_size), false);
        reported[static_cast<size_t>(env_.rank)] = true;
        for (bool all = false; !all && Clock::now() < deadline;) {
            all = true;
            for (int r = 0; r < env_.world_size; ++r) {
                if (!reported[r] && store_->check({failure_key(r)})) reported[r] = true;
                all = all && reported[r];
            }
            if (!all) std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        for (int r = 0; r < env_.world_size; ++r) {
            if (r == env_.rank) continue;
            if (!reported[r]) {
                silent += (silent.empty() ? "" : ", ") + std::to_string(r);
                continue;
            }
            const std::vector<uint8_t> text = store_->get(failure_key(r));
            stopped += "; rank " + std::to_string(r) + " reported: " + std::string(text.begin(), text.end());
        }
    } catch (const std::exception &) {
        silent = "0 (it hosts the rendezvous store, which no longer answers)";
    }
    throw DistributedError("rank " + std::to_string(env_.rank) + " of " + std::to_string(env_.world_size) + ": " + what +
                           " failed (" + cause.what() + ")" +
                           (silent.empty() ? "" : "; rank " + silent + " did not answer: died or hung (timeout " +
                                                      std::to_string(timeout_.count() / 1000) + " s)") +
                           stopped);
}

void ProcessGroup::broadcast(const std::vector<torch::Tensor> & tensors) {
    if (tensors.empty()) return;
    torch::NoGradGuard no_grad;
    // One message in float64, which holds float32 weights and integer or boolean buffers exactly.
    std::vector<torch::Tensor> parts;
    for (const auto & t : tensors) parts.push_back(t.reshape(-1).to(torch::kFloat64));
    std::vector<torch::Tensor> flat = {torch::cat(parts)};
    try {
        group_->broadcast(flat, c10d::BroadcastOptions{0, 0, timeout_})->wait();
    } catch (const std::exception & e) {
        fail("broadcast of " + std::to_string(tensors.size()) + " tensors from rank 0", e);
    }
    int64_t offset = 0;
    for (const auto & t : tensors) {
        const int64_t n = t.numel();
        t.copy_(flat[0].narrow(0, offset, n).view(t.sizes()));
        offset += n;
    }
}

std::vector<double> ProcessGroup::sum(const std::vector<double> & values) {
    torch::Tensor flat = torch::tensor(values, torch::kFloat64);
    wait(start_sum(flat), "sum of " + std::to_string(values.size()) + " metrics");
    const double * out = flat.data_ptr<double>();
    return std::vector<double>(out, out + values.size());
}

c10::intrusive_ptr<c10d::Work> ProcessGroup::start_sum(torch::Tensor flat) {
    std::vector<torch::Tensor> tensors = {std::move(flat)};
    return group_->allreduce(tensors, c10d::AllreduceOptions{c10d::ReduceOp::SUM, timeout_});
}

void ProcessGroup::wait(const c10::intrusive_ptr<c10d::Work> & work, const std::string & what) {
    try {
        work->wait();
    } catch (const std::exception & e) {
        fail(what, e);
    }
}

GradientAverager::GradientAverager(ProcessGroup & group, const std::vector<torch::Tensor> & params, int64_t bucket_bytes)
    : group_(group) {
    for (const auto & p : params) {
        if (p.requires_grad()) params_.push_back(p);
    }
    // Reverse order: the head's gradients come first in backward, the patch embedding's last.
    slots_.resize(params_.size());
    int64_t filled = 0;
    std::vector<int64_t> elements;
    for (size_t i = params_.size(); i-- > 0;) {
        const int64_t n = params_[i].numel();
        if (buckets_.empty() || (filled > 0 && (filled + n) * 4 > bucket_bytes)) {
            buckets_.emplace_back();
            elements.push_back(0);
            filled = 0;
        }
        slots_[i] = Slot{buckets_.size() - 1, elements.back(), false};
        elements.back() += n;
        buckets_.back().size += 1;
        filled += n;
    }
    for (size_t b = 0; b < buckets_.size(); ++b) {
        buckets_[b].flat = torch::empty({elements[b]}, params_.front().options().dtype(torch::kFloat32));
    }
    for (size_t i = 0; i < params_.size(); ++i) {
        hooks_.push_back(params_[i].register_hook([this, i](const torch::Tensor & grad) { on_gradient(i, grad); }));
    }
}

GradientAverager::~GradientAverager() {
    for (size_t i = 0; i < hooks_.size(); ++i) params_[i].remove_hook(hooks_[i]);
}

void GradientAverager::begin(const std::vector<double> & metrics) {
    for (const auto & p : params_) {
        if (p.grad().defined()) throw std::logic_error("GradientAverager::begin: gradients must be cleared before the backward pass");
    }
    for (auto & s : slots_) s.received = false;
    for (auto & b : buckets_) b.received = 0;
    next_bucket_ = 0;
    metrics_ = torch::tensor(metrics, torch::kFloat64);
    metrics_work_ = group_.start_sum(metrics_);
    armed_ = true;
}

// Runs inside backward, on one thread (the parameters share a device).
void GradientAverager::on_gradient(size_t index, const torch::Tensor & grad) {
    if (!armed_) return;  // a backward pass outside a step (none in training; a user's own)
    Slot & slot = slots_[index];
    Bucket & bucket = buckets_[slot.bucket];
    torch::NoGradGuard no_grad;
    bucket.flat.narrow(0, slot.offset, grad.numel()).view(grad.sizes()).copy_(grad);
    slot.received = true;
    ++bucket.received;
    if (bucket.received == bucket.size) start_ready_buckets();
}

void GradientAverager::start_ready_buckets() {
    while (next_bucket_ < buckets_.size() && buckets_[next_bucket_].received == buckets_[next_bucket_].size) {
        Bucket & bucket = buckets_[next_bucket_++];
        bucket.work = group_.start_sum(bucket.flat);
    }
}

std::vector<double> GradientAverager::finish() {
    armed_ = false;
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < params_.size(); ++i) {
        const Slot & s = slots_[i];
        if (!s.received) buckets_[s.bucket].flat.narrow(0, s.offset, params_[i].numel()).zero_();
    }
    for (; next_bucket_ < buckets_.size(); ++next_bucket_) buckets_[next_bucket_].work = group_.start_sum(buckets_[next_bucket_].flat);
    group_.wait(metrics_work_, "sum of the step's metrics");
    const double scale = 1.0 / group_.world_size();
    for (auto & b : buckets_) {
        group_.wait(b.work, "gradient all-reduce");
        b.work.reset();
        b.flat.mul_(scale);
    }
    for (size_t i = 0; i < params_.size(); ++i) {
        const Slot & s = slots_[i];
        if (s.received) params_[i].mutable_grad() = buckets_[s.bucket].flat.narrow(0, s.offset, params_[i].numel()).view(params_[i].sizes());
    }
    const double * sums = metrics_.data_ptr<double>();
    return std::vector<double>(sums, sums + metrics_.numel());
}

namespace {

std::atomic<int> g_forward_signal{0};
void remember_signal(int sig) { g_forward_signal.store(sig); }

std::string describe_exit(int status) {
    if (WIFSIGNALED(status)) return std::string("was killed by signal ") + std::to_string(WTERMSIG(status)) + " (" + strsignal(WTERMSIG(status)) + ")";
    return "exited with status " + std::to_string(WEXITSTATUS(status));
}

int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

}  // namespace

int free_loopback_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw DistributedError(std::string("cannot open a socket to find a free port (") + std::strerror(errno) + ")");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    const bool ok = ::bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) == 0 &&
                    ::getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &len) == 0;
    ::close(fd);
    if (!ok) throw DistributedError(std::string("cannot find a free loopback port (") + std::strerror(errno) + ")");
    return ntohs(addr.sin_port);
}

int launch_local_ranks(int nproc, char ** argv, std::chrono::milliseconds grace) {
    const int port = free_loopback_port();
    const pid_t launcher = ::getpid();
    std::vector<pid_t> ranks(static_cast<size_t>(nproc), -1);
    g_forward_signal.store(0);
    struct sigaction forward {};
    forward.sa_handler = remember_signal;
    sigemptyset(&forward.sa_mask);
    struct sigaction old_int {}, old_term {};
    ::sigaction(SIGINT, &forward, &old_int);
    ::sigaction(SIGTERM, &forward, &old_term);
    for (int r = 0; r < nproc; ++r) {
        const pid_t pid = ::fork();
        if (pid < 0) {
            for (pid_t p : ranks) {
                if (p > 0) ::kill(p, SIGKILL);
            }
            throw DistributedError(std::string("cannot start rank ") + std::to_string(r) + " (" + std::strerror(errno) + ")");
        }
        if (pid == 0) {
            // Its own process group: a terminal's Ctrl-C reaches the launcher only, which passes it on
            // once. PDEATHSIG: a killed launcher takes its ranks with it.
            ::setpgid(0, 0);
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (::getppid() != launcher) ::_exit(1);
            ::setenv("RANK", std::to_string(r).c_str(), 1);
            ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
            ::setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
            ::setenv("LOCAL_WORLD_SIZE", std::to_string(nproc).c_str(), 1);
            ::setenv("MASTER_ADDR", "127.0.0.1", 1);
            ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
            ::execv("/proc/self/exe", argv);
            std::fprintf(stderr, "rank %d: cannot start %s (%s)\n", r, argv[0], std::strerror(errno));
            ::_exit(127);
        }
        ranks[static_cast<size_t>(r)] = pid;
    }
    int result = 0, running = nproc, forwarded = 0;
    Clock::time_point kill_at = Clock::time_point::max();
    while (running > 0) {
        if (const int sig = g_forward_signal.exchange(0); sig != 0) {
            forwarded = sig;
            for (pid_t p : ranks) {
                if (p > 0) ::kill(p, sig);
            }
        }
        if (Clock::now() >= kill_at) {
            for (pid_t p : ranks) {
                if (p > 0) ::kill(p, SIGKILL);
            }
            kill_at = Clock::time_point::max();
        }
        int status = 0;
        const pid_t done = ::waitpid(-1, &status, WNOHANG);
        if (done <= 0) {
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
            continue;
        }
        for (int r = 0; r < nproc; ++r) {
            if (ranks[static_cast<size_t>(r)] != done) continue;
            ranks[static_cast<size_t>(r)] = -1;
            --running;
            if (status != 0 && result == 0) {
                result = exit_code(status);
                if (!(forwarded && exit_code(status) == 130)) {
                    std::fprintf(stderr, "bitvit train: rank %d of %d %s; stopping the other ranks\n", r, nproc, describe_exit(status).c_str());
                }
                if (running > 0) kill_at = Clock::now() + grace;  // time to report their own view first
            }
        }
    }
    ::sigaction(SIGINT, &old_int, nullptr);
    ::sigaction(SIGTERM, &old_term, nullptr);
    return result;
}

}  // namespace bitvit
