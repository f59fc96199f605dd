// Fuzz target for the torch.save pickle reader (format/torch-pickle): any byte string must either
// yield a state dict whose every view has a well-defined extent, or throw FormatError — never crash,
// recurse without bound, or read outside the bytes. Seeds are the pickles of the .pth files in
// tests/data (timm's reference models, and one with views, BUILD state and non-tensor entries),
// taken out of their zip archives; mutations favour pickle
// opcodes, so the stack machine's every path is reached.
//
// Built two ways, like fuzz-safetensors: a libFuzzer target (scripts/fuzz.sh) and, here, a driver
// under AddressSanitizer + UBSan that mutates the seeds for a bounded time (ctest).
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "format/torch-pickle.h"
#include "fuzz-driver.h"

using namespace bitvit::format;

static uint64_t g_accepted = 0;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    g_accepted += bitvit::fuzz::accepted<FormatError>([&] {
        const PickledStateDict dict = read_torch_state_dict({reinterpret_cast<const char *>(data), size}, "fuzz");
        for (const auto & [name, tensor] : dict.tensors) (void)storage_extent(tensor);
    });
    return 0;
}

#ifndef BITVIT_LIBFUZZER
namespace {

// The bytes of the stored (uncompressed) zip member whose name ends with `suffix`. torch.save writes
// its sizes after the data (a data descriptor), so they are read from the central directory entry
// (size at offset 20, name length 28, extra 30, comment 32, local header offset 42), the data's
// start from the local header (name and extra lengths at 26 and 28).
std::string stored_member(const std::string & zip, const std::string & suffix) {
    auto u16 = [&](size_t at) { uint16_t v; std::memcpy(&v, zip.data() + at, 2); return size_t{v}; };
    auto u32 = [&](size_t at) { uint32_t v; std::memcpy(&v, zip.data() + at, 4); return size_t{v}; };
    for (size_t at = zip.find("PK\x01\x02"); at != std::string::npos && at + 46 <= zip.size(); at = zip.find("PK\x01\x02", at + 4)) {
        const std::string name = zip.substr(at + 46, u16(at + 28));
        if (name.size() < suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
        const size_t local = u32(at + 42), size = u32(at + 20);
        if (local + 30 > zip.size()) break;
        const size_t begin = local + 30 + u16(local + 26) + u16(local + 28);
        if (begin + size <= zip.size()) return zip.substr(begin, size);
    }
    throw std::runtime_error("fuzz-torch-pickle: no stored " + suffix + " in a seed archive");
}

std::vector<std::string> seeds() {
    std::vector<std::string> out;
    for (const char * model : {"timm-reference/deit_32_p4_d48_rgb", "timm-reference/deit_32_p4_d48_rgb_distilled",
                               "timm-reference/swin_32_p2_w4_rgb", "torch-save/nested-views"}) {
        std::ifstream f(std::string(BITVIT_SOURCE_DIR) + "/tests/data/" + model + ".pth", std::ios::binary);
        const std::string zip((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        out.push_back(stored_member(zip, "data.pkl"));
        // Each seed is a readable state dict to begin with (a FormatError here fails the test).
        if (read_torch_state_dict(out.back(), model).tensors.empty()) throw std::runtime_error("fuzz-torch-pickle: empty seed");
    }
    return out;
}

// One random edit, biased towards the opcodes the reader interprets.
void mutate(std::string & d, std::mt19937_64 & rng) {
    static const char opcodes[] = "()]}teasuRbQN\x88\x89\x94" "0KMJqhrjX\x8c" "C\x8a" "G\x85\x86\x87\x80\x95.c";
    const size_t n = d.size();
    const auto pick = [&] { return n ? rng() % n : 0; };
    switch (rng() % 6) {
        case 0: if (n) d[pick()] ^= static_cast<char>(1u << (rng() % 8)); break;
        case 1: if (n) d[pick()] = opcodes[rng() % (sizeof opcodes - 1)]; break;
        case 2: d.insert(pick(), 1, opcodes[rng() % (sizeof opcodes - 1)]); break;
        case 3: if (n) d.erase(pick(), 1 + rng() % 16); break;
        case 4: d.resize(pick()); break;
        default: {  // repeat a slice somewhere else: nesting, memo reuse, duplicated keys
            if (n < 2) break;
            const size_t from = pick(), len = 1 + rng() % std::min<size_t>(64, n - from);
            d.insert(pick(), d.substr(from, len));
        }
    }
}

}  // namespace

int main(int argc, char ** argv) {
    const bitvit::fuzz::DriverArgs args = bitvit::fuzz::parse_driver_args(argc, argv);
    const uint64_t inputs = bitvit::fuzz::mutate_until(args, seeds(), 6, mutate, [](const std::string & d) {
        LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t *>(d.data()), d.size());
    });
    return bitvit::fuzz::report("fuzz-torch-pickle", inputs, g_accepted, "read as state dicts", args.seed);
}
#endif
