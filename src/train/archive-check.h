// A LibTorch archive (bitvit's checkpoint.pt) checked before LibTorch reads it. torch::serialize
// archives are TorchScript modules: besides the pickles of their values they hold the source of one
// small class per module (code/__torch__/*.py), which LibTorch's TorchScript parser compiles on
// load — on crafted text that parser crashes. So: the zip directory's sizes against the file, every
// pickle against format::check_pickle, and every class source against the one grammar LibTorch
// writes for these modules (declarations of parameters, buffers and typed attributes, nothing else).
#pragma once

#include <string>
#include <string_view>

namespace bitvit {

// Throws format::FormatError naming the file and the record.
void check_libtorch_archive(const std::string & path);

// One code/*.py record: "class Module(Module):" and declaration lines only.
void check_module_source(std::string_view text, const std::string & what);

}  // namespace bitvit
