// The fuzz drivers' shared command line: --seconds S (how long to mutate) and --seed N.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace bitvit::fuzz {

struct DriverArgs {
    double seconds = 10;
    uint64_t seed = 1;
};

inline DriverArgs parse_driver_args(int argc, char ** argv) {
    DriverArgs a;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (std::string(argv[i]) == "--seconds") a.seconds = std::stod(argv[i + 1]);
        if (std::string(argv[i]) == "--seed") a.seed = std::stoull(argv[i + 1]);
    }
    return a;
}

// Runs one load of a mutated input: true if it was accepted, false if it was refused with the loader's
// own error type. Anything else (another exception, a crash) escapes and fails the fuzzer.
template <class RefusalError>
bool accepted(const std::function<void()> & load) {
    try {
        load();
        return true;
    } catch (const RefusalError &) {
        return false;
    }
}

// Until args.seconds have passed: takes a random corpus member, applies 1 … max_edits random edits
// (mutate(input, rng)) and runs target(input). Returns the number of inputs run.
template <class Input, class Mutate, class Target>
uint64_t mutate_until(const DriverArgs & args, const std::vector<Input> & corpus, int max_edits, Mutate mutate, Target target) {
    std::mt19937_64 rng(args.seed);
    const auto stop = std::chrono::steady_clock::now() + std::chrono::duration<double>(args.seconds);
    uint64_t inputs = 0;
    while (std::chrono::steady_clock::now() < stop) {
        for (int batch = 0; batch < 64; ++batch, ++inputs) {
            Input input = corpus[rng() % corpus.size()];
            const int edits = 1 + static_cast<int>(rng() % static_cast<uint64_t>(max_edits));
            for (int e = 0; e < edits; ++e) mutate(input, rng);
            target(input);
        }
    }
    return inputs;
}

// The driver's last line and exit code: 1 when no input was accepted (the seeds no longer parse, so
// the mutations never reach past the first checks), else 0. A crash never gets here.
inline int report(const char * name, uint64_t inputs, uint64_t accepted, const char * accepted_what, uint64_t seed) {
    if (accepted == 0) {
        std::printf("%s: %llu inputs and none %s: the seeds are broken\n", name, static_cast<unsigned long long>(inputs), accepted_what);
        return 1;
    }
    std::printf("%s: %llu inputs (%llu %s), 0 crashes (seed %llu)\n", name, static_cast<unsigned long long>(inputs),
                static_cast<unsigned long long>(accepted), accepted_what, static_cast<unsigned long long>(seed));
    return 0;
}

}  // namespace bitvit::fuzz
