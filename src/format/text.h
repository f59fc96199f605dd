// Quoting untrusted text in messages, and parsing untrusted JSON. A message never carries more than
// a short excerpt of what it rejects (a 10 MB tensor name must not become a 10 MB error), and JSON
// from a file is parsed with a bounded nesting depth, so neither parsing nor printing it can
// exhaust the stack.
#pragma once

#include <cstddef>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>

namespace bitvit::format {

// `text` quoted, with control characters escaped, cut to at most `max_chars` characters
// (then "…" and the full length): "'blocks.0.attn.q'", "'aaaa…' (10485760 bytes)".
std::string excerpt(std::string_view text, size_t max_chars = 64);

// A JSON value shown as an excerpt of its compact text (at most `max_chars`), whatever its depth.
std::string excerpt_json(const nlohmann::json & value, size_t max_chars = 64);

// The deepest nesting parse_json accepts; bitvit's metadata needs 3.
constexpr int kMaxJsonDepth = 32;

// Parses `text` as JSON; throws std::invalid_argument "<what> is not valid JSON" or "<what> nests
// deeper than kMaxJsonDepth levels".
nlohmann::json parse_json(std::string_view text, const std::string & what);

}  // namespace bitvit::format
