// Fuzz target for checkpoint loading (eval, export, resume): a small quantized checkpoint, mutated
// at the pickle level (storage offsets, sizes, strides and every other integer of data.pkl set to
// extreme values, pickle bytes flipped), at the archive level (records truncated) and byte by byte,
// must load into a model — and its optimiser state — or throw CheckpointError / ConfigError, never
// crash or read outside a tensor's storage. bitvit's loading code is built with AddressSanitizer
// and UBSan here; LibTorch itself is not instrumented. ctest runs it for a bounded time.
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "checkpoint-edit.h"
#include "fuzz-driver.h"
#include "train/checkpoint.h"
#include "train/optimizer.h"

namespace fs = std::filesystem;
using namespace bitvit;
using testing_support::ArchiveRecords;

namespace {

std::string seed_checkpoint(const fs::path & dir) {
    CheckpointState state;
    state.config = parse_config("[model]\nname = \"deit_nano_patch7_28\"\ndepth = 1\n[[stage]]\nepochs = 2\n[stage.quantizers]\n"
                                "\"attn.q\" = \"elastic_signed\"\n\"mlp.fc1.weight\" = { name = \"lsq\", per_channel = true }\n", "seed");
    state.shape = DataShape{10, 1, 28};
    state.epoch = state.stage_epoch = 1;
    VisionModel model = build_stage_model(state.config, state.shape, 0);
    model->forward(torch::randn({2, 1, 28, 28}));
    auto optimizer = make_optimizer(state.config.stages[0].optim, *model);
    model->forward(torch::randn({2, 1, 28, 28})).sum().backward();
    optimizer->step();  // so the optimiser state holds tensors
    const std::string path = (dir / "seed.pt").string();
    save_checkpoint(path, state, *model, optimizer.get());
    return path;
}

// What resume does with a checkpoint: state, model, optimiser state. Returns whether it loaded.
bool load(const std::string & path) {
    try {
        LoadedModel loaded = load_model(path);
        auto optimizer = make_optimizer(loaded.state.config.stages.at(static_cast<size_t>(loaded.state.stage)).optim, *loaded.model);
        load_checkpoint_weights(path, *loaded.model, optimizer.get(), true);
        volatile float sink = loaded.model->forward(torch::zeros({1, 1, 28, 28})).sum().item<float>();
        (void)sink;
        return true;
    } catch (const CheckpointError &) {
    } catch (const ConfigError &) {
    }
    return false;
}

void mutate_pickle(ArchiveRecords & a, std::mt19937_64 & rng) {
    std::string & p = a.pickle();
    const auto ints = testing_support::pickle_ints(p);
    static const int32_t extremes[] = {-1, 0, 1, 7, 1 << 20, 1 << 30, -(1 << 30), 0x7FFFFFFF};
    switch (rng() % 3) {
        case 0: {  // a storage offset: past its storage or negative
            std::vector<size_t> offsets;
            for (size_t i = 0; i < ints.size(); ++i) {
                if (ints[i].storage_offset) offsets.push_back(i);
            }
            if (!offsets.empty()) testing_support::set_pickle_int(p, ints[offsets[rng() % offsets.size()]], extremes[rng() % std::size(extremes)]);
            break;
        }
        case 1:  // any integer: a size, a stride, an epoch, a numel
            if (!ints.empty()) testing_support::set_pickle_int(p, ints[rng() % ints.size()], extremes[rng() % std::size(extremes)]);
            break;
        default: p[rng() % p.size()] ^= static_cast<char>(1u << (rng() % 8)); break;
    }
}

}  // namespace

int main(int argc, char ** argv) {
    const auto [seconds, seed] = fuzz::parse_driver_args(argc, argv);
    std::mt19937_64 rng(seed);
    torch::manual_seed(0);
    const fs::path dir = fs::temp_directory_path() / ("bitvit-fuzz-ckpt-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    const std::string seed_path = seed_checkpoint(dir), mutated = (dir / "m.pt").string();
    if (!load(seed_path)) {
        std::printf("fuzz-checkpoint: the seed checkpoint does not load\n");
        return 1;
    }
    const ArchiveRecords original = ArchiveRecords::read(seed_path);
    std::ifstream in(seed_path, std::ios::binary);
    const std::string file_bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto stop = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    uint64_t inputs = 0, loaded = 0;
    while (std::chrono::steady_clock::now() < stop) {
        ++inputs;
        if (rng() % 4 == 0) {  // byte level: the zip itself damaged
            std::string bytes = file_bytes;
            if (rng() % 2) {
                bytes.resize(rng() % bytes.size());
            } else {
                bytes[rng() % bytes.size()] ^= static_cast<char>(1u << (rng() % 8));
            }
            std::ofstream(mutated, std::ios::binary) << bytes;
        } else {
            ArchiveRecords a = original;
            const int edits = 1 + static_cast<int>(rng() % 3);
            for (int e = 0; e < edits; ++e) mutate_pickle(a, rng);
            if (rng() % 8 == 0) {  // a storage record cut short
                auto & record = a.records[rng() % a.records.size()].second;
                record.resize(record.size() / 2);
            }
            a.write(mutated);
        }
        loaded += load(mutated);
    }
    fs::remove_all(dir);
    std::printf("fuzz-checkpoint: %llu inputs (%llu loaded), 0 crashes (seed %llu)\n", static_cast<unsigned long long>(inputs),
                static_cast<unsigned long long>(loaded), static_cast<unsigned long long>(seed));
    return 0;
}
