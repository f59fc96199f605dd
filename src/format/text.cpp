#include "format/text.h"

#include <nlohmann/json.hpp>
#include <stdexcept>

namespace bitvit::format {

namespace {

void append_escaped(std::string & out, char c) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n') {
        out += "\\n";
    } else if (u < 0x20 || u == 0x7f) {
        static const char * kHex = "0123456789abcdef";
        out += "\\x";
        out += kHex[u >> 4];
        out += kHex[u & 15];
    } else {
        out += c;
    }
}

}  // namespace

std::string excerpt(std::string_view text, size_t max_chars) {
    std::string out = "'";
    const size_t shown = std::min(text.size(), max_chars);
    for (size_t i = 0; i < shown; ++i) append_escaped(out, text[i]);
    if (shown == text.size()) return out + "'";
    return out + "…' (" + std::to_string(text.size()) + " bytes)";
}

std::string excerpt_json(const nlohmann::json & value, size_t max_chars) {
    // dump() recurses once per level; values reaching here come from parse_json (bounded depth).
    return excerpt(std::string_view(value.dump()), max_chars);
}

nlohmann::json parse_json(std::string_view text, const std::string & what) {
    // The parser callback sees every value's depth before it is built; refusing there keeps a
    // deeply nested document from ever becoming a deep tree.
    bool too_deep = false;
    auto limit = [&too_deep](int depth, nlohmann::json::parse_event_t, nlohmann::json &) {
        if (depth > kMaxJsonDepth) too_deep = true;
        return !too_deep;
    };
    nlohmann::json parsed;
    try {
        parsed = nlohmann::json::parse(text.begin(), text.end(), limit, /*allow_exceptions=*/true);
    } catch (const nlohmann::json::exception &) {
        if (!too_deep) throw std::invalid_argument(what + " is not valid JSON");
    }
    if (too_deep) throw std::invalid_argument(what + " nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    return parsed;
}

}  // namespace bitvit::format
