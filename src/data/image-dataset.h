// Image data sets as plain bytes: readers for IDX (MNIST / Fashion-MNIST), the CIFAR binary format and
// ImageFolder trees. This library links neither LibTorch nor any SIMD code, so the runtime (which must
// ship without LibTorch) and the trainer read images through the same, tested code.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace bitvit::data {

// Every malformed input (missing file, wrong magic, short read, count mismatch, unreadable image)
// throws this, with the offending path and what was wrong in what().
class DataError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// n images of C×H×W uint8 pixels, stored contiguously as [n, C, H, W], and one label each.
struct ImageDataset {
    int64_t channels = 0;
    int64_t height = 0;
    int64_t width = 0;
    std::vector<uint8_t> pixels;           // [n, C, H, W]
    std::vector<int32_t> labels;           // [n], each in [0, class_names.size())
    std::vector<std::string> class_names;  // one per class; index = label
    std::string origin;                    // the file or directory it was read from, for messages

    int64_t size() const { return static_cast<int64_t>(labels.size()); }
    int64_t num_classes() const { return static_cast<int64_t>(class_names.size()); }
    int64_t image_bytes() const { return channels * height * width; }
    const uint8_t * image(int64_t i) const { return pixels.data() + i * image_bytes(); }
};

// Reads an IDX image file (magic 0x00000803, dims n×H×W) and its IDX label file (magic 0x00000801,
// dims n). Either file may be gzip-compressed or plain; zlib detects which. Labels must be < 256 and
// class names default to "0".."max". Throws DataError naming the file on any inconsistency.
ImageDataset read_idx(const std::string & images_path, const std::string & labels_path);

// Reads CIFAR binary batch files: each record is <label byte(s)><3072 pixel bytes, R then G then B
// planes of 32×32>. CIFAR-10 has one label byte; CIFAR-100 has <coarse><fine> and we use `fine`.
enum class CifarVariant { cifar10, cifar100 };
ImageDataset read_cifar(const std::vector<std::string> & batch_paths, CifarVariant variant);

// Decodes one image file (JPEG, PNG, BMP, GIF, TGA, PNM through stb_image), converted to `channels`
// (1 or 3) and brought to height×width: planar [C, H, W] pixels. crop_pct 0 resizes the whole image
// to height×width (aspect ratio not kept); crop_pct in (0, 1] is timm's evaluation transform: the
// shorter side resized to floor(min(height, width) / crop_pct) keeping the aspect ratio, bicubic
// (Catmull-Rom, as PIL's), then the centre height×width cut out. Throws DataError naming the file.
std::vector<uint8_t> read_image_file(const std::string & path, int64_t channels, int64_t height, int64_t width,
                                     double crop_pct = 0.0);

// Reads root/<class>/<image> (JPEG, PNG, BMP, GIF, TGA through stb_image), classes in sorted order,
// every image converted to `channels` (1 or 3) and brought to height×width as read_image_file does.
ImageDataset read_image_folder(const std::string & root, int64_t channels, int64_t height, int64_t width,
                               double crop_pct = 0.0);

// Where a named data set lives and which split to read.
struct DatasetSpec {
    std::string name;  // "fashion-mnist", "mnist", "cifar10", "cifar100", "imagefolder"
    std::string root;  // directory; empty = the default for `name` (fashion-mnist: Debian's package)
    int64_t image_size = 0;  // imagefolder only: resize target (square); 0 = 224
    int64_t channels = 3;    // imagefolder only
    double crop_pct = 0.0;   // imagefolder only: 0 = resize whole images; else timm's resize-and-centre-crop
};
enum class Split { train, test };

// Loads one split of a named data set. For IDX sets the standard file names
// (train-images-idx3-ubyte[.gz], t10k-...) are looked up under root; for imagefolder, root/train
// and root/val (or root/test).
ImageDataset load_dataset(const DatasetSpec & spec, Split split);

// The default directory of a named data set ("" when it has none).
std::string default_root(const std::string & name);

// A seeded, stratified subset of n indices: every class keeps (as near as integer division allows)
// its share of the data set, and the same (labels, n, seed) always gives the same indices, sorted.
std::vector<int64_t> stratified_subset(const std::vector<int32_t> & labels, int64_t num_classes, int64_t n,
                                       uint64_t seed);

// A new data set holding the given images (indices into `source`), in that order.
ImageDataset select(const ImageDataset & source, const std::vector<int64_t> & indices);

}  // namespace bitvit::data
