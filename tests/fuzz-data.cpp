// Fuzz target for the data readers: IDX image and label files (plain and gzip), CIFAR batches and
// image files (PNG, BMP, JPEG through stb_image). Every mutated file must load or throw DataError —
// never crash, hang or read out of bounds. ctest runs it under AddressSanitizer and UBSan for a
// bounded time; scripts/fuzz.sh runs it longer.
#include <stb_image_write.h>
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "data/image-dataset.h"
#include "fuzz-driver.h"

namespace fs = std::filesystem;
using namespace bitvit::data;
using Bytes = std::vector<uint8_t>;

namespace {

Bytes idx_file(uint8_t dims, std::vector<uint32_t> sizes, size_t payload, std::mt19937_64 & rng) {
    Bytes out = {0, 0, 0x08, dims};
    for (uint32_t d : sizes) {
        for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<uint8_t>(d >> s));
    }
    for (size_t i = 0; i < payload; ++i) out.push_back(static_cast<uint8_t>(rng() % (dims == 1 ? 10 : 256)));
    return out;
}

Bytes gzip(const Bytes & plain) {
    Bytes out(compressBound(plain.size()) + 64);
    z_stream z{};
    deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);  // +16: gzip framing
    z.next_in = const_cast<Bytef *>(plain.data());
    z.avail_in = static_cast<uInt>(plain.size());
    z.next_out = out.data();
    z.avail_out = static_cast<uInt>(out.size());
    deflate(&z, Z_FINISH);
    out.resize(z.total_out);
    deflateEnd(&z);
    return out;
}

Bytes encoded_image(const char * kind, std::mt19937_64 & rng) {
    std::vector<uint8_t> pixels(8 * 6 * 3);
    for (auto & p : pixels) p = static_cast<uint8_t>(rng());
    Bytes out;
    auto sink = [](void * ctx, void * data, int size) {
        auto * o = static_cast<Bytes *>(ctx);
        o->insert(o->end(), static_cast<uint8_t *>(data), static_cast<uint8_t *>(data) + size);
    };
    if (std::string(kind) == "png") stbi_write_png_to_func(sink, &out, 8, 6, 3, pixels.data(), 24);
    if (std::string(kind) == "bmp") stbi_write_bmp_to_func(sink, &out, 8, 6, 3, pixels.data());
    if (std::string(kind) == "jpg") stbi_write_jpg_to_func(sink, &out, 8, 6, 3, pixels.data(), 80);
    return out;
}

void mutate(Bytes & b, std::mt19937_64 & rng) {
    if (b.empty()) return;
    switch (rng() % 5) {
        case 0: b[rng() % b.size()] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
        case 1: b.resize(rng() % b.size()); break;  // truncated
        case 2: b.insert(b.begin() + static_cast<std::ptrdiff_t>(rng() % b.size()), static_cast<uint8_t>(rng())); break;
        case 3: {  // a header integer set to an extreme
            const size_t at = rng() % std::min<size_t>(b.size(), 16);
            b[at] = static_cast<uint8_t>(rng() % 2 ? 0xFF : 0x00);
            break;
        }
        default: b.resize(b.size() + rng() % 64, static_cast<uint8_t>(rng())); break;  // trailing bytes
    }
}

void write(const std::string & path, const Bytes & b) {
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char *>(b.data()), static_cast<std::streamsize>(b.size()));
}

}  // namespace

int main(int argc, char ** argv) {
    const auto [seconds, seed] = bitvit::fuzz::parse_driver_args(argc, argv);
    std::mt19937_64 rng(seed);
    const fs::path dir = fs::temp_directory_path() / ("bitvit-fuzz-data-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    const std::string images = (dir / "i").string(), labels = (dir / "l").string(), cifar = (dir / "c.bin").string(),
                      picture = (dir / "p").string();
    const Bytes idx_images = idx_file(3, {6, 5, 4}, 6 * 5 * 4, rng), idx_labels = idx_file(1, {6}, 6, rng);
    Bytes cifar_seed;
    for (int r = 0; r < 3; ++r) {
        cifar_seed.push_back(static_cast<uint8_t>(r));
        for (int p = 0; p < 3072; ++p) cifar_seed.push_back(static_cast<uint8_t>(rng()));
    }
    const Bytes pictures[] = {encoded_image("png", rng), encoded_image("bmp", rng), encoded_image("jpg", rng)};
    const auto stop = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    uint64_t inputs = 0, loaded = 0;
    while (std::chrono::steady_clock::now() < stop) {
        for (int batch = 0; batch < 16; ++batch, ++inputs) {
            const bool compressed = rng() % 2;
            Bytes a = idx_images, b = idx_labels, c = cifar_seed, p = pictures[rng() % 3];
            for (Bytes * x : {&a, &b, &c, &p}) {
                const int edits = static_cast<int>(rng() % 3);
                for (int e = 0; e < edits; ++e) mutate(*x, rng);
            }
            write(images, compressed ? gzip(a) : a);
            write(labels, compressed ? gzip(b) : b);
            if (compressed && rng() % 4 == 0) {  // a corrupt gzip stream (CRC, length, deflate data)
                Bytes z = gzip(a);
                mutate(z, rng);
                write(images, z);
            }
            write(cifar, c);
            write(picture, p);
            loaded += bitvit::fuzz::accepted<DataError>([&] { read_idx(images, labels); });
            loaded += bitvit::fuzz::accepted<DataError>([&] { read_cifar({cifar}, rng() % 2 ? CifarVariant::cifar10 : CifarVariant::cifar100); });
            loaded += bitvit::fuzz::accepted<DataError>([&] { read_image_file(picture, 1 + 2 * static_cast<int64_t>(rng() % 2), 7, 9); });
        }
    }
    fs::remove_all(dir);
    return bitvit::fuzz::report("fuzz-data", inputs, loaded, "read", seed);
}
