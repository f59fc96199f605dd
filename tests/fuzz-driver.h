// The fuzz drivers' shared command line: --seconds S (how long to mutate) and --seed N.
#pragma once

#include <cstdint>
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

}  // namespace bitvit::fuzz
