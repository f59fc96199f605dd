#include "safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "atomic-file.h"
#include "file-kind.h"
#include "text.h"
#include "sha256.h"

namespace bitvit::format {
namespace {

using json = nlohmann::json;

// The reference implementation's limit: a larger header is refused before it is parsed.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct DTypeEntry {
    DType dtype;
    const char * name;
    size_t size;
};
constexpr DTypeEntry kDTypes[] = {
    {DType::BOOL, "BOOL", 1}, {DType::U8, "U8", 1},     {DType::I8, "I8", 1},   {DType::U16, "U16", 2},
    {DType::I16, "I16", 2},   {DType::F16, "F16", 2},   {DType::BF16, "BF16", 2}, {DType::U32, "U32", 4},
    {DType::I32, "I32", 4},   {DType::F32, "F32", 4},   {DType::U64, "U64", 8}, {DType::I64, "I64", 8},
    {DType::F64, "F64", 8},
};

[[noreturn]] void fail(const std::string & origin, const std::string & what) { throw FormatError(origin + ": " + what); }

// numel × dtype size, or fail if it overflows 64 bits.
uint64_t byte_size(const TensorInfo & t, const std::string & origin, const std::string & name) {
    uint64_t n = dtype_size(t.dtype);
    for (int64_t d : t.shape) {
        if (d != 0 && n > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(d)) {
            fail(origin, "tensor " + name + " shape overflows");
        }
        n *= static_cast<uint64_t>(d);
    }
    return n;
}

TensorInfo parse_entry(const json & entry, const std::string & origin, const std::string & name) {
    if (!entry.is_object()) fail(origin, "tensor " + name + " must be a JSON object");
    for (const auto & [key, value] : entry.items()) {
        if (key != "dtype" && key != "shape" && key != "data_offsets") {
            fail(origin, "tensor " + name + " has unknown field " + excerpt(key));
        }
    }
    if (!entry.contains("dtype") || !entry["dtype"].is_string()) fail(origin, "tensor " + name + " needs a dtype string");
    if (!entry.contains("shape") || !entry["shape"].is_array()) fail(origin, "tensor " + name + " needs a shape array");
    if (!entry.contains("data_offsets") || !entry["data_offsets"].is_array() || entry["data_offsets"].size() != 2) {
        fail(origin, "tensor " + name + " needs data_offsets [begin, end]");
    }
    TensorInfo t;
    try {
        t.dtype = parse_dtype(entry["dtype"].get<std::string>());
    } catch (const FormatError & e) {
        fail(origin, "tensor " + name + ": " + e.what());
    }
    for (const auto & d : entry["shape"]) {
        if (!d.is_number_unsigned()) fail(origin, "tensor " + name + " shape must hold non-negative integers");
        const uint64_t v = d.get<uint64_t>();
        if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) fail(origin, "tensor " + name + " dimension too large");
        t.shape.push_back(static_cast<int64_t>(v));
    }
    for (const auto & o : entry["data_offsets"]) {
        if (!o.is_number_unsigned()) fail(origin, "tensor " + name + " data_offsets must be non-negative integers");
    }
    t.begin = entry["data_offsets"][0].get<uint64_t>();
    t.end = entry["data_offsets"][1].get<uint64_t>();
    if (t.end < t.begin) fail(origin, "tensor " + name + " ends before it begins");
    if (t.end - t.begin != byte_size(t, origin, name)) {
        fail(origin, "tensor " + name + " has " + std::to_string(t.end - t.begin) + " bytes but its dtype and shape need " +
                         std::to_string(byte_size(t, origin, name)));
    }
    return t;
}

// The header's JSON, parsed with a bounded depth (format/text.h): an object.
json parse_header_json(const uint8_t * text, uint64_t length, const std::string & origin) {
    json root;
    try {
        root = parse_json(std::string_view(reinterpret_cast<const char *>(text), static_cast<size_t>(length)), "header");
    } catch (const std::invalid_argument & e) {
        fail(origin, e.what());
    }
    if (!root.is_object()) fail(origin, "header is not a JSON object");
    return root;
}

}  // namespace

const char * dtype_name(DType dtype) {
    for (const auto & e : kDTypes) {
        if (e.dtype == dtype) return e.name;
    }
    return "?";
}

size_t dtype_size(DType dtype) {
    for (const auto & e : kDTypes) {
        if (e.dtype == dtype) return e.size;
    }
    return 0;
}

float f16_to_f32(uint16_t bits) {
    const uint32_t sign = uint32_t{bits & 0x8000u} << 16;
    const uint32_t exponent = (bits >> 10) & 0x1F, mantissa = bits & 0x3FF;
    uint32_t out;
    if (exponent == 0x1F) {
        out = sign | 0x7F800000u | (mantissa << 13);  // infinity, NaN (payload kept)
    } else if (exponent != 0) {
        out = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {
        out = sign;  // ±0
    } else {
        // Subnormal: mantissa·2^-24; normalise so the leading 1 becomes the implicit bit.
        int shift = 0;
        uint32_t m = mantissa;
        while (!(m & 0x400u)) {
            m <<= 1;
            ++shift;
        }
        out = sign | (static_cast<uint32_t>(127 - 15 + 1 - shift) << 23) | ((m & 0x3FFu) << 13);
    }
    float f;
    std::memcpy(&f, &out, sizeof f);
    return f;
}

DType parse_dtype(const std::string & name) {
    for (const auto & e : kDTypes) {
        if (name == e.name) return e.dtype;
    }
    throw FormatError("unknown dtype '" + name + "'");
}

int64_t TensorInfo::numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

namespace {

uint64_t little_endian_u64(const uint8_t * p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

// The header length prefix, checked against the file's size before anything else is read.
uint64_t header_length(const uint8_t * prefix, uint64_t file_bytes, const std::string & origin) {
    if (file_bytes < 8) fail(origin, "too short for a safetensors header (" + std::to_string(file_bytes) + " bytes)");
    const uint64_t header = little_endian_u64(prefix);
    if (header > kMaxHeaderBytes) fail(origin, "header length " + std::to_string(header) + " exceeds the 100 MB limit");
    if (header > file_bytes - 8) {
        fail(origin, "header length " + std::to_string(header) + " runs past the end of the file (" + std::to_string(file_bytes) +
                         " bytes): truncated?");
    }
    if (header < 2 || prefix[8] != '{') fail(origin, "header is not a JSON object");
    return header;
}

}  // namespace

SafetensorsFile SafetensorsFile::load(const std::string & path) {
    // Opened without blocking (a FIFO would wait for a writer forever) and refused unless it is a
    // regular file; then the header is read and checked against the file's size, and only the bytes
    // it declares are read — a lying header or a huge sparse tail costs nothing.
    const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        const FileKind kind = file_kind(path);
        fail(path, kind == FileKind::missing ? "file not found" : std::string("cannot open (") + std::strerror(errno) + ")");
    }
    struct FdCloser {
        int fd;
        ~FdCloser() { ::close(fd); }
    } closer{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        throw FormatError(wrong_kind_message(path, S_ISDIR(st.st_mode) ? FileKind::directory : FileKind::not_regular,
                                             "a safetensors file"));
    }
    const auto file_bytes = static_cast<uint64_t>(st.st_size);
    auto read_at = [&](uint64_t offset, uint64_t n, uint8_t * out) {
        uint64_t done = 0;
        while (done < n) {
            const ssize_t got = ::pread(fd, out + done, static_cast<size_t>(n - done), static_cast<off_t>(offset + done));
            if (got <= 0) fail(path, "read failed at byte " + std::to_string(offset + done) + (got < 0 ? std::string(" (") + std::strerror(errno) + ")" : std::string(": file shrank?")));
            done += static_cast<uint64_t>(got);
        }
    };
    uint8_t prefix[9] = {};
    read_at(0, std::min<uint64_t>(9, file_bytes), prefix);
    if (file_bytes >= 4 && std::memcmp(prefix, "PK\x03\x04", 4) == 0) {
        throw FormatError(wrong_kind_message(path, FileKind::zip_archive, "a safetensors file"));
    }
    const uint64_t header = header_length(prefix, file_bytes, path);
    std::vector<uint8_t> bytes(static_cast<size_t>(8 + header));
    read_at(0, 8 + header, bytes.data());
    // The header alone says how many data bytes follow: check that before reading them.
    const uint64_t declared = declared_data_bytes(bytes, path);
    if (declared != file_bytes - 8 - header) {
        fail(path, "the header declares " + std::to_string(declared) + " data bytes but the file holds " +
                       std::to_string(file_bytes - 8 - header) + (declared > file_bytes - 8 - header ? ": truncated?" : " (trailing bytes)"));
    }
    bytes.resize(static_cast<size_t>(file_bytes));
    read_at(8 + header, declared, bytes.data() + 8 + header);
    return parse(std::move(bytes), path);
}

uint64_t SafetensorsFile::declared_data_bytes(const std::vector<uint8_t> & header_bytes, const std::string & origin) {
    const uint64_t header = little_endian_u64(header_bytes.data());
    const json root = parse_header_json(header_bytes.data() + 8, header, origin);
    uint64_t end = 0;
    for (const auto & [name, entry] : root.items()) {
        if (name == "__metadata__") continue;
        end = std::max(end, parse_entry(entry, origin, format::excerpt(name)).end);
    }
    return end;
}

SafetensorsFile SafetensorsFile::parse(std::vector<uint8_t> bytes, const std::string & origin) {
    SafetensorsFile f;
    f.origin_ = origin;
    const uint64_t header = header_length(bytes.data(), bytes.size(), origin);
    const json root = parse_header_json(bytes.data() + 8, header, origin);
    const uint64_t buffer = bytes.size() - 8 - header;
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    for (const auto & [name, entry] : root.items()) {
        if (name == "__metadata__") {
            if (!entry.is_object()) fail(origin, "__metadata__ must be an object of strings");
            for (const auto & [key, value] : entry.items()) {
                if (!value.is_string()) fail(origin, "__metadata__." + format::excerpt(key) + " must be a string");
                f.metadata_[key] = value.get<std::string>();
            }
            continue;
        }
        TensorInfo t = parse_entry(entry, origin, format::excerpt(name));
        if (t.end > buffer) {
            fail(origin, "tensor " + format::excerpt(name) + " ends at byte " + std::to_string(t.end) + " past the data (" +
                             std::to_string(buffer) + " bytes): truncated?");
        }
        if (t.end > t.begin) ranges.emplace_back(t.begin, t.end);
        f.tensors_.emplace(name, std::move(t));
    }
    // The tensors must tile the buffer: sorted by start, each begins where the previous ended.
    std::sort(ranges.begin(), ranges.end());
    uint64_t covered = 0;
    for (const auto & [begin, end] : ranges) {
        if (begin < covered) fail(origin, "tensors overlap at byte " + std::to_string(begin));
        if (begin > covered) fail(origin, "bytes " + std::to_string(covered) + ".." + std::to_string(begin) + " belong to no tensor");
        covered = end;
    }
    if (covered != buffer) fail(origin, "bytes " + std::to_string(covered) + ".." + std::to_string(buffer) + " belong to no tensor");
    f.data_start_ = 8 + header;
    f.bytes_ = std::move(bytes);
    return f;
}

namespace {

// The canonical content digest both sides compute: metadata then tensors, each in name order.
class ContentDigest {
  public:
    void metadata(const std::string & key, const std::string & value) {
        field(key);
        field(value);
    }
    void tensor(const std::string & name, const TensorInfo & info, const uint8_t * bytes) {
        field(name);
        field(dtype_name(info.dtype));
        std::string shape;
        for (int64_t d : info.shape) shape += std::to_string(d) + ",";
        field(shape);
        const uint64_t size = info.end - info.begin;
        sha_.update(&size, sizeof size);
        sha_.update(bytes, size);
    }
    std::string hex() { return sha_.hex(); }

  private:
    void field(const std::string & text) {
        const uint64_t size = text.size();
        sha_.update(&size, sizeof size);  // length-prefixed: no two field lists hash alike
        sha_.update(text);
    }
    Sha256 sha_;
};

}  // namespace

std::string SafetensorsFile::content_digest(const std::string & skip_key) const {
    ContentDigest d;
    for (const auto & [key, value] : metadata_) {
        if (key != skip_key) d.metadata(key, value);
    }
    for (const auto & [name, info] : tensors_) d.tensor(name, info, data(name));
    return d.hex();
}

std::string SafetensorsWriter::content_digest(const std::string & skip_key) const {
    ContentDigest d;
    for (const auto & [key, value] : metadata_) {
        if (key != skip_key) d.metadata(key, value);
    }
    std::map<std::string, const Entry *> by_name;
    for (const auto & e : entries_) by_name[e.name] = &e;
    for (const auto & [name, e] : by_name) {
        TensorInfo info = e->info;
        info.begin = 0;
        info.end = e->bytes.size();
        d.tensor(name, info, e->bytes.data());
    }
    return d.hex();
}

const TensorInfo & SafetensorsFile::info(const std::string & name) const {
    const auto it = tensors_.find(name);
    if (it == tensors_.end()) fail(origin_, "no tensor '" + name + "'");
    return it->second;
}

const uint8_t * SafetensorsFile::data(const std::string & name) const {
    return bytes_.data() + data_start_ + info(name).begin;
}

void SafetensorsWriter::set_metadata(const std::string & key, const std::string & value) { metadata_[key] = value; }

void SafetensorsWriter::add(const std::string & name, DType dtype, std::vector<int64_t> shape, const void * bytes, size_t size) {
    if (name.empty() || name == "__metadata__") throw FormatError("invalid tensor name '" + name + "'");
    for (const auto & e : entries_) {
        if (e.name == name) throw FormatError("duplicate tensor '" + name + "'");
    }
    for (int64_t d : shape) {
        if (d < 0) throw FormatError("tensor " + name + " has a negative dimension");
    }
    Entry e{name, TensorInfo{dtype, std::move(shape), 0, 0}, {}};
    if (byte_size(e.info, "writer", excerpt(name)) != size) {
        throw FormatError("tensor " + name + ": " + std::to_string(size) + " bytes given, dtype and shape need " +
                          std::to_string(byte_size(e.info, "writer", excerpt(name))));
    }
    const auto * p = static_cast<const uint8_t *>(bytes);
    e.bytes.assign(p, p + size);
    entries_.push_back(std::move(e));
}

std::vector<uint8_t> SafetensorsWriter::serialize() const {
    json header = json::object();
    uint64_t offset = 0;
    for (const auto & e : entries_) {
        header[e.name] = {{"dtype", dtype_name(e.info.dtype)}, {"shape", e.info.shape}, {"data_offsets", {offset, offset + e.bytes.size()}}};
        offset += e.bytes.size();
    }
    if (!metadata_.empty()) header["__metadata__"] = metadata_;
    std::string text = header.dump();
    // Pad with spaces so the data starts 8-byte aligned (allowed by the format).
    while ((8 + text.size()) % 8 != 0) text.push_back(' ');
    std::vector<uint8_t> out;
    out.reserve(8 + text.size() + offset);
    const uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(n >> (8 * i)));
    out.insert(out.end(), text.begin(), text.end());
    for (const auto & e : entries_) out.insert(out.end(), e.bytes.begin(), e.bytes.end());
    return out;
}

void SafetensorsWriter::write(const std::string & path) const {
    const auto bytes = serialize();
    try {
        write_file_atomic(path, bytes.data(), bytes.size());
    } catch (const std::runtime_error & e) {
        throw FormatError(e.what());
    }
}

}  // namespace bitvit::format
