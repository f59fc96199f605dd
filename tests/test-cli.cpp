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
#include <thread>

#include "require-data.h"
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
