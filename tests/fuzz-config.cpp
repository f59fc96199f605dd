// Fuzz target for recipes and --set overrides: every shipped recipe, mutated at the token level
// (numbers replaced by extreme values, keys and brackets damaged, lines dropped or repeated), and
// random --set assignments, must parse into a validated config or throw ConfigError — never crash,
// hang or accept a value outside its range. Also base = chains that loop or vanish. ctest runs it
// under AddressSanitizer and UBSan for a bounded time; scripts/fuzz.sh runs it longer.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "fuzz-driver.h"
#include "train/config.h"

namespace fs = std::filesystem;
using namespace bitvit;

namespace {

const char * kValues[] = {"0", "-1", "1e308", "-1e308", "nan", "inf", "-inf", "9223372036854775807", "1e-320", "\"x\"",
                          "true", "[]", "[1, 2]", "{ name = \"sign\" }", "\"\"", "0.5", "100000"};
const char * kKeys[] = {"model.name", "model.depth", "model.embed_dim", "model.num_heads", "model.drop_path", "data.mean",
                        "data.std", "data.train_subset", "data.crop_padding", "optim.lr", "optim.min_lr", "optim.optimizer",
                        "optim.beta1", "optim.clip_grad", "train.epochs", "train.batch_size", "train.epoch_scale",
                        "train.data_parallel", "train.threads", "model.mlp_act", "model.mlp_clip", "stage.epochs", "x.y", "optim.lrr"};

std::string read_file(const fs::path & p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

std::string mutate(std::string text, std::mt19937_64 & rng) {
    if (text.empty()) return text;
    const size_t at = rng() % text.size();
    switch (rng() % 6) {
        case 0: {  // a number replaced by an extreme value
            const size_t digit = text.find_first_of("0123456789", at);
            if (digit == std::string::npos) break;
            size_t end = text.find_first_not_of("0123456789.e-", digit);
            text.replace(digit, (end == std::string::npos ? text.size() : end) - digit, kValues[rng() % std::size(kValues)]);
            break;
        }
        case 1: text.erase(at, 1 + rng() % 8); break;
        case 2: text.insert(at, std::string(1, "[]{}=\"#.\n,"[rng() % 10])); break;
        case 3: {  // a line repeated (duplicate keys, repeated [[stage]])
            const size_t begin = text.rfind('\n', at), end = text.find('\n', at);
            const size_t b = begin == std::string::npos ? 0 : begin + 1;
            text.insert(b, text.substr(b, (end == std::string::npos ? text.size() : end + 1) - b));
            break;
        }
        case 4: text.insert(at, std::string(rng() % 2 ? 300 : 40, '[')); break;  // deep nesting
        default: text[at] = static_cast<char>(rng() % 128); break;
    }
    return text;
}

// A parsed config must hold only values its readers allow (spot checks of the ranges).
void check_ranges(const TrainConfig & c) {
    bool ok = c.train.epochs >= 1 && c.train.epochs <= 100000 && c.train.batch_size >= 1 && c.optim.lr > 0 && std::isfinite(c.optim.lr) &&
              !c.stages.empty() && c.model.depth >= 0 && c.model.depth <= 256;
    for (double m : c.data.mean) ok = ok && std::isfinite(m);
    for (double s : c.data.std) ok = ok && s >= 1e-3;
    for (const auto & st : c.stages) ok = ok && st.epochs >= 1;
    if (!ok) {
        std::printf("fuzz-config: a config outside its ranges was accepted:\n%s\n", c.to_toml().c_str());
        std::abort();
    }
}

}  // namespace

int main(int argc, char ** argv) {
    const auto [seconds, seed] = bitvit::fuzz::parse_driver_args(argc, argv);
    std::mt19937_64 rng(seed);
    std::vector<std::string> recipes;
    for (const auto & entry : fs::recursive_directory_iterator(fs::path(BITVIT_SOURCE_DIR) / "recipes")) {
        if (entry.path().extension() == ".toml") recipes.push_back(read_file(entry.path()));
    }
    const std::string base = read_file(fs::path(BITVIT_SOURCE_DIR) / "recipes" / "base" / "quantized.toml");
    const fs::path dir = fs::temp_directory_path() / ("bitvit-fuzz-config-" + std::to_string(::getpid()));
    fs::create_directories(dir / "base");
    const auto stop = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    uint64_t inputs = 0, parsed = 0;
    while (std::chrono::steady_clock::now() < stop) {
        for (int batch = 0; batch < 32; ++batch, ++inputs) {
            std::string text = recipes[rng() % recipes.size()];
            const int edits = static_cast<int>(rng() % 4);
            for (int e = 0; e < edits; ++e) text = mutate(text, rng);
            std::vector<std::string> sets;
            for (int s = static_cast<int>(rng() % 3); s > 0; --s) sets.push_back(std::string(kKeys[rng() % std::size(kKeys)]) + "=" + kValues[rng() % std::size(kValues)]);
            // As a file (its base resolved, sometimes a mutated or looping one), and as text.
            std::ofstream(dir / "base" / "quantized.toml") << (rng() % 8 == 0 ? "base = \"quantized.toml\"\n" : mutate(base, rng));
            std::ofstream(dir / "r.toml") << text;
            parsed += fuzz::accepted<ConfigError>([&] { check_ranges(load_config_file((dir / "r.toml").string(), sets)); });
            if (text.find("base") == std::string::npos) parsed += fuzz::accepted<ConfigError>([&] { check_ranges(parse_config(text, "fuzz", sets)); });
        }
    }
    fs::remove_all(dir);
    return fuzz::report("fuzz-config", inputs, parsed, "parsed", seed);
}
