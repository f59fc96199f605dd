// c10d data parallelism in one process: two ranks on two threads meet over loopback, and what they
// compute together equals what one process computes on the whole batch. (The trainer's ranks run as
// processes; test-cli.cpp launches those.)
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <exception>
#include <functional>
#include <map>
#include <optional>
#include <vector>
#include <thread>

#include "train/deit.h"
#include "train/distill.h"
#include "train/distributed.h"

using namespace bitvit;

namespace {

// Runs `body(group)` as ranks 0 and 1 of a two-rank group, one thread each; rethrows a rank's error.
void on_two_ranks(const std::function<void(ProcessGroup &)> & body) {
    const int port = free_loopback_port();
    std::exception_ptr errors[2];
    std::vector<std::thread> ranks;
    for (int r = 0; r < 2; ++r) {
        ranks.emplace_back([&, r] {
            try {
                ProcessGroup group(RankEnv{r, 2, r, 2, "127.0.0.1", port, true}, std::chrono::seconds(60));
                body(group);
            } catch (...) {
                errors[r] = std::current_exception();
            }
        });
    }
    for (auto & t : ranks) t.join();
    for (const auto & e : errors) {
        if (e) std::rethrow_exception(e);
    }
}

}  // namespace

TEST(Distributed, BroadcastAndSumAreRankZerosAndTheTotal) {
    on_two_ranks([](ProcessGroup & group) {
        const float r = static_cast<float>(group.rank());
        torch::Tensor weights = torch::full({3, 2}, r + 0.25f);
        torch::Tensor flag = torch::full({2}, group.rank() == 0);
        group.broadcast({weights, flag});
        EXPECT_TRUE(torch::equal(weights, torch::full({3, 2}, 0.25f)));
        EXPECT_TRUE(flag.all().item<bool>());
        EXPECT_EQ(group.sum({1.5 + r, 10.0}), (std::vector<double>{4.0, 20.0}));
    });
}

// One step's gradient: each rank backpropagates its half of the batch, the all-reduce averages
// them, and every rank then holds the whole batch's gradient (up to float summation order: 1e-5).
// A full-precision student with hard and ranking distillation, so the loss is smooth. The buckets
// are small so that several are in flight at once, and every one of them is sent while backward
// runs, before finish().
TEST(Distributed, TwoRanksGradientsEqualTheWholeBatchGradient) {
    const DeitConfig config = deit_config("deit_nano_patch7_28");
    DistillSection distill;
    distill.kind = "hard";
    distill.rank = 0.5;
    distill.rank_top_k = 4;
    torch::manual_seed(13);
    const torch::Tensor images = torch::randn({12, 1, 28, 28}), labels = torch::randint(0, 10, {12});
    // One teacher and student per rank and one for the whole batch (autograd state lives in the
    // modules), made before the threads start: the random generator is global.
    std::vector<VisionModel> teachers, students;
    for (int copy = 0; copy < 3; ++copy) {
        torch::manual_seed(11);
        teachers.emplace_back(Deit(config).ptr());
        torch::manual_seed(12);
        students.emplace_back(Deit(config).ptr());
        teachers.back()->eval();
        teachers.back()->set_capture(true);
        students.back()->set_capture(true);
    }
    auto gradients = [&](int copy, const torch::Tensor & x, const torch::Tensor & y, ProcessGroup * group) {
        VisionModel & student = students[copy];
        std::optional<GradientAverager> averager;
        if (group) averager.emplace(*group, student->parameters(), 64 << 10);
        const torch::Tensor loss = stage_loss(student, &teachers[copy], x, y, distill, 0.1).loss;
        if (averager) averager->begin({loss.item<double>()});
        loss.backward();
        if (averager) {
            EXPECT_GT(averager->bucket_count(), 2u);
            EXPECT_EQ(averager->buckets_started(), averager->bucket_count()) << "buckets left for after backward";
            averager->finish();
        }
        std::map<std::string, torch::Tensor> grads;
        for (const auto & p : student->named_parameters()) grads[p.key()] = p.value().grad().clone();
        return grads;
    };
    const auto whole = gradients(2, images, labels, nullptr);
    std::map<std::string, torch::Tensor> per_rank[2];
    on_two_ranks([&](ProcessGroup & group) {
        const int64_t r = group.rank();
        per_rank[r] = gradients(static_cast<int>(r), images.narrow(0, 6 * r, 6), labels.narrow(0, 6 * r, 6), &group);
    });
    for (const auto & [name, g] : whole) {
        EXPECT_TRUE(torch::equal(per_rank[0].at(name), per_rank[1].at(name))) << name << ": the ranks disagree";
        EXPECT_LE((g - per_rank[0].at(name)).norm().item<double>(), 1e-5 * g.norm().item<double>() + 1e-12) << name;
    }
}

// Three steps through one averager, exact in float32 (small integers halved): a parameter that
// gets no gradient keeps none, one that gets it late (its bucket waits for finish()) and the step's
// metrics are averaged and summed; gradients left from a step are refused before the next.
TEST(Distributed, AveragerKeepsUnusedParametersBareAndSumsMetrics) {
    on_two_ranks([](ProcessGroup & group) {
        const float r = static_cast<float>(group.rank());
        torch::Tensor first = torch::zeros({3}, torch::requires_grad()), unused = torch::zeros({5}, torch::requires_grad()),
                      last = torch::zeros({2, 2}, torch::requires_grad());
        GradientAverager averager(group, {first, unused, last}, 8);  // one parameter a bucket
        ASSERT_EQ(averager.bucket_count(), 3u);
        for (int step = 1; step <= 3; ++step) {
            for (auto * p : {&first, &unused, &last}) p->mutable_grad() = torch::Tensor();
            averager.begin({r + step, 1.0});
            const torch::Tensor loss = (first * torch::tensor({1.0f, 2.0f, 3.0f}) * (r + 1) * step).sum() +
                                       (last * (r + 2)).sum();
            loss.backward();
            EXPECT_EQ(averager.buckets_started(), 1u) << "buckets go in order: the unused one holds the first back";
            EXPECT_EQ(averager.finish(), (std::vector<double>{1.0 + 2 * step, 2.0}));
            EXPECT_TRUE(torch::equal(first.grad(), torch::tensor({1.5f, 3.0f, 4.5f}) * step));
            EXPECT_FALSE(unused.grad().defined());
            EXPECT_TRUE(torch::equal(last.grad(), torch::full({2, 2}, 2.5f)));
        }
        EXPECT_THROW(averager.begin({}), std::logic_error);
    });
}

TEST(Distributed, EnvironmentErrorsNameTheVariable) {
    ::setenv("RANK", "1", 1);
    ::unsetenv("WORLD_SIZE");
    EXPECT_THROW(
        try { rank_env_from_environment(); } catch (const DistributedError & e) {
            EXPECT_NE(std::string(e.what()).find("WORLD_SIZE is not set"), std::string::npos) << e.what();
            throw;
        },
        DistributedError);
    ::setenv("WORLD_SIZE", "1", 1);
    EXPECT_THROW(rank_env_from_environment(), DistributedError);  // RANK 1 of 1
    ::setenv("WORLD_SIZE", "two", 1);
    EXPECT_THROW(rank_env_from_environment(), DistributedError);
    ::unsetenv("RANK");
    ::unsetenv("WORLD_SIZE");
    EXPECT_FALSE(rank_env_from_environment().from_environment);
}
