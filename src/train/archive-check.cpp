#include "archive-check.h"

#include <caffe2/serialize/inline_container.h>

#include <regex>
#include <sstream>

#include "format/pickle-check.h"
#include "format/safetensors.h"
#include "format/text.h"
#include "format/zip-check.h"

namespace bitvit {

void check_module_source(std::string_view text, const std::string & what) {
    if (text.size() > (1u << 20)) throw format::FormatError(what + ": a module's source is implausibly long");
    // The declarations LibTorch's serializer writes for an nn::Module saved through an OutputArchive.
    static const std::string name = R"([A-Za-z_][A-Za-z0-9_]{0,255})";
    static const std::string str = R"("[^"\\\n]{0,256}")";
    static const std::string scalar = R"((?:Tensor|int|float|str|bool))";
    static const std::string type = "(?:" + scalar + R"(|Tuple\[)" + scalar + "(?:, " + scalar + R"(){0,7}\]|__torch__(?:\.___torch_mangle_[0-9]{1,9})?\.Module))";
    static const std::regex line("class Module\\(Module\\):|  __(?:parameters|buffers)__ = \\[(?:" + str + ", )*\\]|  __annotations__ = \\[\\]|  " +
                                 name + " : " + type + "|  __annotations__\\[" + str + "\\] = " + type);
    std::istringstream in{std::string(text)};
    std::string l;
    for (int n = 1; std::getline(in, l); ++n) {
        if (l.empty()) continue;
        if (!std::regex_match(l, line)) {
            throw format::FormatError(what + ": line " + std::to_string(n) + " is not a declaration LibTorch writes for a module (" +
                                      format::excerpt(l) + "): the checkpoint is corrupt or was not written by bitvit");
        }
    }
}

void check_libtorch_archive(const std::string & path) {
    format::check_zip_sizes(path);  // before LibTorch's reader allocates what the directory declares
    caffe2::serialize::PyTorchStreamReader reader(path);
    for (const auto & record : reader.getAllRecords()) {
        auto ends_with = [&](const char * suffix) {
            const std::string s(suffix);
            return record.size() >= s.size() && record.compare(record.size() - s.size(), s.size(), s) == 0;
        };
        if (!ends_with(".pkl") && !ends_with(".py")) continue;
        auto [data, size] = reader.getRecord(record);
        const std::string_view bytes(static_cast<const char *>(data.get()), size);
        const std::string what = path + " (" + record + ")";
        if (ends_with(".py")) {
            check_module_source(bytes, what);
        } else {
            format::check_pickle(bytes, what, format::libtorch_archive_globals());
        }
    }
}

}  // namespace bitvit
