#include "atomic-file.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace bitvit::format {
namespace {
void fsync_path(const std::string & path, bool directory) {
    const int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return;  // best effort: durability, not correctness, depends on it
    ::fsync(fd);
    ::close(fd);
}
}  // namespace

std::string temp_path_for(const std::string & path) { return path + ".tmp." + std::to_string(::getpid()); }

void commit_temp_file(const std::string & temp, const std::string & path) {
    fsync_path(temp, false);
    std::error_code ec;
    std::filesystem::rename(temp, path, ec);
    if (ec) {
        std::filesystem::remove(temp, ec);
        throw std::runtime_error(path + ": cannot replace file (" + ec.message() + ")");
    }
    const auto dir = std::filesystem::path(path).parent_path();
    fsync_path(dir.empty() ? "." : dir.string(), true);
}

void write_file_atomic(const std::string & path, const void * bytes, size_t size) {
    const std::string temp = temp_path_for(path);
    {
        std::ofstream out(temp, std::ios::binary | std::ios::trunc);
        out.write(static_cast<const char *>(bytes), static_cast<std::streamsize>(size));
        if (!out.flush()) {
            std::error_code ec;
            std::filesystem::remove(temp, ec);
            throw std::runtime_error(path + ": cannot write");
        }
    }
    commit_temp_file(temp, path);
}

}  // namespace bitvit::format
