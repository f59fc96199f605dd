#include "safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "atomic-file.h"
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
            fail(origin, "tensor '" + name + "' shape overflows");
        }
        n *= static_cast<uint64_t>(d);
    }
    return n;
}

TensorInfo parse_entry(const json & entry, const std::string & origin, const std::string & name) {
    if (!entry.is_object()) fail(origin, "tensor '" + name + "' must be a JSON object");
    for (const auto & [key, value] : entry.items()) {
        if (key != "dtype" && key != "shape" && key != "data_offsets") {
            fail(origin, "tensor '" + name + "' has unknown field '" + key + "'");
        }
    }
    if (!entry.contains("dtype") || !entry["dtype"].is_string()) fail(origin, "tensor '" + name + "' needs a dtype string");
    if (!entry.contains("shape") || !entry["shape"].is_array()) fail(origin, "tensor '" + name + "' needs a shape array");
    if (!entry.contains("data_offsets") || !entry["data_offsets"].is_array() || entry["data_offsets"].size() != 2) {
        fail(origin, "tensor '" + name + "' needs data_offsets [begin, end]");
    }
    TensorInfo t;
    try {
        t.dtype = parse_dtype(entry["dtype"].get<std::string>());
    } catch (const FormatError & e) {
        fail(origin, "tensor '" + name + "': " + e.what());
    }
    for (const auto & d : entry["shape"]) {
        if (!d.is_number_unsigned()) fail(origin, "tensor '" + name + "' shape must hold non-negative integers");
        const uint64_t v = d.get<uint64_t>();
        if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) fail(origin, "tensor '" + name + "' dimension too large");
        t.shape.push_back(static_cast<int64_t>(v));
    }
    for (const auto & o : entry["data_offsets"]) {
        if (!o.is_number_unsigned()) fail(origin, "tensor '" + name + "' data_offsets must be non-negative integers");
    }
    t.begin = entry["data_offsets"][0].get<uint64_t>();
    t.end = entry["data_offsets"][1].get<uint64_t>();
    if (t.end < t.begin) fail(origin, "tensor '" + name + "' ends before it begins");
    if (t.end - t.begin != byte_size(t, origin, name)) {
        fail(origin, "tensor '" + name + "' has " + std::to_string(t.end - t.begin) + " bytes but its dtype and shape need " +
                         std::to_string(byte_size(t, origin, name)));
    }
    return t;
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

SafetensorsFile SafetensorsFile::load(const std::string & path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path, "cannot open");
    in.seekg(0, std::ios::end);
    const auto size = static_cast<size_t>(in.tellg());
    in.seekg(0);
    std::vector<uint8_t> bytes(size);
    if (size > 0 && !in.read(reinterpret_cast<char *>(bytes.data()), static_cast<std::streamsize>(size))) fail(path, "read failed");
    return parse(std::move(bytes), path);
}

SafetensorsFile SafetensorsFile::parse(std::vector<uint8_t> bytes, const std::string & origin) {
    SafetensorsFile f;
    f.origin_ = origin;
    if (bytes.size() < 8) fail(origin, "too short for a safetensors header (" + std::to_string(bytes.size()) + " bytes)");
    uint64_t header = 0;
    for (int i = 7; i >= 0; --i) header = (header << 8) | bytes[static_cast<size_t>(i)];
    if (header > kMaxHeaderBytes) fail(origin, "header length " + std::to_string(header) + " exceeds the 100 MB limit");
    if (header > bytes.size() - 8) {
        fail(origin, "header length " + std::to_string(header) + " runs past the end of the file (" +
                         std::to_string(bytes.size()) + " bytes): truncated?");
    }
    if (header < 2 || bytes[8] != '{') fail(origin, "header is not a JSON object");
    json root;
    try {
        root = json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(header));
    } catch (const json::exception & e) {
        fail(origin, std::string("header is not valid JSON: ") + e.what());
    }
    if (!root.is_object()) fail(origin, "header is not a JSON object");
    const uint64_t buffer = bytes.size() - 8 - header;
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    for (const auto & [name, entry] : root.items()) {
        if (name == "__metadata__") {
            if (!entry.is_object()) fail(origin, "__metadata__ must be an object of strings");
            for (const auto & [key, value] : entry.items()) {
                if (!value.is_string()) fail(origin, "__metadata__." + key + " must be a string");
                f.metadata_[key] = value.get<std::string>();
            }
            continue;
        }
        TensorInfo t = parse_entry(entry, origin, name);
        if (t.end > buffer) {
            fail(origin, "tensor '" + name + "' ends at byte " + std::to_string(t.end) + " past the data (" +
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
        if (d < 0) throw FormatError("tensor '" + name + "' has a negative dimension");
    }
    Entry e{name, TensorInfo{dtype, std::move(shape), 0, 0}, {}};
    if (byte_size(e.info, "writer", name) != size) {
        throw FormatError("tensor '" + name + "': " + std::to_string(size) + " bytes given, dtype and shape need " +
                          std::to_string(byte_size(e.info, "writer", name)));
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
