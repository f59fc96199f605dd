// A Python pickle checked before any unpickler sees it: every opcode one that a tensor archive
// needs (literals, containers, memo, persistent ids, REDUCE/BUILD on allowed globals), every length
// inside the bytes, memo indices bounded, and every GLOBAL one of the allowed names — so a crafted
// pickle can neither make LibTorch's unpickler allocate gigabytes nor name a function to call.
// For bitvit checkpoints (LibTorch archives) and for torch.save files (the import issue).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace bitvit::format {

// Globals a tensor archive may name: "module name" pairs as the GLOBAL opcode spells them, a
// trailing '*' matching any suffix ("__torch__.*" covers LibTorch's mangled module classes).
struct PickleAllowList {
    std::vector<std::string> globals;
};

// bitvit's own checkpoints (torch::serialize::OutputArchive): module objects, tensors, storages.
const PickleAllowList & libtorch_archive_globals();

constexpr size_t kMaxPickleMemo = size_t{1} << 22;

// Throws FormatError "<what>: …" naming the offset and the opcode or global at fault.
void check_pickle(std::string_view bytes, const std::string & what, const PickleAllowList & allowed);

}  // namespace bitvit::format
