#include "format/pickle-check.h"

#include <cstdint>
#include <cstring>

#include "format/safetensors.h"
#include "format/text.h"

namespace bitvit::format {

const PickleAllowList & libtorch_archive_globals() {
    static const PickleAllowList list{{"__torch__ Module", "__torch__.* Module", "torch._utils _rebuild_tensor_v2",
                                       "torch *Storage", "collections OrderedDict"}};
    return list;
}

namespace {

bool matches(const std::string & pattern, const std::string & name) {
    // One '*' at most: prefix*suffix.
    const size_t star = pattern.find('*');
    if (star == std::string::npos) return pattern == name;
    const std::string prefix = pattern.substr(0, star), suffix = pattern.substr(star + 1);
    return name.size() >= prefix.size() + suffix.size() && name.compare(0, prefix.size(), prefix) == 0 &&
           name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

void check_pickle(std::string_view p, const std::string & what, const PickleAllowList & allowed) {
    auto fail = [&](size_t at, const std::string & problem) {
        throw FormatError(what + ": byte " + std::to_string(at) + " of its pickle: " + problem);
    };
    auto need = [&](size_t at, uint64_t n) {
        if (n > p.size() - at) fail(at, "an argument runs past the end of the pickle");
    };
    auto u32 = [&](size_t at) {
        uint32_t v;
        std::memcpy(&v, p.data() + at, 4);
        return v;
    };
    bool stopped = false;
    for (size_t i = 0; i < p.size();) {
        if (stopped) fail(i, "bytes after STOP");
        const auto op = static_cast<unsigned char>(p[i]);
        const size_t at = i++;
        switch (op) {
            // One byte, no argument: MARK, EMPTY_TUPLE/LIST/DICT, TUPLE(1-3), APPEND(S), SETITEM(S),
            // REDUCE, BUILD, NEWOBJ, BINPERSID, NONE, NEWTRUE, NEWFALSE, MEMOIZE, POP.
            case '(': case ')': case ']': case '}': case 't': case 0x85: case 0x86: case 0x87: case 'a': case 'e': case 's':
            case 'u': case 'R': case 'b': case 0x81: case 'Q': case 'N': case 0x88: case 0x89: case 0x94: case '0': break;
            case '.': stopped = true; break;
            case 0x80: need(i, 1); i += 1; break;                          // PROTO
            case 0x95: need(i, 8); i += 8; break;                          // FRAME
            case 'K': case 'q': case 'h': need(i, 1); i += 1; break;       // BININT1, BINPUT, BINGET
            case 'M': need(i, 2); i += 2; break;                           // BININT2
            case 'J': need(i, 4); i += 4; break;                           // BININT
            case 'G': need(i, 8); i += 8; break;                           // BINFLOAT
            case 'r': case 'j':                                            // LONG_BINPUT, LONG_BINGET
                need(i, 4);
                if (u32(i) >= kMaxPickleMemo) fail(at, "memo index " + std::to_string(u32(i)) + " is implausibly large");
                i += 4;
                break;
            case 0x8a: case 0x8c: case 'C': {                              // LONG1, SHORT_BINUNICODE, SHORT_BINBYTES
                need(i, 1);
                const auto n = static_cast<unsigned char>(p[i]);
                if (op == 0x8a && n > 8) fail(at, "an integer of " + std::to_string(n) + " bytes");
                need(i + 1, n);
                i += 1 + n;
                break;
            }
            case 'X': case 'B': {                                          // BINUNICODE, BINBYTES
                need(i, 4);
                const uint32_t n = u32(i);
                need(i + 4, n);
                i += 4 + n;
                break;
            }
            case 'c': {                                                    // GLOBAL "module\nname\n"
                const size_t a = p.find('\n', i);
                const size_t b = a == std::string_view::npos ? a : p.find('\n', a + 1);
                if (b == std::string_view::npos || b - i > 512) fail(at, "a malformed GLOBAL");
                const std::string name = std::string(p.substr(i, a - i)) + " " + std::string(p.substr(a + 1, b - a - 1));
                bool ok = false;
                for (const auto & pattern : allowed.globals) ok = ok || matches(pattern, name);
                if (!ok) fail(at, "it names " + excerpt(name) + ", which a tensor archive does not use (nothing from it is run)");
                i = b + 1;
                break;
            }
            default: {
                char hex[8];
                std::snprintf(hex, sizeof hex, "0x%02x", op);
                fail(at, std::string("opcode ") + hex + " is not one a tensor archive uses");
            }
        }
    }
    if (!stopped) fail(p.size(), "no STOP: truncated?");
}

}  // namespace bitvit::format
