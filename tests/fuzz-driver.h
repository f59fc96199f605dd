// The fuzz drivers' shared command line: --seconds S (how long to mutate) and --seed N.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

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

}  // namespace bitvit::fuzz
