// The command line as a user meets it: the programs are run as processes, and each mistake people
// make gets a message that names the file or flag and what to do instead; Ctrl-C during training
// stops resumably, and the resumed run equals an uninterrupted one.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

#include "require-data.h"
#include "two-stage-recipe.h"
#include "train/checkpoint.h"

namespace fs = std::filesystem;
using namespace bitvit;

extern char ** environ;

namespace {

struct Result {
    int status = -1;  // exit code, or 128 + signal
    std::string output;  // stdout and stderr together
};

// Runs `args` (argv[0] a path) with stdout and stderr captured. With `interrupt_after`, sends SIGINT
// once that text has appeared in the output.
Result run(const std::vector<std::string> & args, const std::string & interrupt_after = "") {
    int pipe_fds[2];
    if (::pipe(pipe_fds) != 0) return {};
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 1);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 2);
    posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
    std::vector<char *> argv;
    for (const auto & a : args) argv.push_back(const_cast<char *>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = 0;
    const int spawned = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(pipe_fds[1]);
    Result r;
    if (spawned != 0) return r;
    char buf[4096];
    bool sent = interrupt_after.empty();
    for (ssize_t n; (n = ::read(pipe_fds[0], buf, sizeof buf)) > 0;) {
        r.output.append(buf, static_cast<size_t>(n));
        if (!sent && r.output.find(interrupt_after) != std::string::npos) {
            ::kill(pid, SIGINT);
            sent = true;
        }
    }
    ::close(pipe_fds[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return r;
}

const std::string kBitvit = BITVIT_BINARY, kRuntime = BITVIT_RT_BINARY;

class CliTest : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("bitvit-cli-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }
    std::string path(const std::string & name) const { return (dir_ / name).string(); }
    // A small trained run: a checkpoint and its packed export, for the mistakes that need files.
    void make_run() {
        const Result t = run({kBitvit, "train", "--model", "deit_nano_patch7_28", "--train-subset", "256", "--test-subset", "100",
                              "--epochs", "1", "--batch-size", "64", "--out", path("run")});
        ASSERT_EQ(t.status, 0) << t.output;
        const Result e = run({kBitvit, "export", path("run/checkpoint.pt"), "-o", path("m.safetensors")});
        ASSERT_EQ(e.status, 0) << e.output;
    }
    fs::path dir_;
    static inline int counter_ = 0;
};

void expect_error(const Result & r, std::initializer_list<std::string> fragments) {
    EXPECT_NE(r.status, 0) << r.output;
    for (const auto & f : fragments) EXPECT_NE(r.output.find(f), std::string::npos) << "missing '" << f << "' in:\n" << r.output;
}

}  // namespace

TEST_F(CliTest, VersionHelpAndUnknownCommands) {
    const Result v = run({kBitvit, "--version"});
    EXPECT_EQ(v.status, 0);
    EXPECT_NE(v.output.find("bitvit 0."), std::string::npos) << v.output;
    expect_error(run({kBitvit, "trian"}), {"unknown command 'trian'", "train, eval"});
    expect_error(run({kRuntime, "bench2"}), {"unknown command 'bench2'", "run, bench, info"});
    // Every default is shown, lists say how to separate them.
    const Result h = run({kBitvit, "bench", "--help"});
    EXPECT_NE(h.output.find("comma-separated"), std::string::npos) << h.output;
    EXPECT_NE(h.output.find("--min-seconds FLOAT=0.5"), std::string::npos) << h.output;
    EXPECT_NE(run({kBitvit, "eval", "--help"}).output.find("--split TEXT:{test,train}=test"), std::string::npos);
    EXPECT_NE(run({kBitvit, "train", "--help"}).output.find("train.epoch_scale"), std::string::npos);
}

TEST_F(CliTest, WrongKindsOfFileAreNamed) {
    BITVIT_REQUIRE_FASHION_MNIST();
    make_run();
    const std::string ckpt = path("run/checkpoint.pt"), packed = path("m.safetensors");
    expect_error(run({kBitvit, "run", ckpt}), {ckpt, "LibTorch checkpoint", "bitvit export"});
    expect_error(run({kRuntime, "info", ckpt}), {ckpt, "LibTorch checkpoint"});
    expect_error(run({kBitvit, "verify", packed, ckpt}), {packed, "packed model"});  // arguments swapped
    expect_error(run({kBitvit, "info", packed}), {packed, "packed model", "bitvit-rt"});
    expect_error(run({kBitvit, "eval", path("run")}), {"is a run directory", ckpt});
    expect_error(run({kBitvit, "export", ckpt, "-o", path("no/such/dir/m.safetensors")}), {"no/such/dir", "does not exist"});
}

TEST_F(CliTest, SettingsAndDataMistakes) {
    expect_error(run({kBitvit, "train", "--set", "optim.lrr=1", "--out", path("x")}), {"--set optim.lrr", "did you mean optim.lr?"});
    EXPECT_FALSE(fs::exists(path("x")));
    // run, verify and bitvit-rt take --data-root like train and eval.
    expect_error(run({kRuntime, "run", "m.safetensors", "--data", "mnist", "--data-root", path("nowhere")}), {"m.safetensors"});
    EXPECT_NE(run({kRuntime, "run", "--help"}).output.find("--data-root"), std::string::npos);
    // Bench outside the source tree names what it needs instead of a hidden path.
    const Result bench = run({kBitvit, "bench", "--recipe", path("missing.toml")});
    expect_error(bench, {"missing.toml"});
}

TEST_F(CliTest, FailedStartsReportBeforeTheDataAndLeaveNothingBehind) {
    BITVIT_REQUIRE_FASHION_MNIST();
    make_run();
    // An existing run: refused, naming --resume, the run kept.
    expect_error(run({kBitvit, "train", "--model", "deit_nano_patch7_28", "--out", path("run")}), {"already holds a run", "--resume"});
    EXPECT_TRUE(fs::exists(path("run/checkpoint.pt")));
    // A missing teacher: refused before any data loads, no directory left.
    const Result r = run({kBitvit, "train", "--recipe", std::string(BITVIT_SOURCE_DIR) + "/recipes/bnn.toml", "--fp-checkpoint",
                          path("no-teacher.pt"), "--out", path("bnn")});
    expect_error(r, {"no-teacher.pt"});
    EXPECT_EQ(r.output.find("train / "), std::string::npos) << "the data was loaded first:\n" << r.output;
    EXPECT_FALSE(fs::exists(path("bnn")));
    // A resume that would change the data is refused.
    expect_error(run({kBitvit, "train", "--resume", path("run"), "--train-subset", "128"}), {"--allow-inexact-resume"});
}

// Ctrl-C stops at the next step, writes the part-epoch's checkpoint and says how to continue; the
// resumed run ends with exactly the weights of a run that was never interrupted.
TEST_F(CliTest, CtrlCStopsResumablyAndTheResumedRunIsExact) {
    BITVIT_REQUIRE_FASHION_MNIST();
    const std::vector<std::string> base = {kBitvit, "train", "--model", "deit_nano_patch7_28", "--train-subset", "1024",
                                           "--test-subset", "100", "--epochs", "3", "--batch-size", "64", "--set", "train.log_every=1"};
    auto with_out = [&](const std::string & out) {
        std::vector<std::string> a = base;
        a.insert(a.end(), {"--out", path(out)});
        return a;
    };
    const Result straight = run(with_out("straight"));
    ASSERT_EQ(straight.status, 0) << straight.output;
    const Result stopped = run(with_out("stopped"), "epoch 1/3 step 3/16");
    ASSERT_EQ(stopped.status, 130) << stopped.output;
    EXPECT_NE(stopped.output.find("continue with: bitvit train --resume " + path("stopped")), std::string::npos) << stopped.output;
    const CheckpointState state = read_checkpoint_state(path("stopped/checkpoint.pt"));
    EXPECT_LT(state.epoch, 3);
    const Result resumed = run({kBitvit, "train", "--resume", path("stopped")});
    ASSERT_EQ(resumed.status, 0) << resumed.output;
    const LoadedModel a = load_model(path("straight/checkpoint.pt")), b = load_model(path("stopped/checkpoint.pt"));
    for (const auto & p : a.model->named_parameters()) {
        EXPECT_TRUE(torch::equal(p.value(), b.model->named_parameters()[p.key()])) << p.key();
    }
    EXPECT_EQ(fs::file_size(path("straight/metrics.jsonl")) > 0, true);
    // Resuming a finished run trains nothing and evaluates nothing.
    const Result again = run({kBitvit, "train", "--resume", path("stopped")});
    EXPECT_EQ(again.status, 0);
    EXPECT_NE(again.output.find("already complete"), std::string::npos) << again.output;
}

// The recipes' default teacher (train.fp_checkpoint, a path inside the source tree) is found when
// bitvit runs from another directory (ctest runs it from build/tests).
TEST_F(CliTest, TheShippedTeacherIsFoundFromAnyDirectory) {
    BITVIT_REQUIRE_FASHION_MNIST();
    ASSERT_FALSE(fs::exists("teachers/deit_micro_patch4_28-fp.pt"));
    const Result r = run({kBitvit, "train", "--recipe", std::string(BITVIT_SOURCE_DIR) + "/recipes/bnn.toml", "--train-subset", "200",
                          "--test-subset", "100", "--set", "train.epoch_scale=0.01", "--out", path("run")});
    ASSERT_EQ(r.status, 0) << r.output;
    std::ifstream config(path("run/config.toml"));
    const std::string text((std::istreambuf_iterator<char>(config)), std::istreambuf_iterator<char>());
    const auto at = text.find("fp_checkpoint = '/");
    ASSERT_NE(at, std::string::npos) << text;
    const std::string teacher = text.substr(at + 17, text.find('\'', at + 17) - at - 17);
    EXPECT_TRUE(fs::exists(teacher)) << teacher;
    EXPECT_EQ(fs::path(teacher).filename(), "deit_micro_patch4_28-fp.pt");
}

namespace {

// The tests' two-stage quantized recipe on two ranks, one step per log line.
const std::string kTwoRankRecipe = bitvit::test_util::two_stage_recipe("log_every = 1\ndata_parallel = 2\n[data]\ntrain_subset = 512\ntest_subset = 100\n");

void expect_same_weights(const std::string & a_path, const std::string & b_path) {
    const LoadedModel a = load_model(a_path), b = load_model(b_path);
    for (const auto & p : a.model->named_parameters()) {
        EXPECT_TRUE(torch::equal(p.value(), b.model->named_parameters()[p.key()])) << p.key();
    }
}

// Starts `args` as one rank of a torchrun-style launch (RANK, WORLD_SIZE, MASTER_*), its stdout and
// stderr into `log`.
pid_t start_rank(const std::vector<std::string> & args, int rank, int port, const std::string & log) {
    std::vector<std::string> env_text = {"RANK=" + std::to_string(rank), "WORLD_SIZE=2", "LOCAL_RANK=" + std::to_string(rank),
                                         "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + std::to_string(port)};
    std::vector<char *> env;
    for (auto & e : env_text) env.push_back(e.data());
    for (char ** e = environ; *e; ++e) {
        const std::string var(*e);
        if (var.rfind("RANK=", 0) != 0 && var.rfind("WORLD_SIZE=", 0) != 0 && var.rfind("MASTER_", 0) != 0) env.push_back(*e);
    }
    env.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    std::vector<char *> argv;
    for (const auto & a : args) argv.push_back(const_cast<char *>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = -1;
    posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), env.data());
    posix_spawn_file_actions_destroy(&actions);
    return pid;
}

std::string read_text(const std::string & path) {
    std::ifstream in(path);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Waits up to `seconds` for `pid`; its exit status (128 + signal), or -1 if it is still running.
int wait_for(pid_t pid, double seconds) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < deadline) {
        int status = 0;
        if (::waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return -1;
}

}  // namespace

// Two local ranks train a full-precision model as one process does: the same samples, the
// gradients averaged. After a few AdamW steps the weights agree to float summation order (ε large
// enough that Adam does not magnify that noise where a gradient is 0: the key bias).
TEST_F(CliTest, TwoRanksTrainLikeOneProcess) {
    BITVIT_REQUIRE_FASHION_MNIST();
    auto train = [&](const std::string & nproc) {
        const Result r = run({kBitvit, "train", "--model", "deit_nano_patch7_28", "--train-subset", "384", "--test-subset", "100",
                              "--epochs", "1", "--batch-size", "64", "--set", "optim.eps=1e-3", "--set", "optim.warmup_epochs=0",
                              "--set", "data.crop_padding=2", "--nproc", nproc, "--out", path("run" + nproc)});
        EXPECT_EQ(r.status, 0) << r.output;
        return r.output;
    };
    const std::string one = train("1"), two = train("2");
    const LoadedModel a = load_model(path("run1/checkpoint.pt")), b = load_model(path("run2/checkpoint.pt"));
    EXPECT_EQ(b.state.config.train.data_parallel, 2);
    for (const auto & p : a.model->named_parameters()) {
        const torch::Tensor & w = p.value();
        EXPECT_LE((w - b.model->named_parameters()[p.key()]).norm().item<double>(), 1e-5 * w.norm().item<double>()) << p.key();
    }
    // Rank 0 alone prints the evaluation: the two-rank log has as many accuracy lines as one process's.
    const auto lines_with = [](const std::string & text, const std::string & word) {
        std::istringstream in(text);
        int n = 0;
        for (std::string line; std::getline(in, line);) n += line.find(word) != std::string::npos;
        return n;
    };
    EXPECT_GE(lines_with(one, "accuracy:"), 1) << one;
    EXPECT_EQ(lines_with(one, "accuracy:"), lines_with(two, "accuracy:")) << two;
}

// A quantized two-stage run on two ranks, stopped (--stop-after, then Ctrl-C to the launcher) and
// resumed, ends with exactly the weights of an uninterrupted two-rank run; another rank count is refused.
TEST_F(CliTest, TwoRankRunResumesExactlyAndKeepsItsRankCount) {
    BITVIT_REQUIRE_FASHION_MNIST();
    const std::string recipe = path("two.toml");
    std::ofstream(recipe) << kTwoRankRecipe;
    const Result straight = run({kBitvit, "train", "--recipe", recipe, "--out", path("straight")});
    ASSERT_EQ(straight.status, 0) << straight.output;
    const Result first = run({kBitvit, "train", "--recipe", recipe, "--out", path("stopped"), "--stop-after", "1"});
    ASSERT_EQ(first.status, 0) << first.output;
    EXPECT_EQ(read_checkpoint_state(path("stopped/checkpoint.pt")).epoch, 1);
    expect_error(run({kBitvit, "train", "--resume", path("stopped"), "--nproc", "1"}), {"trained on 2 rank(s)", "--nproc 2"});
    const Result interrupted = run({kBitvit, "train", "--resume", path("stopped")}, "epoch 2/3 step 3/8");
    ASSERT_EQ(interrupted.status, 130) << interrupted.output;
    EXPECT_NE(interrupted.output.find("continue with: bitvit train --resume"), std::string::npos) << interrupted.output;
    const Result resumed = run({kBitvit, "train", "--resume", path("stopped")});
    ASSERT_EQ(resumed.status, 0) << resumed.output;
    expect_same_weights(path("straight/checkpoint.pt"), path("stopped/checkpoint.pt"));
}

// Ranks started as torchrun starts them: a rank killed mid-run makes the other stop with an error
// naming it at once; a rank that hangs (stopped) does so within --rank-timeout plus a few seconds.
TEST_F(CliTest, ADeadOrHungRankIsNamedByTheOthers) {
    BITVIT_REQUIRE_FASHION_MNIST();
    for (const int signal : {SIGKILL, SIGSTOP}) {
        const int port = 20000 + (::getpid() * 7 + signal) % 20000;
        const std::string out = path("run" + std::to_string(signal));
        const std::vector<std::string> args = {kBitvit, "train", "--model", "deit_nano_patch7_28", "--train-subset", "8192",
                                               "--test-subset", "100", "--epochs", "5", "--batch-size", "64", "--set",
                                               "train.log_every=1", "--rank-timeout", "5", "--out", out};
        const std::string log0 = out + "-0.log", log1 = out + "-1.log";
        const pid_t rank0 = start_rank(args, 0, port, log0), rank1 = start_rank(args, 1, port, log1);
        ASSERT_GT(rank0, 0);
        ASSERT_GT(rank1, 0);
        for (int i = 0; i < 600 && read_text(log0).find("step 3/") == std::string::npos; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        ASSERT_NE(read_text(log0).find("step 3/"), std::string::npos) << read_text(log0) << read_text(log1);
        ::kill(rank1, signal);
        const auto start = std::chrono::steady_clock::now();
        const int status = wait_for(rank0, 30);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        ::kill(rank1, SIGKILL);
        ::waitpid(rank1, nullptr, 0);
        if (status < 0) ::kill(rank0, SIGKILL);
        EXPECT_NE(status, 0) << read_text(log0);
        EXPECT_LE(seconds, signal == SIGKILL ? 10.0 : 15.0) << read_text(log0);
        const std::string text = read_text(log0);
        EXPECT_NE(text.find("rank 1 did not answer: died or hung"), std::string::npos) << text;
    }
}
