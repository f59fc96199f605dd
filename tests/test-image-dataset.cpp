// Data readers: valid files in every supported encoding, and every kind of malformed file giving a
// DataError that names the file and the problem.
#include <gtest/gtest.h>

#include "expect-error.h"
#include "temp-dir.h"
#include "require-data.h"
#include <stb_image_write.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "data/image-dataset.h"

namespace fs = std::filesystem;
using namespace bitvit::data;

namespace {

using bitvit::test_util::TempDir;

std::vector<uint8_t> idx_header(uint8_t ndims, std::vector<uint32_t> dims) {
    std::vector<uint8_t> out = {0, 0, 0x08, ndims};
    for (uint32_t d : dims) {
        for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<uint8_t>(d >> s));
    }
    return out;
}

void write_bytes(const std::string & path, const std::vector<uint8_t> & bytes, bool gzip) {
    if (gzip) {
        gzFile f = gzopen(path.c_str(), "wb");
        gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
        gzclose(f);
    } else {
        std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char *>(bytes.data()),
                                                    static_cast<std::streamsize>(bytes.size()));
    }
}

// n images of h×w where pixel p of image i is (i + p) % 256, labels i % classes.
void write_idx_pair(const std::string & images, const std::string & labels, uint32_t n, uint32_t h, uint32_t w,
                    int classes, bool gzip) {
    auto img = idx_header(3, {n, h, w});
    for (uint32_t i = 0; i < n; ++i) {
        for (uint32_t p = 0; p < h * w; ++p) img.push_back(static_cast<uint8_t>((i + p) % 256));
    }
    auto lab = idx_header(1, {n});
    for (uint32_t i = 0; i < n; ++i) lab.push_back(static_cast<uint8_t>(i % classes));
    write_bytes(images, img, gzip);
    write_bytes(labels, lab, gzip);
}

template <class Fn>
void expect_data_error(Fn fn, std::initializer_list<std::string> fragments) {
    bitvit::test_util::expect_error<DataError>(fn, fragments);
}

}  // namespace

class IdxEncoding : public ::testing::TestWithParam<bool> {};

TEST_P(IdxEncoding, ReadsImagesAndLabels) {
    TempDir dir;
    write_idx_pair(dir.file("i"), dir.file("l"), 7, 5, 3, 4, GetParam());
    const ImageDataset d = read_idx(dir.file("i"), dir.file("l"));
    ASSERT_EQ(d.size(), 7);
    EXPECT_EQ(d.channels, 1);
    EXPECT_EQ(d.height, 5);
    EXPECT_EQ(d.width, 3);
    EXPECT_EQ(d.num_classes(), 4);
    for (int64_t i = 0; i < 7; ++i) {
        EXPECT_EQ(d.labels[i], i % 4);
        for (int64_t p = 0; p < 15; ++p) EXPECT_EQ(d.image(i)[p], (i + p) % 256);
    }
}
INSTANTIATE_TEST_SUITE_P(PlainAndGzip, IdxEncoding, ::testing::Values(false, true));

TEST(Idx, WrongMagicNamesFile) {
    TempDir dir;
    write_idx_pair(dir.file("i"), dir.file("l"), 3, 2, 2, 2, false);
    write_bytes(dir.file("bad"), {1, 2, 8, 3, 0, 0, 0, 1}, false);
    expect_data_error([&] { read_idx(dir.file("bad"), dir.file("l")); }, {dir.file("bad"), "not an IDX file"});
    // An image file given where the label file belongs: 3 dimensions instead of 1.
    expect_data_error([&] { read_idx(dir.file("i"), dir.file("i")); }, {dir.file("i"), "3 dimensions, expected 1"});
}

TEST(Idx, UnsupportedElementType) {
    TempDir dir;
    write_bytes(dir.file("f"), {0, 0, 0x0D, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0}, false);
    write_idx_pair(dir.file("i"), dir.file("l"), 1, 1, 1, 1, false);
    expect_data_error([&] { read_idx(dir.file("f"), dir.file("l")); }, {"element type 13"});
}

TEST(Idx, TruncatedPlainAndGzip) {
    for (bool gzip : {false, true}) {
        TempDir dir;
        auto img = idx_header(3, {10, 4, 4});
        img.resize(img.size() + 10 * 16 - 5, 7);  // five pixels short
        write_bytes(dir.file("i"), img, gzip);
        auto lab = idx_header(1, {10});
        lab.resize(lab.size() + 10, 1);
        write_bytes(dir.file("l"), lab, gzip);
        expect_data_error([&] { read_idx(dir.file("i"), dir.file("l")); }, {dir.file("i"), "truncated"});
    }
}

TEST(Idx, TruncatedGzipStream) {
    TempDir dir;
    write_idx_pair(dir.file("i.gz"), dir.file("l.gz"), 200, 8, 8, 3, true);
    // Cut the compressed stream in half: zlib must report it, not hang or return garbage.
    const auto size = fs::file_size(dir.file("i.gz"));
    fs::resize_file(dir.file("i.gz"), size / 2);
    expect_data_error([&] { read_idx(dir.file("i.gz"), dir.file("l.gz")); }, {dir.file("i.gz")});
}

TEST(Idx, GzipWhoseChecksumFailsIsRefused) {
    TempDir dir;
    // Large enough (2 MB of pixels) that the pixels are read before the trailer is reached.
    write_idx_pair(dir.file("i.gz"), dir.file("l.gz"), 2048, 32, 32, 3, true);
    // Flip one bit of the CRC-32 in the gzip trailer (the last 8 bytes are CRC, then length): the
    // data decompresses, and only the end of the stream can tell it is corrupt.
    std::fstream f(dir.file("i.gz"), std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-8, std::ios::end);
    char c = 0;
    f.get(c);
    f.seekp(-8, std::ios::end);
    f.put(static_cast<char>(c ^ 1));
    f.close();
    expect_data_error([&] { read_idx(dir.file("i.gz"), dir.file("l.gz")); }, {dir.file("i.gz"), "incorrect data check"});
}

// MNIST and Fashion-MNIST have ten classes: a label of 255 is a corrupt file, not a 256-class set.
TEST(Idx, LabelsBeyondTheTenClassesAreRefused) {
    TempDir dir;
    fs::create_directories(dir.file("set"));
    write_idx_pair(dir.file("set/train-images-idx3-ubyte"), dir.file("set/train-labels-idx1-ubyte"), 12, 4, 4, 10, false);
    auto lab = idx_header(1, {12});
    for (int i = 0; i < 12; ++i) lab.push_back(static_cast<uint8_t>(i == 7 ? 255 : i % 10));
    write_bytes(dir.file("set/train-labels-idx1-ubyte"), lab, false);
    for (const char * name : {"mnist", "fashion-mnist"}) {
        expect_data_error([&] { load_dataset({name, dir.file("set"), 0, 1}, Split::train); },
                          {dir.file("set/train-images-idx3-ubyte"), "image 7 has label 255", "labels are 0..9"});
    }
}

TEST(Idx, CountMismatch) {
    TempDir dir;
    write_idx_pair(dir.file("i"), dir.file("l"), 5, 2, 2, 2, false);
    write_idx_pair(dir.file("i6"), dir.file("l6"), 6, 2, 2, 2, false);
    expect_data_error([&] { read_idx(dir.file("i"), dir.file("l6")); }, {"5 images", "6 labels"});
}

TEST(Idx, TrailingBytesAndMissingFile) {
    TempDir dir;
    auto lab = idx_header(1, {2});
    lab.insert(lab.end(), {0, 1, 1});
    write_bytes(dir.file("l"), lab, false);
    write_idx_pair(dir.file("i"), dir.file("unused"), 2, 2, 2, 2, false);
    expect_data_error([&] { read_idx(dir.file("i"), dir.file("l")); }, {dir.file("l"), "after the last label"});
    expect_data_error([&] { read_idx(dir.file("nope"), dir.file("l")); }, {dir.file("nope"), "not found"});
}

TEST(Idx, ImplausibleHeader) {
    TempDir dir;
    auto img = idx_header(3, {0xFFFFFFFFu, 0xFFFFu, 0xFFFFu});
    write_bytes(dir.file("i"), img, false);
    write_idx_pair(dir.file("x"), dir.file("l"), 1, 1, 1, 1, false);
    expect_data_error([&] { read_idx(dir.file("i"), dir.file("l")); }, {"implausible"});
}

TEST(FashionMnist, PackageFilesLoad) {
    BITVIT_REQUIRE_FASHION_MNIST();
    const ImageDataset test = load_dataset({"fashion-mnist", "", 0, 1}, Split::test);
    EXPECT_EQ(test.size(), 10000);
    EXPECT_EQ(test.height, 28);
    EXPECT_EQ(test.num_classes(), 10);
    EXPECT_EQ(test.class_names[9], "Ankle boot");
    std::vector<int> per_class(10);
    for (int32_t l : test.labels) per_class[l]++;
    for (int c : per_class) EXPECT_EQ(c, 1000);
}

TEST(LoadDataset, UnknownNameAndMissingRoot) {
    expect_data_error([] { load_dataset({"imagenet-xl", "", 0, 3}, Split::train); }, {"unknown data set 'imagenet-xl'"});
    expect_data_error([] { load_dataset({"mnist", "/nonexistent/dir", 0, 1}, Split::train); }, {"/nonexistent/dir"});
    expect_data_error([] { load_dataset({"cifar10", "", 0, 3}, Split::train); }, {"needs a root"});
}

TEST(Cifar, ReadsBothVariantsAndRejectsBadSizes) {
    TempDir dir;
    for (auto variant : {CifarVariant::cifar10, CifarVariant::cifar100}) {
        const int label_bytes = variant == CifarVariant::cifar10 ? 1 : 2;
        std::vector<uint8_t> bytes;
        for (int i = 0; i < 3; ++i) {
            if (label_bytes == 2) bytes.push_back(static_cast<uint8_t>(i));  // coarse
            bytes.push_back(static_cast<uint8_t>(7 + i));                   // fine
            for (int p = 0; p < 3072; ++p) bytes.push_back(static_cast<uint8_t>((p / 1024) * 10 + i));
        }
        write_bytes(dir.file("b.bin"), bytes, false);
        const ImageDataset d = read_cifar({dir.file("b.bin")}, variant);
        ASSERT_EQ(d.size(), 3);
        EXPECT_EQ(d.labels[2], 9);
        EXPECT_EQ(d.image(1)[0], 1);         // R plane
        EXPECT_EQ(d.image(1)[2048], 21);     // B plane
        EXPECT_EQ(d.num_classes(), variant == CifarVariant::cifar10 ? 10 : 100);
        bytes.pop_back();
        write_bytes(dir.file("t.bin"), bytes, false);
        expect_data_error([&] { read_cifar({dir.file("t.bin")}, variant); }, {dir.file("t.bin"), "not a positive multiple"});
    }
    std::vector<uint8_t> bad(3073, 0);
    bad[0] = 10;  // CIFAR-10 label out of range
    write_bytes(dir.file("bad.bin"), bad, false);
    expect_data_error([&] { read_cifar({dir.file("bad.bin")}, CifarVariant::cifar10); }, {"label 10"});
}

TEST(ImageFolder, ReadsResizesAndRejectsCorruptImages) {
    TempDir dir;
    const fs::path root = dir.file("train");
    for (const char * cls : {"b_dog", "a_cat"}) fs::create_directories(root / cls);
    std::vector<uint8_t> rgb(8 * 6 * 3);
    for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<uint8_t>(i % 3 == 0 ? 200 : 50);
    ASSERT_TRUE(stbi_write_png((root / "a_cat" / "1.png").c_str(), 8, 6, 3, rgb.data(), 8 * 3));
    ASSERT_TRUE(stbi_write_bmp((root / "b_dog" / "2.bmp").c_str(), 8, 6, 3, rgb.data()));
    const ImageDataset d = read_image_folder(root.string(), 3, 4, 4);
    ASSERT_EQ(d.size(), 2);
    EXPECT_EQ(d.class_names, (std::vector<std::string>{"a_cat", "b_dog"}));
    EXPECT_EQ(d.labels, (std::vector<int32_t>{0, 1}));
    EXPECT_NEAR(d.image(0)[0], 200, 2);       // red plane
    EXPECT_NEAR(d.image(0)[16], 50, 2);       // green plane
    const ImageDataset gray = read_image_folder(root.string(), 1, 3, 5);
    EXPECT_EQ(gray.image_bytes(), 15);
    std::ofstream(root / "a_cat" / "broken.jpg") << "not really a jpeg";
    expect_data_error([&] { read_image_folder(root.string(), 3, 4, 4); }, {"broken.jpg", "cannot decode"});
    expect_data_error([&] { read_image_folder(dir.file("nothing"), 3, 4, 4); }, {"not a directory"});
}

// timm's evaluation transform: at a scale of one (shorter side already min(size) / crop_pct) the
// result is exactly the centre crop, in landscape and portrait; a constant image stays constant
// when the bicubic resize shrinks it.
TEST(ImageFile, CropPctResizesTheShorterSideAndCutsTheCentre) {
    TempDir dir;
    for (const bool landscape : {true, false}) {
        const int w = landscape ? 40 : 20, h = landscape ? 20 : 40;
        std::vector<uint8_t> gray(static_cast<size_t>(w * h));
        for (int y = 0; y < h; ++y) {
            for (int x = 0; x < w; ++x) gray[static_cast<size_t>(y * w + x)] = static_cast<uint8_t>((x * 5 + y * 3) % 251);
        }
        ASSERT_TRUE(stbi_write_png(dir.file("ramp.png").c_str(), w, h, 1, gray.data(), w));
        const std::vector<uint8_t> crop = read_image_file(dir.file("ramp.png"), 1, 16, 16, 0.8);  // 16 / 0.8 = 20
        ASSERT_EQ(crop.size(), 256u);
        const int top = (h - 16) / 2, left = (w - 16) / 2;
        for (int y = 0; y < 16; ++y) {
            for (int x = 0; x < 16; ++x) {
                ASSERT_EQ(crop[static_cast<size_t>(y * 16 + x)], gray[static_cast<size_t>((y + top) * w + x + left)]) << y << "," << x;
            }
        }
    }
    std::vector<uint8_t> flat(64 * 32 * 3, 100);
    ASSERT_TRUE(stbi_write_png(dir.file("flat.png").c_str(), 64, 32, 3, flat.data(), 64 * 3));
    for (const uint8_t v : read_image_file(dir.file("flat.png"), 3, 16, 16, 0.875)) ASSERT_NEAR(v, 100, 1);
    expect_data_error([&] { read_image_file(dir.file("flat.png"), 3, 16, 16, 1.5); }, {"flat.png", "crop_pct"});
}

TEST(ImageFile, DecodesConvertsAndResizesOneImage) {
    TempDir dir;
    std::vector<uint8_t> gray(10 * 10);
    for (size_t i = 0; i < gray.size(); ++i) gray[i] = static_cast<uint8_t>(i < 50 ? 0 : 240);  // top half black
    ASSERT_TRUE(stbi_write_png(dir.file("shirt.png").c_str(), 10, 10, 1, gray.data(), 10));
    const std::vector<uint8_t> small = read_image_file(dir.file("shirt.png"), 1, 2, 2);  // [1, 2, 2]
    ASSERT_EQ(small.size(), 4u);
    EXPECT_LT(small[0], 60);   // top row (the resize filter blurs across the edge)
    EXPECT_GT(small[3], 180);  // bottom row
    const std::vector<uint8_t> rgb = read_image_file(dir.file("shirt.png"), 3, 5, 5);  // gray copied into 3 planes
    ASSERT_EQ(rgb.size(), 75u);
    EXPECT_EQ(rgb[24], rgb[24 + 25]);
    std::ofstream(dir.file("truncated.png")) << std::string("\x89PNG\r\n\x1a\n", 8);
    expect_data_error([&] { read_image_file(dir.file("truncated.png"), 1, 28, 28); }, {"truncated.png", "cannot decode"});
    expect_data_error([&] { read_image_file(dir.file("missing.png"), 1, 28, 28); }, {"missing.png", "cannot decode"});
    expect_data_error([&] { read_image_file(dir.file("shirt.png"), 2, 28, 28); }, {"shirt.png", "1 or 3 channels"});
}

TEST(StratifiedSubset, KeepsClassSharesAndIsSeeded) {
    std::vector<int32_t> labels;
    for (int i = 0; i < 1000; ++i) labels.push_back(i < 600 ? 0 : (i < 900 ? 1 : 2));
    const auto a = stratified_subset(labels, 3, 100, 7);
    ASSERT_EQ(a.size(), 100u);
    int counts[3] = {};
    for (auto i : a) counts[labels[i]]++;
    EXPECT_EQ(counts[0], 60);
    EXPECT_EQ(counts[1], 30);
    EXPECT_EQ(counts[2], 10);
    EXPECT_EQ(std::set<int64_t>(a.begin(), a.end()).size(), 100u);
    EXPECT_EQ(a, stratified_subset(labels, 3, 100, 7));
    EXPECT_NE(a, stratified_subset(labels, 3, 100, 8));
    // Remainders: 7 of a 3-class 1000 set -> 4.2, 2.1, 0.7 -> 4, 2, 1.
    const auto b = stratified_subset(labels, 3, 7, 1);
    int small[3] = {};
    for (auto i : b) small[labels[i]]++;
    EXPECT_EQ(small[0] + small[1] + small[2], 7);
    EXPECT_EQ(small[2], 1);
    EXPECT_THROW(stratified_subset(labels, 3, 0, 1), DataError);
    EXPECT_THROW(stratified_subset(labels, 3, 1001, 1), DataError);
}

TEST(Select, CopiesChosenImages) {
    ImageDataset d;
    d.channels = 1;
    d.height = d.width = 1;
    d.pixels = {10, 11, 12};
    d.labels = {0, 1, 0};
    d.class_names = {"a", "b"};
    const auto s = select(d, {2, 0});
    EXPECT_EQ(s.pixels, (std::vector<uint8_t>{12, 10}));
    EXPECT_EQ(s.labels, (std::vector<int32_t>{0, 0}));
    EXPECT_THROW(select(d, {3}), DataError);
}
