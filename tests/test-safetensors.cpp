// The safetensors container: round trip, and every kind of corruption rejected with FormatError.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <sys/stat.h>
#include <unistd.h>

#include "format/pickle-check.h"
#include "format/safetensors.h"

namespace fs = std::filesystem;
using namespace bitvit::format;

namespace {

// A file from raw header text and data bytes, with the header length as given (or the true one).
std::vector<uint8_t> raw_file(const std::string & header, size_t data_bytes, int64_t claimed = -1) {
    const uint64_t n = claimed >= 0 ? static_cast<uint64_t>(claimed) : header.size();
    std::vector<uint8_t> out(8);
    for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<uint8_t>(n >> (8 * i));
    out.insert(out.end(), header.begin(), header.end());
    out.resize(out.size() + data_bytes, 0x5A);
    return out;
}

std::string error_of(const std::vector<uint8_t> & bytes) {
    try {
        SafetensorsFile::parse(bytes, "test.safetensors");
    } catch (const FormatError & e) {
        return e.what();
    }
    return "(accepted)";
}

}  // namespace

TEST(Safetensors, RoundTripWithMetadata) {
    SafetensorsWriter w;
    const float f[6] = {1.5f, -2, 3, 4, 5, 6};
    const uint64_t bits[3] = {1, 2, 0xFFFFFFFFFFFFFFFFull};
    w.add("blocks.0.attn.qkv.weight_scale", DType::F32, {2, 3}, f, sizeof f);
    w.add("blocks.0.attn.qkv.weight_bits", DType::U64, {3}, bits, sizeof bits);
    w.add("empty", DType::BF16, {0}, nullptr, 0);
    w.set_metadata("format_version", "1");
    const fs::path path = fs::temp_directory_path() / ("bitvit-st-" + std::to_string(::getpid()) + ".safetensors");
    w.write(path.string());
    const auto f2 = SafetensorsFile::load(path.string());
    fs::remove(path);
    EXPECT_EQ(f2.metadata().at("format_version"), "1");
    EXPECT_EQ(f2.tensors().size(), 3u);
    const auto & info = f2.info("blocks.0.attn.qkv.weight_scale");
    EXPECT_EQ(info.dtype, DType::F32);
    EXPECT_EQ(info.shape, (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(std::memcmp(f2.data("blocks.0.attn.qkv.weight_scale"), f, sizeof f), 0);
    EXPECT_EQ(std::memcmp(f2.data("blocks.0.attn.qkv.weight_bits"), bits, sizeof bits), 0);
    EXPECT_EQ(f2.info("empty").numel(), 0);
    // The data starts 8-byte aligned (header padded with spaces).
    const auto bytes = w.serialize();
    uint64_t header = 0;
    std::memcpy(&header, bytes.data(), 8);
    EXPECT_EQ((8 + header) % 8, 0u);
    EXPECT_THROW(f2.info("missing"), FormatError);
}

TEST(Safetensors, WriterRejectsInconsistentTensors) {
    SafetensorsWriter w;
    const float f[2] = {1, 2};
    EXPECT_THROW(w.add("a", DType::F32, {3}, f, sizeof f), FormatError);
    EXPECT_THROW(w.add("a", DType::F32, {-2}, f, sizeof f), FormatError);
    w.add("a", DType::F32, {2}, f, sizeof f);
    EXPECT_THROW(w.add("a", DType::F32, {2}, f, sizeof f), FormatError);
    EXPECT_THROW(w.add("__metadata__", DType::F32, {2}, f, sizeof f), FormatError);
}

TEST(Safetensors, EveryTruncationIsRejected) {
    SafetensorsWriter w;
    const float f[4] = {1, 2, 3, 4};
    w.add("x", DType::F32, {4}, f, sizeof f);
    const auto good = w.serialize();
    ASSERT_NO_THROW(SafetensorsFile::parse(good, "good"));
    for (size_t n = 0; n < good.size(); ++n) {
        EXPECT_THROW(SafetensorsFile::parse(std::vector<uint8_t>(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n)), "cut"),
                     FormatError) << "prefix of " << n << " bytes";
    }
}

TEST(Safetensors, CorruptHeadersNameTheProblem) {
    const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    EXPECT_EQ(error_of(raw_file(ok, 8)), "(accepted)");
    EXPECT_NE(error_of(raw_file(ok, 8, 1ll << 40)).find("exceeds the 100 MB limit"), std::string::npos);
    EXPECT_NE(error_of(raw_file(ok, 8, static_cast<int64_t>(ok.size()) + 100)).find("runs past the end"), std::string::npos);
    EXPECT_NE(error_of(raw_file(ok, 4)).find("past the data"), std::string::npos);          // data truncated
    EXPECT_NE(error_of(raw_file(ok, 12)).find("belong to no tensor"), std::string::npos);   // trailing bytes
    EXPECT_NE(error_of(raw_file("[1,2]", 0)).find("not a JSON object"), std::string::npos);
    EXPECT_NE(error_of(raw_file("{\"a\":", 0)).find("not valid JSON"), std::string::npos);
    EXPECT_NE(error_of(raw_file(R"({"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", 8)).find("unknown dtype 'F33'"),
              std::string::npos);
    EXPECT_NE(error_of(raw_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8)).find("need 12"),
              std::string::npos);
    EXPECT_NE(error_of(raw_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8)).find("non-negative"),
              std::string::npos);
    EXPECT_NE(error_of(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8)).find("ends before"),
              std::string::npos);
    EXPECT_NE(error_of(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", 8)).find("unknown field 'x'"),
              std::string::npos);
    EXPECT_NE(error_of(raw_file(R"({"a":{"dtype":"U8","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}})", 8))
                  .find("overflows"),
              std::string::npos);
    // Overlap and holes: the tensors must tile the data exactly.
    EXPECT_NE(error_of(raw_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})", 6))
                  .find("overlap"),
              std::string::npos);
    EXPECT_NE(error_of(raw_file(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})", 6))
                  .find("belong to no tensor"),
              std::string::npos);
    EXPECT_NE(error_of(raw_file(R"({"__metadata__":{"k":3}})", 0)).find("must be a string"), std::string::npos);
    EXPECT_NE(error_of({1, 2, 3}).find("too short"), std::string::npos);
    EXPECT_THROW(SafetensorsFile::load("/nonexistent/model.safetensors"), FormatError);
}

TEST(Safetensors, F16WidensExactlyForEveryBitPattern) {
    // Against the definition: (−1)^s · 2^(e−15) · (1 + m/1024) for normal values, 2^−14 · m/1024 for
    // subnormal ones, infinities and NaNs at e = 31.
    for (uint32_t bits = 0; bits < 65536; ++bits) {
        const int sign = bits >> 15, e = (bits >> 10) & 31, m = bits & 1023;
        const float got = bitvit::format::f16_to_f32(static_cast<uint16_t>(bits));
        if (e == 31) {
            ASSERT_TRUE(m ? std::isnan(got) : std::isinf(got)) << bits;
            ASSERT_EQ(std::signbit(got), sign == 1) << bits;
            continue;
        }
        const double magnitude = e ? std::ldexp(1.0 + m / 1024.0, e - 15) : std::ldexp(m / 1024.0, -14);
        const double want = sign ? -magnitude : magnitude;
        ASSERT_EQ(static_cast<double>(got), want) << bits;
        ASSERT_EQ(std::signbit(got), sign == 1) << bits;  // −0 too
    }
}

namespace {

class TempFiles {
  public:
    TempFiles() : dir_(fs::temp_directory_path() / ("bitvit-st-" + std::to_string(::getpid()))) { fs::create_directories(dir_); }
    ~TempFiles() { fs::remove_all(dir_); }
    std::string path(const std::string & name) const { return (dir_ / name).string(); }

  private:
    fs::path dir_;
};

std::string load_error(const std::string & path) {
    try {
        SafetensorsFile::load(path);
    } catch (const FormatError & e) {
        return e.what();
    }
    return "(accepted)";
}

}  // namespace

// The loader reads the header first and checks it against the file's size, and reads nothing that
// is not a regular file: a huge sparse tail, a pipe, a directory or a checkpoint are refused at once.
TEST(Safetensors, LoadChecksTheHeaderAgainstTheFileBeforeReadingData) {
    TempFiles t;
    SafetensorsWriter w;
    const float f[2] = {1, 2};
    w.add("x", DType::F32, {2}, f, sizeof f);
    w.write(t.path("ok.safetensors"));
    ASSERT_EQ(load_error(t.path("ok.safetensors")), "(accepted)");
    // A 2 GB and a 100 GB sparse tail (no disk used): refused from the header's declared size.
    for (const uint64_t tail : {uint64_t{2} << 30, uint64_t{100} << 30}) {
        fs::copy_file(t.path("ok.safetensors"), t.path("tail.safetensors"), fs::copy_options::overwrite_existing);
        fs::resize_file(t.path("tail.safetensors"), fs::file_size(t.path("ok.safetensors")) + tail);
        EXPECT_NE(load_error(t.path("tail.safetensors")).find("the header declares 8 data bytes but the file holds"), std::string::npos);
    }
    ASSERT_EQ(::mkfifo(t.path("fifo").c_str(), 0600), 0);
    EXPECT_NE(load_error(t.path("fifo")).find("not a regular file"), std::string::npos) << load_error(t.path("fifo"));
    EXPECT_NE(load_error(t.path("")).find("is a directory"), std::string::npos);
    EXPECT_NE(load_error(t.path("none")).find("file not found"), std::string::npos);
    std::ofstream(t.path("ckpt.pt"), std::ios::binary) << "PK\x03\x04" << std::string(100, '\0');
    EXPECT_NE(load_error(t.path("ckpt.pt")).find("LibTorch checkpoint"), std::string::npos) << load_error(t.path("ckpt.pt"));
    EXPECT_NE(load_error("/proc/self/status").find("/proc/self/status"), std::string::npos);
}

// JSON nested far deeper than any header needs is refused while parsing, never turned into a deep
// tree (whose printing or destruction would exhaust the stack), and messages quote bounded excerpts.
TEST(Safetensors, DeepNestingAndHugeNamesGiveShortErrors) {
    const std::string deep = "{\"x\": " + std::string(75000, '[') + std::string(75000, ']') + "}";
    EXPECT_NE(error_of(raw_file(deep, 0)).find("nests deeper than 32 levels"), std::string::npos);
    const std::string huge_name(10 << 20, 'n');
    const std::string header = "{\"" + huge_name + "\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 8]}}";
    const std::string message = error_of(raw_file(header, 8));
    EXPECT_NE(message.find("10485760 bytes"), std::string::npos) << message.substr(0, 200);
    EXPECT_LT(message.size(), 300u);
}

// Pickles are checked before any unpickler sees them: only the opcodes and globals a tensor archive
// uses, every length inside the bytes, bounded memo indices.
TEST(Pickle, OnlyTensorArchivePicklesPass) {
    const PickleAllowList & allowed = libtorch_archive_globals();
    auto error = [&](const std::string & p) {
        try {
            check_pickle(p, "t.pkl", allowed);
        } catch (const FormatError & e) {
            return std::string(e.what());
        }
        return std::string("(accepted)");
    };
    // {'a': 1} and a tensor rebuild, as protocol 2 writes them (literals with NULs: sized strings).
    auto bytes = [](const auto & literal) { return std::string(literal, sizeof literal - 1); };
    EXPECT_EQ(error(bytes("\x80\x02}q\x00X\x01\x00\x00\x00" "aK\x01s.")), "(accepted)");
    EXPECT_EQ(error(bytes("\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\nq\x00)R.")), "(accepted)");
    EXPECT_NE(error(bytes("\x80\x02" "cos\nsystem\nq\x00X\x02\x00\x00\x00" "lsR.")).find("names 'os system'"), std::string::npos);
    EXPECT_NE(error("\x80\x02" "cbuiltins\neval\n.").find("builtins eval"), std::string::npos);
    EXPECT_NE(error(std::string("\x80\x02r\xff\xff\xff\x7f.", 8)).find("memo index"), std::string::npos);
    EXPECT_NE(error(std::string("\x80\x02X\xff\xff\x00\x00ab.", 10)).find("runs past the end"), std::string::npos);
    EXPECT_NE(error("\x80\x02}").find("no STOP"), std::string::npos);
    EXPECT_NE(error("\x80\x02i.").find("opcode 0x69"), std::string::npos);  // INST: calls a class
    EXPECT_NE(error("\x80\x02}..").find("after STOP"), std::string::npos);
}
