// Atomic file replacement: write to a temporary file in the target's directory, fsync it, rename it
// over the target, fsync the directory. A reader (or a crash) sees the old file or the new one,
// never a mix. Used for checkpoints, exports and run files.
#pragma once

#include <string>

namespace bitvit::format {

// A temporary name next to `path`, unique to this process.
std::string temp_path_for(const std::string & path);

// Moves the fully written `temp` over `path` (fsync, rename, fsync of the directory). On failure the
// temporary file is removed and std::runtime_error names `path`.
void commit_temp_file(const std::string & temp, const std::string & path);

// Writes `size` bytes to `path` atomically.
void write_file_atomic(const std::string & path, const void * bytes, size_t size);

}  // namespace bitvit::format
