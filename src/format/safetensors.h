// The safetensors container (https://huggingface.co/docs/safetensors): an 8-byte little-endian header
// length N, N bytes of JSON ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
// "__metadata__": {string: string}}), then the tensors' bytes. Offsets are relative to the end of
// the header; the tensors must cover that buffer exactly — no gaps, no overlaps — as the format's
// reference implementation requires. bitvit's packed models are safetensors files (docs/format.md),
// so standard readers can list them. No LibTorch: the runtime reads them.
//
// Everything read is validated; a file fed to parse() may be hostile (truncated, lying lengths,
// overlapping tensors, absurd shapes): every such case throws FormatError, never reads out of bounds.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace bitvit::format {

class FormatError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

enum class DType { BOOL, U8, I8, U16, I16, F16, BF16, U32, I32, F32, U64, I64, F64 };

const char * dtype_name(DType dtype);
size_t dtype_size(DType dtype);
DType parse_dtype(const std::string & name);  // throws FormatError for names outside the list above

// An IEEE 754 binary16 value (F16) widened to float: exact, as every F16 value is a float.
float f16_to_f32(uint16_t bits);

struct TensorInfo {
    DType dtype = DType::U8;
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0;  // byte range in the data buffer
    int64_t numel() const;
};

// A parsed, fully validated safetensors file held in memory.
class SafetensorsFile {
  public:
    // Reads and validates a file; errors name the path. Only a regular file is read, its header first
    // and checked against the file's size, then exactly the data it declares.
    static SafetensorsFile load(const std::string & path);
    // Validates bytes; `origin` names them in errors.
    static SafetensorsFile parse(std::vector<uint8_t> bytes, const std::string & origin);
    // The data bytes a header declares (the largest tensor end), from the length prefix and header
    // alone; throws FormatError if the header is malformed.
    static uint64_t declared_data_bytes(const std::vector<uint8_t> & header_bytes, const std::string & origin);

    const std::map<std::string, std::string> & metadata() const { return metadata_; }
    const std::map<std::string, TensorInfo> & tensors() const { return tensors_; }
    bool has(const std::string & name) const { return tensors_.count(name) != 0; }
    // The tensor's description; throws FormatError naming the file if absent.
    const TensorInfo & info(const std::string & name) const;
    // The tensor's bytes (info(name).end − begin of them).
    const uint8_t * data(const std::string & name) const;
    const std::string & origin() const { return origin_; }
    // The whole file's size in bytes (length prefix, header and data).
    uint64_t size_bytes() const { return bytes_.size(); }
    // SHA-256 over the metadata (except `skip_key`) and every tensor's name, dtype, shape and bytes,
    // in name order: independent of the header's layout and key order (docs/format.md, "checksum").
    std::string content_digest(const std::string & skip_key) const;

  private:
    std::string origin_;
    std::vector<uint8_t> bytes_;
    uint64_t data_start_ = 0;
    std::map<std::string, std::string> metadata_;
    std::map<std::string, TensorInfo> tensors_;
};

// Builds a safetensors file: tensors are laid out in the order added, back to back.
class SafetensorsWriter {
  public:
    void set_metadata(const std::string & key, const std::string & value);
    // Throws FormatError for a duplicate name, a negative dimension or a byte count that does not
    // match shape × dtype.
    void add(const std::string & name, DType dtype, std::vector<int64_t> shape, const void * bytes, size_t size);
    std::vector<uint8_t> serialize() const;
    // SafetensorsFile::content_digest() of the file serialize() makes.
    std::string content_digest(const std::string & skip_key) const;
    // Writes atomically: a temporary file in the same directory, fsync, rename.
    void write(const std::string & path) const;

  private:
    struct Entry {
        std::string name;
        TensorInfo info;
        std::vector<uint8_t> bytes;
    };
    std::vector<Entry> entries_;
    std::map<std::string, std::string> metadata_;
};

}  // namespace bitvit::format
