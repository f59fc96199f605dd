#include "atomic-file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
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
    const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        const auto dir = std::filesystem::path(path).parent_path();
        const std::string reason = errno == ENOENT && !dir.empty() && !std::filesystem::exists(dir)
                                       ? "the directory " + dir.string() + " does not exist"
                                       : std::strerror(errno);
        throw std::runtime_error(path + ": cannot write (" + reason + ")");
    }
    const auto * p = static_cast<const char *>(bytes);
    size_t done = 0;
    while (done < size) {
        const ssize_t n = ::write(fd, p + done, size - done);
        if (n <= 0) {
            const std::string reason = n < 0 ? std::strerror(errno) : "no progress";
            ::close(fd);
            std::error_code ec;
            std::filesystem::remove(temp, ec);
            throw std::runtime_error(path + ": cannot write (" + reason + ")");
        }
        done += static_cast<size_t>(n);
    }
    ::close(fd);
    commit_temp_file(temp, path);
}

}  // namespace bitvit::format
