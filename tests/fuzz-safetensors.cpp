// Fuzz target for the safetensors loader: any byte string must either parse into a file whose every
// tensor lies inside the data, or throw FormatError — never crash, hang or read out of bounds.
//
// Built two ways: as a libFuzzer target (clang -fsanitize=fuzzer,address: scripts/fuzz.sh), and with
// its own driver (this file's main, under AddressSanitizer with gcc) that mutates valid seed files
// for a bounded time; ctest runs the latter.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "format/safetensors.h"
#include "fuzz-driver.h"

using namespace bitvit::format;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    try {
        const SafetensorsFile f = SafetensorsFile::parse(std::vector<uint8_t>(data, data + size), "fuzz");
        volatile uint8_t sink = 0;
        for (const auto & [name, info] : f.tensors()) {
            const uint8_t * p = f.data(name);
            for (uint64_t i = info.begin; i < info.end; ++i) sink = sink ^ p[i - info.begin];  // touch every byte
        }
        (void)sink;
    } catch (const FormatError &) {
    }
    return 0;
}

#ifndef BITVIT_LIBFUZZER
namespace {

std::vector<std::vector<uint8_t>> seeds() {
    std::vector<std::vector<uint8_t>> out;
    SafetensorsWriter a;
    const float f[6] = {1, 2, 3, 4, 5, 6};
    const uint64_t bits[2] = {0xDEADBEEFull, 0x1ull};
    a.add("w", DType::F32, {2, 3}, f, sizeof f);
    a.add("bits", DType::U64, {2}, bits, sizeof bits);
    a.set_metadata("format", "bitvit-packed");
    out.push_back(a.serialize());
    SafetensorsWriter b;
    const uint8_t u[3] = {1, 2, 3};
    b.add("empty", DType::F16, {0, 4}, nullptr, 0);
    b.add("u", DType::U8, {3}, u, 3);
    out.push_back(b.serialize());
    return out;
}

// One random edit: flip a byte, overwrite with an interesting value, insert, delete, truncate, or
// splice a JSON-ish token into the header.
void mutate(std::vector<uint8_t> & d, std::mt19937_64 & rng) {
    static const char * tokens[] = {"\"", "{", "}", "[", "]", ",", ":", "-1", "18446744073709551615", "1e309",
                                    "\"F32\"", "\"data_offsets\"", "\"shape\"", "null", "\\u0000", "9999999999"};
    const size_t n = d.size();
    switch (rng() % 7) {
        case 0: if (n) d[rng() % n] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
        case 1: if (n) d[rng() % n] = static_cast<uint8_t>(rng() % 4 == 0 ? 0xFF : rng() % 4 == 1 ? 0 : rng()); break;
        case 2: d.insert(d.begin() + static_cast<std::ptrdiff_t>(n ? rng() % n : 0), static_cast<uint8_t>(rng())); break;
        case 3: if (n) d.erase(d.begin() + static_cast<std::ptrdiff_t>(rng() % n)); break;
        case 4: d.resize(n ? rng() % n : 0); break;
        case 5: {
            const char * t = tokens[rng() % (sizeof tokens / sizeof *tokens)];
            const size_t at = 8 + (n > 8 ? rng() % (n - 8) : 0);
            if (at <= d.size()) d.insert(d.begin() + static_cast<std::ptrdiff_t>(at), t, t + std::strlen(t));
            break;
        }
        default: if (n >= 8) for (int i = 0; i < 8; ++i) d[static_cast<size_t>(i)] = static_cast<uint8_t>(rng() % 3 == 0 ? rng() : d[static_cast<size_t>(i)]);
    }
}

}  // namespace

int main(int argc, char ** argv) {
    const bitvit::fuzz::DriverArgs args = bitvit::fuzz::parse_driver_args(argc, argv);
    const uint64_t inputs = bitvit::fuzz::mutate_until(args, seeds(), 8, mutate, [](const std::vector<uint8_t> & d) {
        LLVMFuzzerTestOneInput(d.data(), d.size());
    });
    // A crash or sanitizer report aborts before this line; reaching it means every input was handled.
    std::printf("fuzz-safetensors: %llu inputs, 0 crashes (seed %llu)\n", static_cast<unsigned long long>(inputs),
                static_cast<unsigned long long>(args.seed));
    return 0;
}
#endif
