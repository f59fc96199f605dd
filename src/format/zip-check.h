// A zip archive's central directory checked against the file it is in, before a zip reader trusts
// it: LibTorch's reader allocates each record's declared uncompressed size before reading it, so a
// corrupt or crafted size field would ask for gigabytes. LibTorch stores records uncompressed; bitvit
// accepts compressed ones too, but never one that would expand beyond kMaxExpansion times its bytes.
#pragma once

#include <cstdint>
#include <string>

namespace bitvit::format {

constexpr uint64_t kMaxExpansion = 1024;

// Throws FormatError naming `path` if the archive's end record or central directory is missing or
// malformed, or any entry declares more bytes than the file can hold.
void check_zip_sizes(const std::string & path);

}  // namespace bitvit::format
