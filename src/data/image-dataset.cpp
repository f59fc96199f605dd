#include "image-dataset.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <array>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <random>
#include <sstream>

#include <stb_image.h>
#include <stb_image_resize.h>

namespace fs = std::filesystem;

namespace bitvit::data {
namespace {

// Upper bound on the bytes one data file may declare; a corrupt header must not make us allocate
// terabytes before the short read is noticed.
constexpr uint64_t kMaxDeclaredBytes = uint64_t{1} << 34;

// Reads a whole file, gzip-compressed or plain (zlib passes plain files through), in chunks, so a
// header that lies about the size fails on the short read instead of on a giant allocation.
class CompressedReader {
  public:
    explicit CompressedReader(const std::string & path) : path_(path) {
        if (!fs::exists(path)) throw DataError(path + ": file not found");
        file_ = gzopen(path.c_str(), "rb");
        if (file_ == nullptr) throw DataError(path + ": cannot open");
    }
    ~CompressedReader() { gzclose(file_); }
    CompressedReader(const CompressedReader &) = delete;
    CompressedReader & operator=(const CompressedReader &) = delete;

    // Reads exactly n bytes or throws, naming `what` and the offset where data ran out.
    std::vector<uint8_t> read_exact(uint64_t n, const char * what) {
        std::vector<uint8_t> out;
        out.reserve(static_cast<size_t>(std::min<uint64_t>(n, uint64_t{64} << 20)));
        constexpr unsigned kChunk = 1u << 20;
        std::vector<uint8_t> chunk(kChunk);
        while (out.size() < n) {
            const unsigned want = static_cast<unsigned>(std::min<uint64_t>(kChunk, n - out.size()));
            const int got = gzread(file_, chunk.data(), want);
            if (got < 0) {
                int errnum = 0;
                const char * msg = gzerror(file_, &errnum);
                throw DataError(path_ + ": corrupt data while reading " + what + " at byte " +
                                std::to_string(offset_ + out.size()) + " (" + msg + ")");
            }
            if (got == 0) {
                throw DataError(path_ + ": truncated: expected " + std::to_string(n) + " bytes of " + what +
                                " at byte " + std::to_string(offset_) + ", file ends after " +
                                std::to_string(out.size()));
            }
            out.insert(out.end(), chunk.begin(), chunk.begin() + got);
        }
        offset_ += n;
        return out;
    }

    // Whether the stream has ended. A read error here is no end: gzip verifies its CRC and length
    // trailer only when the data runs out, so a corrupt file fails exactly at this read.
    bool at_end() {
        uint8_t probe = 0;
        const int got = gzread(file_, &probe, 1);
        if (got < 0) {
            int errnum = 0;
            const char * msg = gzerror(file_, &errnum);
            throw DataError(path_ + ": corrupt data at the end of the file (" + msg + ")");
        }
        return got == 0;
    }

  private:
    std::string path_;
    gzFile file_ = nullptr;
    uint64_t offset_ = 0;
};

uint32_t big_endian_u32(const uint8_t * p) {
    return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Reads an IDX header (magic 0x0000 08 <ndims>, then ndims big-endian u32 dimensions) and returns
// the dimensions; only unsigned-byte data (type 0x08) is accepted.
std::vector<uint64_t> read_idx_header(CompressedReader & in, const std::string & path, int expected_dims) {
    const auto magic = in.read_exact(4, "IDX magic");
    if (magic[0] != 0 || magic[1] != 0) {
        std::ostringstream msg;
        msg << path << ": not an IDX file (magic bytes " << int{magic[0]} << ", " << int{magic[1]}
            << " should be 0, 0)";
        throw DataError(msg.str());
    }
    if (magic[2] != 0x08) {
        throw DataError(path + ": IDX element type " + std::to_string(magic[2]) +
                        " is not supported (only 0x08, unsigned byte)");
    }
    if (magic[3] != expected_dims) {
        throw DataError(path + ": IDX file has " + std::to_string(magic[3]) + " dimensions, expected " +
                        std::to_string(expected_dims));
    }
    const auto raw = in.read_exact(4 * static_cast<uint64_t>(expected_dims), "IDX dimensions");
    std::vector<uint64_t> dims(expected_dims);
    uint64_t total = 1;
    for (int i = 0; i < expected_dims; ++i) {
        dims[i] = big_endian_u32(raw.data() + 4 * i);
        if (dims[i] == 0) throw DataError(path + ": IDX dimension " + std::to_string(i) + " is 0");
        total *= dims[i];
        if (total > kMaxDeclaredBytes) throw DataError(path + ": IDX header declares an implausible size");
    }
    return dims;
}

std::vector<std::string> numbered_class_names(int64_t n) {
    std::vector<std::string> names(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) names[i] = std::to_string(i);
    return names;
}

int64_t count_classes(const std::vector<int32_t> & labels) {
    return labels.empty() ? 0 : int64_t{*std::max_element(labels.begin(), labels.end())} + 1;
}

// Reads an optional file of class names, one per line (CIFAR's batches.meta.txt); empty if absent.
std::vector<std::string> read_name_list(const fs::path & path) {
    std::vector<std::string> names;
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
        if (!line.empty()) names.push_back(line);
    }
    return names;
}

std::string first_existing(const fs::path & root, std::initializer_list<const char *> names) {
    for (const char * name : names) {
        if (fs::exists(root / name)) return (root / name).string();
    }
    std::string tried;
    for (const char * name : names) tried += (tried.empty() ? "" : ", ") + std::string(name);
    throw DataError(root.string() + ": none of " + tried + " found");
}

ImageDataset load_idx_dir(const fs::path & root, Split split) {
    if (split == Split::train) {
        return read_idx(first_existing(root, {"train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"}),
                        first_existing(root, {"train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte"}));
    }
    return read_idx(first_existing(root, {"t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"}),
                    first_existing(root, {"t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte"}));
}

ImageDataset load_cifar_dir(const fs::path & root, Split split, CifarVariant variant) {
    std::vector<std::string> files;
    if (variant == CifarVariant::cifar10) {
        if (split == Split::train) {
            for (int i = 1; i <= 5; ++i) files.push_back((root / ("data_batch_" + std::to_string(i) + ".bin")).string());
        } else {
            files.push_back((root / "test_batch.bin").string());
        }
    } else {
        files.push_back((root / (split == Split::train ? "train.bin" : "test.bin")).string());
    }
    ImageDataset data = read_cifar(files, variant);
    const auto names = read_name_list(root / (variant == CifarVariant::cifar10 ? "batches.meta.txt"
                                                                                : "fine_label_names.txt"));
    if (static_cast<int64_t>(names.size()) >= data.num_classes()) data.class_names = names;
    return data;
}

}  // namespace

ImageDataset read_idx(const std::string & images_path, const std::string & labels_path) {
    CompressedReader images_in(images_path);
    const auto image_dims = read_idx_header(images_in, images_path, 3);
    CompressedReader labels_in(labels_path);
    const auto label_dims = read_idx_header(labels_in, labels_path, 1);
    if (image_dims[0] != label_dims[0]) {
        throw DataError(images_path + " has " + std::to_string(image_dims[0]) + " images but " + labels_path +
                        " has " + std::to_string(label_dims[0]) + " labels");
    }
    ImageDataset data;
    data.channels = 1;
    data.height = static_cast<int64_t>(image_dims[1]);
    data.width = static_cast<int64_t>(image_dims[2]);
    data.pixels = images_in.read_exact(image_dims[0] * image_dims[1] * image_dims[2], "image pixels");
    if (!images_in.at_end()) throw DataError(images_path + ": unexpected bytes after the last image");
    const auto raw_labels = labels_in.read_exact(label_dims[0], "labels");
    if (!labels_in.at_end()) throw DataError(labels_path + ": unexpected bytes after the last label");
    data.labels.assign(raw_labels.begin(), raw_labels.end());
    data.class_names = numbered_class_names(count_classes(data.labels));
    data.origin = images_path;
    return data;
}

ImageDataset read_cifar(const std::vector<std::string> & batch_paths, CifarVariant variant) {
    constexpr int64_t kPixels = 3 * 32 * 32;
    const int64_t label_bytes = variant == CifarVariant::cifar10 ? 1 : 2;
    const int64_t record = label_bytes + kPixels;
    ImageDataset data;
    data.channels = 3;
    data.height = 32;
    data.width = 32;
    for (const auto & path : batch_paths) {
        if (!fs::exists(path)) throw DataError(path + ": file not found");
        const auto bytes = static_cast<int64_t>(fs::file_size(path));
        if (bytes == 0 || bytes % record != 0) {
            throw DataError(path + ": size " + std::to_string(bytes) + " is not a positive multiple of the " +
                            std::to_string(record) + "-byte CIFAR record (truncated or wrong variant)");
        }
        std::ifstream in(path, std::ios::binary);
        std::vector<uint8_t> raw(static_cast<size_t>(bytes));
        if (!in.read(reinterpret_cast<char *>(raw.data()), bytes)) throw DataError(path + ": read failed");
        const int64_t n = bytes / record;
        for (int64_t i = 0; i < n; ++i) {
            const uint8_t * rec = raw.data() + i * record;
            const int32_t label = rec[label_bytes - 1];  // CIFAR-100: <coarse><fine>, we train on fine
            const int32_t max_label = variant == CifarVariant::cifar10 ? 9 : 99;
            if (label > max_label) {
                throw DataError(path + ": record " + std::to_string(i) + " has label " + std::to_string(label) +
                                ", above " + std::to_string(max_label));
            }
            data.labels.push_back(label);
            data.pixels.insert(data.pixels.end(), rec + label_bytes, rec + record);
        }
    }
    data.class_names = numbered_class_names(variant == CifarVariant::cifar10 ? 10 : 100);
    data.origin = batch_paths.empty() ? "" : batch_paths.front();
    return data;
}

namespace {

// timm's eval transform on interleaved H×W×C pixels: shorter side to floor(min(height, width) /
// crop_pct) (the longer side scaled alike, rounded), Catmull-Rom resampling, then the centre crop.
std::vector<uint8_t> resize_and_centre_crop(const stbi_uc * pixels, int w, int h, int64_t channels, int64_t height,
                                            int64_t width, double crop_pct, const std::string & path) {
    const auto scale_size = static_cast<int64_t>(std::floor(static_cast<double>(std::min(height, width)) / crop_pct));
    const bool wide = w >= h;
    const double ratio = static_cast<double>(wide ? w : h) / static_cast<double>(wide ? h : w);
    const auto longer = static_cast<int64_t>(std::llround(static_cast<double>(scale_size) * ratio));
    const int64_t rw = wide ? longer : scale_size, rh = wide ? scale_size : longer;
    if (rw < width || rh < height || rw > 65536 || rh > 65536) {
        throw DataError(path + ": cannot resize a " + std::to_string(w) + "×" + std::to_string(h) + " image for a " +
                        std::to_string(width) + "×" + std::to_string(height) + " centre crop");
    }
    std::vector<uint8_t> resized(static_cast<size_t>(rw * rh * channels));
    const int ok = stbir_resize_uint8_generic(pixels, w, h, 0, resized.data(), static_cast<int>(rw), static_cast<int>(rh), 0,
                                              static_cast<int>(channels), STBIR_ALPHA_CHANNEL_NONE, 0, STBIR_EDGE_CLAMP,
                                              STBIR_FILTER_CATMULLROM, STBIR_COLORSPACE_LINEAR, nullptr);
    if (!ok) throw DataError(path + ": resize failed");
    // torchvision's CenterCrop: the offset is rounded half to even of (size − crop) / 2.
    const auto top = static_cast<int64_t>(std::nearbyint(static_cast<double>(rh - height) / 2));
    const auto left = static_cast<int64_t>(std::nearbyint(static_cast<double>(rw - width) / 2));
    std::vector<uint8_t> out(static_cast<size_t>(height * width * channels));
    for (int64_t y = 0; y < height; ++y) {
        std::copy_n(resized.begin() + ((top + y) * rw + left) * channels, width * channels, out.begin() + y * width * channels);
    }
    return out;
}

}  // namespace

std::vector<uint8_t> read_image_file(const std::string & path, int64_t channels, int64_t height, int64_t width, double crop_pct) {
    if (channels != 1 && channels != 3) throw DataError(path + ": images can be read as 1 or 3 channels, not " + std::to_string(channels));
    if (height <= 0 || width <= 0) throw DataError(path + ": the image size to resize to must be positive");
    if (!(crop_pct >= 0 && crop_pct <= 1)) throw DataError(path + ": crop_pct must be in [0, 1]");
    int w = 0, h = 0, file_channels = 0;
    stbi_uc * pixels = stbi_load(path.c_str(), &w, &h, &file_channels, static_cast<int>(channels));
    if (pixels == nullptr) throw DataError(path + ": cannot decode image (" + stbi_failure_reason() + ")");
    // stb gives interleaved H×W×C; we store planar C×H×W.
    std::vector<uint8_t> interleaved;
    try {
        if (crop_pct > 0) {
            interleaved = resize_and_centre_crop(pixels, w, h, channels, height, width, crop_pct, path);
        } else {
            interleaved.resize(static_cast<size_t>(channels * height * width));
            if (!stbir_resize_uint8(pixels, w, h, 0, interleaved.data(), static_cast<int>(width), static_cast<int>(height), 0,
                                    static_cast<int>(channels))) {
                throw DataError(path + ": resize failed");
            }
        }
    } catch (...) {
        stbi_image_free(pixels);
        throw;
    }
    stbi_image_free(pixels);
    std::vector<uint8_t> planar(interleaved.size());
    for (int64_t c = 0; c < channels; ++c) {
        for (int64_t p = 0; p < height * width; ++p) planar[c * height * width + p] = interleaved[p * channels + c];
    }
    return planar;
}

ImageDataset read_image_folder(const std::string & root, int64_t channels, int64_t height, int64_t width, double crop_pct) {
    if (channels != 1 && channels != 3) throw DataError(root + ": imagefolder channels must be 1 or 3");
    if (height <= 0 || width <= 0) throw DataError(root + ": imagefolder image size must be positive");
    if (!fs::is_directory(root)) throw DataError(root + ": not a directory");
    ImageDataset data;
    data.channels = channels;
    data.height = height;
    data.width = width;
    for (const auto & entry : fs::directory_iterator(root)) {
        if (entry.is_directory()) data.class_names.push_back(entry.path().filename().string());
    }
    std::sort(data.class_names.begin(), data.class_names.end());
    if (data.class_names.empty()) throw DataError(root + ": no class sub-directories");
    for (size_t label = 0; label < data.class_names.size(); ++label) {
        std::vector<fs::path> files;
        for (const auto & entry : fs::directory_iterator(fs::path(root) / data.class_names[label])) {
            if (entry.is_regular_file()) files.push_back(entry.path());
        }
        std::sort(files.begin(), files.end());
        for (const auto & file : files) {
            const std::vector<uint8_t> image = read_image_file(file.string(), channels, height, width, crop_pct);
            data.pixels.insert(data.pixels.end(), image.begin(), image.end());
            data.labels.push_back(static_cast<int32_t>(label));
        }
    }
    if (data.labels.empty()) throw DataError(root + ": no image files under the class directories");
    data.origin = root;
    return data;
}

std::string default_root(const std::string & name) {
    if (name == "fashion-mnist") return "/usr/share/datasets/fashion-mnist";
    return "";
}

ImageDataset load_dataset(const DatasetSpec & spec, Split split) {
    const std::string root = spec.root.empty() ? default_root(spec.name) : spec.root;
    if (spec.name != "fashion-mnist" && spec.name != "mnist" && spec.name != "cifar10" && spec.name != "cifar100" &&
        spec.name != "imagefolder") {
        throw DataError("unknown data set '" + spec.name +
                        "' (known: fashion-mnist, mnist, cifar10, cifar100, imagefolder)");
    }
    if (root.empty()) throw DataError("data set '" + spec.name + "' needs a root directory (--data-root)");
    if (!fs::is_directory(root)) {
        std::string hint = spec.name == "fashion-mnist" ? " (install the Debian package dataset-fashion-mnist)" : "";
        throw DataError("data set '" + spec.name + "': directory " + root + " not found" + hint);
    }
    if (spec.name == "fashion-mnist" || spec.name == "mnist") {
        ImageDataset data = load_idx_dir(root, split);
        // Ten classes each: a label of 10 or more is a corrupt file, not an eleventh class.
        for (size_t i = 0; i < data.labels.size(); ++i) {
            if (data.labels[i] > 9) {
                throw DataError(data.origin + ": image " + std::to_string(i) + " has label " + std::to_string(data.labels[i]) +
                                "; " + spec.name + " labels are 0..9");
            }
        }
        data.class_names = numbered_class_names(10);
        if (spec.name == "fashion-mnist") {
            data.class_names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
        }
        return data;
    }
    if (spec.name == "cifar10") return load_cifar_dir(root, split, CifarVariant::cifar10);
    if (spec.name == "cifar100") return load_cifar_dir(root, split, CifarVariant::cifar100);
    const int64_t size = spec.image_size > 0 ? spec.image_size : 224;
    const fs::path dir = fs::path(root) / (split == Split::train ? "train" : (fs::exists(fs::path(root) / "val") ? "val" : "test"));
    return read_image_folder(dir.string(), spec.channels, size, size, spec.crop_pct);
}

std::vector<int64_t> stratified_subset(const std::vector<int32_t> & labels, int64_t num_classes, int64_t n,
                                       uint64_t seed) {
    const auto total = static_cast<int64_t>(labels.size());
    if (n <= 0 || n > total) {
        throw DataError("subset size " + std::to_string(n) + " must be in [1, " + std::to_string(total) + "]");
    }
    std::vector<std::vector<int64_t>> by_class(static_cast<size_t>(num_classes));
    for (int64_t i = 0; i < total; ++i) by_class.at(static_cast<size_t>(labels[i])).push_back(i);
    std::mt19937_64 rng(seed);
    // Largest-remainder apportionment: class c gets floor(n·|c|/total), and the images left over go to
    // the classes with the largest fractional parts (ties to the lower class index).
    std::vector<int64_t> quota(static_cast<size_t>(num_classes));
    std::vector<std::pair<int64_t, int64_t>> remainders;  // (remainder numerator, class)
    int64_t assigned = 0;
    for (int64_t c = 0; c < num_classes; ++c) {
        const int64_t count = static_cast<int64_t>(by_class[c].size());
        quota[c] = n * count / total;
        assigned += quota[c];
        remainders.emplace_back(n * count % total, c);
    }
    std::stable_sort(remainders.begin(), remainders.end(),
                     [](const auto & a, const auto & b) { return a.first > b.first; });
    for (int64_t i = 0; assigned < n; ++i, ++assigned) quota[remainders[i].second] += 1;
    std::vector<int64_t> chosen;
    chosen.reserve(static_cast<size_t>(n));
    for (int64_t c = 0; c < num_classes; ++c) {
        auto & members = by_class[c];
        std::shuffle(members.begin(), members.end(), rng);
        chosen.insert(chosen.end(), members.begin(), members.begin() + quota[c]);
    }
    std::sort(chosen.begin(), chosen.end());
    return chosen;
}

ImageDataset select(const ImageDataset & source, const std::vector<int64_t> & indices) {
    ImageDataset out;
    out.channels = source.channels;
    out.height = source.height;
    out.width = source.width;
    out.class_names = source.class_names;
    out.origin = source.origin;
    out.pixels.reserve(indices.size() * static_cast<size_t>(source.image_bytes()));
    for (int64_t i : indices) {
        if (i < 0 || i >= source.size()) throw DataError("subset index " + std::to_string(i) + " out of range");
        out.pixels.insert(out.pixels.end(), source.image(i), source.image(i) + source.image_bytes());
        out.labels.push_back(source.labels[static_cast<size_t>(i)]);
    }
    return out;
}

}  // namespace bitvit::data
