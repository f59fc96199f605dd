#include "format/file-kind.h"

#include <sys/stat.h>

#include <cstdint>
#include <cstring>
#include <fstream>

namespace bitvit::format {

FileKind file_kind(const std::string & path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return FileKind::missing;
    if (S_ISDIR(st.st_mode)) return FileKind::directory;
    if (!S_ISREG(st.st_mode)) return FileKind::not_regular;
    if (st.st_size == 0) return FileKind::empty;
    std::ifstream in(path, std::ios::binary);
    unsigned char head[9] = {};
    in.read(reinterpret_cast<char *>(head), sizeof head);
    const auto got = static_cast<size_t>(in.gcount());
    if (got >= 4 && std::memcmp(head, "PK\x03\x04", 4) == 0) return FileKind::zip_archive;
    if (got == 9 && head[8] == '{') {
        uint64_t header = 0;
        for (int i = 7; i >= 0; --i) header = (header << 8) | head[i];
        if (header + 8 <= static_cast<uint64_t>(st.st_size)) return FileKind::safetensors;
    }
    return FileKind::other;
}

std::string wrong_kind_message(const std::string & path, FileKind kind, const std::string & expected) {
    switch (kind) {
        case FileKind::missing: return path + ": file not found";
        case FileKind::directory: return path + " is a directory, not " + expected + " (a run directory holds checkpoint.pt)";
        case FileKind::not_regular: return path + " is not a regular file (a pipe, socket or device), not " + expected;
        case FileKind::empty: return path + " is empty, not " + expected;
        case FileKind::zip_archive:
            return path + " is a zip archive — a LibTorch checkpoint such as bitvit train's checkpoint.pt — not " + expected +
                   ": bitvit eval, export, verify and info take checkpoints; bitvit run and bitvit-rt take the packed "
                   "model `bitvit export` writes";
        case FileKind::safetensors:
            return path + " is a safetensors file (a packed model from bitvit export), not " + expected +
                   ": bitvit run, bitvit-rt and the second argument of bitvit verify take packed models";
        case FileKind::other: break;
    }
    return path + " is not " + expected;
}

}  // namespace bitvit::format
