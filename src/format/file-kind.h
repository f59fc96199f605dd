// What a file is, judged from the file system and its first bytes, so that a command given the
// wrong kind of file says what it was given and which command takes it (a checkpoint where a packed
// model is expected, a directory where a file is, a pipe where a file is read).
#pragma once

#include <string>

namespace bitvit::format {

enum class FileKind {
    missing,
    directory,
    not_regular,   // a FIFO, socket or device: never read (it could block or never end)
    empty,
    safetensors,   // a plausible safetensors header (a bitvit packed model, or any safetensors file)
    zip_archive,   // a zip, as LibTorch checkpoints (bitvit's checkpoint.pt) and torch.save files are
    other,
};

FileKind file_kind(const std::string & path);

// "<path>: <what it is and which command takes it>" for a file that is not of the kind `expected`
// describes ("a bitvit packed model", "a checkpoint"); used by the loaders' error messages.
std::string wrong_kind_message(const std::string & path, FileKind kind, const std::string & expected);

}  // namespace bitvit::format
