#include "format/zip-check.h"

#include <cstring>
#include <fstream>
#include <vector>

#include "format/safetensors.h"

namespace bitvit::format {

namespace {

uint32_t u16(const uint8_t * p) { return p[0] | uint32_t{p[1]} << 8; }
uint32_t u32(const uint8_t * p) { return p[0] | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24; }
uint64_t u64(const uint8_t * p) { return uint64_t{u32(p)} | uint64_t{u32(p + 4)} << 32; }

[[noreturn]] void fail(const std::string & path, const std::string & what) { throw FormatError(path + ": not a valid zip archive (" + what + ")"); }

// Reads n bytes at offset, or fails.
std::vector<uint8_t> read_at(std::ifstream & in, uint64_t offset, uint64_t n, uint64_t file_size, const std::string & path) {
    if (offset > file_size || n > file_size - offset) fail(path, "a directory field points past the end of the file");
    std::vector<uint8_t> out(static_cast<size_t>(n));
    in.seekg(static_cast<std::streamoff>(offset));
    if (n > 0 && !in.read(reinterpret_cast<char *>(out.data()), static_cast<std::streamsize>(n))) fail(path, "read failed");
    return out;
}

// The zip64 sizes of a central directory entry, where its 32-bit fields say 0xFFFFFFFF.
void zip64_sizes(const uint8_t * extra, uint32_t length, uint64_t & compressed, uint64_t & uncompressed) {
    for (uint32_t i = 0; i + 4 <= length;) {
        const uint32_t id = u16(extra + i), size = u16(extra + i + 2);
        if (id == 0x0001) {
            uint32_t at = i + 4;
            if (uncompressed == 0xFFFFFFFFu && at + 8 <= i + 4 + size && at + 8 <= length) uncompressed = u64(extra + at), at += 8;
            if (compressed == 0xFFFFFFFFu && at + 8 <= i + 4 + size && at + 8 <= length) compressed = u64(extra + at);
            return;
        }
        i += 4 + size;
    }
}

}  // namespace

void check_zip_sizes(const std::string & path) {
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in) fail(path, "cannot open");
    const auto file_size = static_cast<uint64_t>(in.tellg());
    // The end-of-central-directory record is in the last 64 KiB + 22 bytes.
    const uint64_t tail_size = std::min<uint64_t>(file_size, 65536 + 22);
    const std::vector<uint8_t> tail = read_at(in, file_size - tail_size, tail_size, file_size, path);
    int64_t eocd = -1;
    for (int64_t i = static_cast<int64_t>(tail.size()) - 22; i >= 0; --i) {
        if (u32(tail.data() + i) == 0x06054b50) {
            eocd = i;
            break;
        }
    }
    if (eocd < 0) fail(path, "no end-of-central-directory record: truncated?");
    uint64_t entries = u16(tail.data() + eocd + 10), dir_size = u32(tail.data() + eocd + 12), dir_offset = u32(tail.data() + eocd + 16);
    if (dir_offset == 0xFFFFFFFFu || entries == 0xFFFF) {  // zip64: the locator sits just before the record
        const uint64_t locator_at = file_size - tail_size + static_cast<uint64_t>(eocd) - 20;
        const std::vector<uint8_t> locator = read_at(in, locator_at, 20, file_size, path);
        if (u32(locator.data()) != 0x07064b50) fail(path, "a zip64 archive without its locator");
        const std::vector<uint8_t> record = read_at(in, u64(locator.data() + 8), 56, file_size, path);
        if (u32(record.data()) != 0x06064b50) fail(path, "a broken zip64 end record");
        entries = u64(record.data() + 32);
        dir_size = u64(record.data() + 40);
        dir_offset = u64(record.data() + 48);
    }
    const std::vector<uint8_t> dir = read_at(in, dir_offset, dir_size, file_size, path);
    uint64_t at = 0;
    for (uint64_t e = 0; e < entries; ++e) {
        if (at + 46 > dir.size() || u32(dir.data() + at) != 0x02014b50) fail(path, "a broken central directory entry");
        const uint32_t method = u16(dir.data() + at + 10);
        uint64_t compressed = u32(dir.data() + at + 20), uncompressed = u32(dir.data() + at + 24);
        const uint32_t name_len = u16(dir.data() + at + 28), extra_len = u16(dir.data() + at + 30), comment_len = u16(dir.data() + at + 32);
        if (at + 46 + name_len + extra_len + comment_len > dir.size()) fail(path, "a central directory entry runs past the directory");
        zip64_sizes(dir.data() + at + 46 + name_len, extra_len, compressed, uncompressed);
        const bool stored = method == 0;
        if (compressed > file_size || (stored && uncompressed != compressed) ||
            (!stored && uncompressed > kMaxExpansion * std::max<uint64_t>(compressed, 1))) {
            fail(path, "an entry declares " + std::to_string(uncompressed) + " bytes, more than the " + std::to_string(file_size) +
                           "-byte file can hold");
        }
        at += 46 + name_len + extra_len + comment_len;
    }
}

}  // namespace bitvit::format
