// The pickle of a torch.save file (`archive/data.pkl` in its zip) read without Python and without
// LibTorch's unpickler (which lacks SETITEM and so cannot read what torch.save writes for a small
// dict). Only data is read: None, bools, numbers, strings, tuples, lists, dicts, OrderedDicts and
// tensors (torch._utils._rebuild_tensor_v2 / _rebuild_parameter over a persistent storage id). The
// bytes first pass check_pickle() with torch_save_globals(), so nothing else can even be named, and
// the interpreter bounds nesting and memo size; every malformed stack throws FormatError.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "format/pickle-check.h"
#include "format/safetensors.h"

namespace bitvit::format {

// The globals a torch.save of a state dict names: tensor rebuilders, typed storages, OrderedDict.
const PickleAllowList & torch_save_globals();

// One tensor as the pickle describes it: a strided view of storage `storage_key` (the zip record
// `<archive>/data/<storage_key>`), not yet checked against that record's size.
struct PickledTensor {
    DType dtype = DType::F32;
    std::string storage_key;
    int64_t storage_numel = 0;  // elements the storage declares
    int64_t offset = 0;         // in elements
    std::vector<int64_t> shape, stride;
};

struct PickledStateDict {
    std::vector<std::pair<std::string, PickledTensor>> tensors;  // in the file's order
    std::string found_at;  // where the state dict was: "" (the top level), "model", "state_dict", …
};

// Finds the state dict in a torch.save pickle: the top-level dict when its values are all tensors,
// else the first of its entries "state_dict", "model", "model_ema", "module" that is a dict of
// tensors (the nesting of the released DeiT and Swin checkpoints). Throws FormatError naming `what`
// and what was found instead.
PickledStateDict read_torch_state_dict(std::string_view pickle, const std::string & what);

// Number of elements a view reaches into its storage (offset + the last element's index + 1; 0 for
// an empty view), or −1 when a stride is negative or the extent overflows.
int64_t storage_extent(const PickledTensor & t);

}  // namespace bitvit::format
