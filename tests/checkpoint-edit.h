// Editing a LibTorch checkpoint as an attacker or a flipped bit would: the archive's records read and
// written back (caffe2's zip reader and writer, so the result is a well-formed archive), and the
// integers of its data.pkl located by opcode, so a test can point one tensor's storage offset, size
// or stride anywhere. For the checkpoint tests and the checkpoint fuzzer.
#pragma once

#include <caffe2/serialize/inline_container.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace bitvit::testing_support {

struct ArchiveRecords {
    std::vector<std::pair<std::string, std::string>> records;  // name -> bytes, in the file's order

    static ArchiveRecords read(const std::string & path) {
        caffe2::serialize::PyTorchStreamReader reader(path);
        ArchiveRecords a;
        for (const auto & name : reader.getAllRecords()) {
            auto [data, size] = reader.getRecord(name);
            a.records.emplace_back(name, std::string(static_cast<const char *>(data.get()), size));
        }
        return a;
    }
    void write(const std::string & path) const {
        caffe2::serialize::PyTorchStreamWriter writer(path);
        for (const auto & [name, bytes] : records) {
            if (name == "version" || name == ".data/version") continue;  // the writer adds its own
            writer.writeRecord(name, bytes.data(), bytes.size());
        }
        writer.writeEndOfFile();
    }
    std::string & pickle() {
        for (auto & [name, bytes] : records) {
            if (name == "data.pkl") return bytes;
        }
        throw std::runtime_error("archive without data.pkl");
    }
};

// An integer in the pickle: where its opcode starts, its length and its value.
struct PickleInt {
    size_t at, length;
    int64_t value;
    bool storage_offset;  // the storage offset argument of a tensor rebuild
};

// Walks the opcodes LibTorch's pickler writes (protocol 2) and returns every integer, marking the
// storage offsets: after GLOBAL torch._utils._rebuild_tensor_v2 comes the storage's persistent id
// (a tuple ending in BINPERSID), then the offset (after a memo BINPUT).
inline std::vector<PickleInt> pickle_ints(const std::string & p) {
    std::vector<PickleInt> out;
    bool in_rebuild = false, offset_next = false, memo_next = false;
    std::vector<uint32_t> rebuild_memo;  // memo slots holding the rebuild function (later BINGETs)
    auto u32 = [&](size_t i) { uint32_t v; std::memcpy(&v, p.data() + i, 4); return v; };
    for (size_t i = 0; i < p.size();) {
        const auto op = static_cast<unsigned char>(p[i]);
        auto add_int = [&](size_t len, int64_t v) {
            out.push_back({i, len, v, offset_next});
            offset_next = false;
            i += len;
        };
        switch (op) {
            case 'K': add_int(2, static_cast<unsigned char>(p[i + 1])); continue;
            case 'M': add_int(3, static_cast<unsigned char>(p[i + 1]) | static_cast<unsigned char>(p[i + 2]) << 8); continue;
            case 'J': add_int(5, static_cast<int32_t>(u32(i + 1))); continue;
            case 0x8a: i += 2 + static_cast<unsigned char>(p[i + 1]); offset_next = false; continue;  // LONG1
            case 'c': {  // GLOBAL module\nname\n
                const size_t a = p.find('\n', i + 1), b = p.find('\n', a + 1);
                if (p.compare(i + 1, b - i - 1, "torch._utils\n_rebuild_tensor_v2") == 0) in_rebuild = memo_next = true;
                i = b + 1;
                continue;
            }
            case 'q': case 'r': {
                const uint32_t slot = op == 'q' ? static_cast<unsigned char>(p[i + 1]) : u32(i + 1);
                if (memo_next) rebuild_memo.push_back(slot);
                memo_next = false;
                i += op == 'q' ? 2 : 5;
                continue;
            }
            case 'h': case 'j': {
                const uint32_t slot = op == 'h' ? static_cast<unsigned char>(p[i + 1]) : u32(i + 1);
                for (uint32_t m : rebuild_memo) in_rebuild = in_rebuild || m == slot;
                i += op == 'h' ? 2 : 5;
                continue;
            }
            case 'Q': offset_next = in_rebuild; in_rebuild = false; i += 1; continue;
            case 'X': case 'B': i += 5 + u32(i + 1); continue;
            case 'C': case 0x8c: i += 2 + static_cast<unsigned char>(p[i + 1]); continue;
            case 'G': i += 9; continue;
            case 0x80: i += 2; continue;
            default: i += 1; continue;  // one-byte opcodes: MARK, TUPLE*, EMPTY_*, SETITEM(S), APPEND(S), REDUCE, BUILD, bools, NONE, STOP
        }
    }
    return out;
}

// Replaces the integer at `x` by `value` (as BININT, 4 bytes).
inline void set_pickle_int(std::string & p, const PickleInt & x, int32_t value) {
    std::string op(5, 'J');
    std::memcpy(op.data() + 1, &value, 4);
    p.replace(x.at, x.length, op);
}

}  // namespace bitvit::testing_support
