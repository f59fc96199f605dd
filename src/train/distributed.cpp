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

void ProcessGroup::average_gradients(const std::vector<torch::Tensor> & params, int64_t bucket_bytes) {
    torch::NoGradGuard no_grad;
    struct Bucket {
        std::vector<torch::Tensor> grads;
        std::vector<torch::Tensor> flat;  // one tensor: what the all-reduce sums in place
        c10::intrusive_ptr<c10d::Work> work;
    };
    std::vector<Bucket> buckets(1);
    int64_t filled = 0;
    for (const auto & p : params) {
        const torch::Tensor & g = p.grad();
        if (!g.defined()) continue;
        if (filled > 0 && filled + g.numel() * 4 > bucket_bytes) {
            buckets.emplace_back();
            filled = 0;
        }
        buckets.back().grads.push_back(g);
        filled += g.numel() * 4;
    }
    try {
        for (auto & b : buckets) {
            if (b.grads.empty()) continue;
            std::vector<torch::Tensor> parts;
            for (const auto & g : b.grads) parts.push_back(g.reshape(-1));
            b.flat = {torch::cat(parts)};
            b.work = group_->allreduce(b.flat, c10d::AllreduceOptions{c10d::ReduceOp::SUM, timeout_});
        }
        for (auto & b : buckets) {
            if (b.work) b.work->wait();
        }
    } catch (const std::exception & e) {
        fail("gradient all-reduce", e);
    }
    const double scale = 1.0 / env_.world_size;
    for (auto & b : buckets) {
        int64_t offset = 0;
        for (auto & g : b.grads) {
            const int64_t n = g.numel();
            g.copy_(b.flat[0].narrow(0, offset, n).view(g.sizes())).mul_(scale);
            offset += n;
        }
    }
}

std::vector<double> ProcessGroup::sum(const std::vector<double> & values) {
    std::vector<torch::Tensor> flat = {torch::tensor(values, torch::kFloat64)};
    try {
        group_->allreduce(flat, c10d::AllreduceOptions{c10d::ReduceOp::SUM, timeout_})->wait();
    } catch (const std::exception & e) {
        fail("sum of " + std::to_string(values.size()) + " metrics", e);
    }
    const double * out = flat[0].data_ptr<double>();
    return std::vector<double>(out, out + values.size());
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
