#include "format/torch-pickle.h"

#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <unordered_map>

#include "format/text.h"

namespace bitvit::format {

const PickleAllowList & torch_save_globals() {
    static const PickleAllowList list{{"torch._utils _rebuild_tensor_v2", "torch._utils _rebuild_parameter", "torch *Storage",
                                       "collections OrderedDict"}};
    return list;
}

namespace {

constexpr int kMaxNesting = 64;

struct Value;
using Ref = std::shared_ptr<Value>;

struct Value {
    enum class Kind { none, boolean, integer, real, string, bytes, tuple, list, dict, global, storage, tensor };
    Kind kind = Kind::none;
    int64_t integer = 0;
    double real = 0;
    std::string text;                          // string, bytes, global ("module name")
    std::vector<Ref> items;                    // tuple, list
    std::vector<std::pair<Ref, Ref>> entries;  // dict, in insertion order
    PickledTensor tensor;                      // storage (dtype, key, numel), tensor
    int depth = 0;                             // containers nested below this value
};

const char * kind_name(Value::Kind k) {
    switch (k) {
        case Value::Kind::none: return "None";
        case Value::Kind::boolean: return "a bool";
        case Value::Kind::integer: return "an int";
        case Value::Kind::real: return "a float";
        case Value::Kind::string: return "a string";
        case Value::Kind::bytes: return "bytes";
        case Value::Kind::tuple: return "a tuple";
        case Value::Kind::list: return "a list";
        case Value::Kind::dict: return "a dict";
        case Value::Kind::global: return "a global";
        case Value::Kind::storage: return "a storage";
        case Value::Kind::tensor: return "a tensor";
    }
    return "?";
}

DType storage_dtype(const std::string & global) {
    static const std::map<std::string, DType> types{
        {"torch FloatStorage", DType::F32}, {"torch DoubleStorage", DType::F64}, {"torch HalfStorage", DType::F16},
        {"torch BFloat16Storage", DType::BF16}, {"torch LongStorage", DType::I64}, {"torch IntStorage", DType::I32},
        {"torch ShortStorage", DType::I16}, {"torch CharStorage", DType::I8}, {"torch ByteStorage", DType::U8},
        {"torch BoolStorage", DType::BOOL}};
    const auto it = types.find(global);
    if (it == types.end()) throw FormatError("storage type " + excerpt(global) + " is not one bitvit reads");
    return it->second;
}

class Interpreter {
  public:
    Interpreter(std::string_view p, const std::string & what) : p_(p), what_(what) {}

    Ref run() {
        for (size_t i = 0; i < p_.size();) {
            at_ = i;
            const auto op = static_cast<unsigned char>(p_[i++]);
            if (op == '.') {
                if (stack_.size() != 1) fail("STOP with " + std::to_string(stack_.size()) + " values on the stack");
                return stack_.back();
            }
            i = step(op, i);
        }
        fail("no STOP");
        return nullptr;
    }

  private:
    [[noreturn]] void fail(const std::string & problem) const {
        throw FormatError(what_ + ": byte " + std::to_string(at_) + " of its pickle: " + problem);
    }
    uint32_t u32(size_t i) const {
        uint32_t v;
        std::memcpy(&v, p_.data() + i, 4);
        return v;
    }
    Ref pop() {
        if (stack_.size() <= floor()) fail("an opcode pops an empty stack");
        Ref v = stack_.back();
        stack_.pop_back();
        return v;
    }
    size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
    Ref & top() {
        if (stack_.size() <= floor()) fail("an opcode needs a value on an empty stack");
        return stack_.back();
    }
    std::vector<Ref> pop_to_mark() {
        if (marks_.empty()) fail("no MARK to pop to");
        std::vector<Ref> items(stack_.begin() + static_cast<std::ptrdiff_t>(marks_.back()), stack_.end());
        stack_.resize(marks_.back());
        marks_.pop_back();
        return items;
    }
    Ref make(Value::Kind kind) {
        auto v = std::make_shared<Value>();
        v->kind = kind;
        return v;
    }
    Ref integer(int64_t n) {
        Ref v = make(Value::Kind::integer);
        v->integer = n;
        return v;
    }
    Ref text(Value::Kind kind, size_t begin, size_t n) {
        Ref v = make(kind);
        v->text.assign(p_.data() + begin, n);
        return v;
    }
    void nest(Value & container, const Value & child) {
        container.depth = std::max(container.depth, child.depth + 1);
        if (container.depth > kMaxNesting) fail("containers nested deeper than " + std::to_string(kMaxNesting));
    }
    Ref tuple(std::vector<Ref> items) {
        Ref v = make(Value::Kind::tuple);
        for (auto & item : items) nest(*v, *item);
        v->items = std::move(items);
        return v;
    }
    Value & container(Value::Kind kind, const char * opcode) {
        Value & c = *top();
        if (c.kind != kind) fail(std::string(opcode) + " on " + kind_name(c.kind));
        return c;
    }
    void set_items(std::vector<Ref> kv, const char * opcode) {
        if (kv.size() % 2) fail(std::string(opcode) + " with an odd number of values");
        Value & d = container(Value::Kind::dict, opcode);
        for (size_t k = 0; k < kv.size(); k += 2) {
            nest(d, *kv[k + 1]);
            d.entries.emplace_back(kv[k], kv[k + 1]);
        }
    }

    size_t step(unsigned char op, size_t i);
    Ref persistent_storage(const Value & pid);
    Ref reduce(const Value & callable, const Value & args);

    std::string_view p_;
    const std::string & what_;
    size_t at_ = 0;
    std::vector<Ref> stack_;
    std::vector<size_t> marks_;
    std::unordered_map<uint32_t, Ref> memo_;
};

size_t Interpreter::step(unsigned char op, size_t i) {
    // Argument lengths were checked by check_pickle(); the stack's shape is checked here.
    switch (op) {
        case 0x80: return i + 1;  // PROTO
        case 0x95: return i + 8;  // FRAME
        case '(': marks_.push_back(stack_.size()); return i;
        case ')': stack_.push_back(tuple({})); return i;
        case ']': stack_.push_back(make(Value::Kind::list)); return i;
        case '}': stack_.push_back(make(Value::Kind::dict)); return i;
        case 't': stack_.push_back(tuple(pop_to_mark())); return i;
        case 0x85: case 0x86: case 0x87: {  // TUPLE1-3
            std::vector<Ref> items(op - 0x84);
            for (auto it = items.rbegin(); it != items.rend(); ++it) *it = pop();
            stack_.push_back(tuple(std::move(items)));
            return i;
        }
        case 'a': {
            Ref item = pop();
            Value & list = container(Value::Kind::list, "APPEND");
            nest(list, *item);
            list.items.push_back(item);
            return i;
        }
        case 'e': {
            std::vector<Ref> items = pop_to_mark();
            Value & list = container(Value::Kind::list, "APPENDS");
            for (auto & item : items) {
                nest(list, *item);
                list.items.push_back(item);
            }
            return i;
        }
        case 's': {
            Ref value = pop(), key = pop();
            set_items({key, value}, "SETITEM");
            return i;
        }
        case 'u': set_items(pop_to_mark(), "SETITEMS"); return i;
        case 'R': {
            Ref args = pop(), callable = pop();
            stack_.push_back(reduce(*callable, *args));
            return i;
        }
        case 'b': {  // BUILD: an OrderedDict's attributes (a state dict's _metadata), which say nothing of the tensors
            pop();
            container(Value::Kind::dict, "BUILD");
            return i;
        }
        case 'Q': {
            Ref pid = pop();
            stack_.push_back(persistent_storage(*pid));
            return i;
        }
        case 'N': stack_.push_back(make(Value::Kind::none)); return i;
        case 0x88: case 0x89: {
            Ref v = make(Value::Kind::boolean);
            v->integer = op == 0x88;
            stack_.push_back(v);
            return i;
        }
        case 0x94: memo_[static_cast<uint32_t>(memo_.size())] = top(); return i;
        case '0': pop(); return i;
        case 'K': stack_.push_back(integer(static_cast<unsigned char>(p_[i]))); return i + 1;
        case 'M': stack_.push_back(integer(static_cast<unsigned char>(p_[i]) | static_cast<unsigned char>(p_[i + 1]) << 8)); return i + 2;
        case 'J': stack_.push_back(integer(static_cast<int32_t>(u32(i)))); return i + 4;
        case 0x8a: {  // LONG1: n little-endian two's-complement bytes, n ≤ 8 (check_pickle)
            const auto n = static_cast<unsigned char>(p_[i]);
            uint64_t v = 0;
            for (unsigned k = 0; k < n; ++k) v |= uint64_t{static_cast<unsigned char>(p_[i + 1 + k])} << (8 * k);
            if (n > 0 && n < 8 && (p_[i + n] & 0x80)) v |= ~uint64_t{0} << (8 * n);  // sign-extend
            stack_.push_back(integer(static_cast<int64_t>(v)));
            return i + 1 + n;
        }
        case 'G': {  // BINFLOAT: big-endian double
            uint64_t bits = 0;
            for (int k = 0; k < 8; ++k) bits = bits << 8 | static_cast<unsigned char>(p_[i + k]);
            Ref v = make(Value::Kind::real);
            std::memcpy(&v->real, &bits, 8);
            stack_.push_back(v);
            return i + 8;
        }
        case 'q': memo_[static_cast<unsigned char>(p_[i])] = top(); return i + 1;
        case 'r': memo_[u32(i)] = top(); return i + 4;
        case 'h': case 'j': {
            const uint32_t key = op == 'h' ? static_cast<unsigned char>(p_[i]) : u32(i);
            const auto it = memo_.find(key);
            if (it == memo_.end()) fail("memo entry " + std::to_string(key) + " was never stored");
            stack_.push_back(it->second);
            return i + (op == 'h' ? 1 : 4);
        }
        case 0x8c: case 'C': {
            const auto n = static_cast<unsigned char>(p_[i]);
            stack_.push_back(text(op == 0x8c ? Value::Kind::string : Value::Kind::bytes, i + 1, n));
            return i + 1 + n;
        }
        case 'X': case 'B': {
            const uint32_t n = u32(i);
            stack_.push_back(text(op == 'X' ? Value::Kind::string : Value::Kind::bytes, i + 4, n));
            return i + 4 + n;
        }
        case 'c': {
            const size_t a = p_.find('\n', i), b = p_.find('\n', a + 1);
            Ref g = make(Value::Kind::global);
            g->text = std::string(p_.substr(i, a - i)) + " " + std::string(p_.substr(a + 1, b - a - 1));
            stack_.push_back(g);
            return b + 1;
        }
        default: {
            char hex[8];
            std::snprintf(hex, sizeof hex, "0x%02x", op);
            fail(std::string("opcode ") + hex + " builds an object; a state dict holds only tensors, dicts, lists and numbers");
        }
    }
}

Ref Interpreter::persistent_storage(const Value & pid) {
    // ('storage', <torch XStorage>, key, location, numel)
    const auto & f = pid.items;
    if (pid.kind != Value::Kind::tuple || f.size() != 5 || f[0]->kind != Value::Kind::string || f[0]->text != "storage" ||
        f[1]->kind != Value::Kind::global || f[2]->kind != Value::Kind::string || f[4]->kind != Value::Kind::integer) {
        fail("a persistent id that is not ('storage', type, key, location, numel)");
    }
    if (f[4]->integer < 0) fail("a storage of negative size");
    if (f[2]->text.empty() || f[2]->text.find_first_not_of("0123456789") != std::string::npos) {
        fail("storage key " + excerpt(f[2]->text) + " is not a record number");
    }
    Ref s = make(Value::Kind::storage);
    try {
        s->tensor.dtype = storage_dtype(f[1]->text);
    } catch (const FormatError & e) {
        fail(e.what());
    }
    s->tensor.storage_key = f[2]->text;
    s->tensor.storage_numel = f[4]->integer;
    return s;
}

Ref Interpreter::reduce(const Value & callable, const Value & args) {
    if (callable.kind != Value::Kind::global || args.kind != Value::Kind::tuple) fail("REDUCE of something not a global");
    const auto & a = args.items;
    auto ints = [&](const Value & v, const char * field) {
        if (v.kind != Value::Kind::tuple) fail(std::string("a tensor's ") + field + " is not a tuple");
        std::vector<int64_t> out;
        for (const auto & d : v.items) {
            if (d->kind != Value::Kind::integer) fail(std::string("a tensor's ") + field + " holds " + kind_name(d->kind));
            out.push_back(d->integer);
        }
        return out;
    };
    if (callable.text == "collections OrderedDict") {
        if (!a.empty()) fail("OrderedDict built from arguments");
        return make(Value::Kind::dict);
    }
    if (callable.text == "torch._utils _rebuild_tensor_v2") {
        // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
        if (a.size() < 6 || a.size() > 7 || a[0]->kind != Value::Kind::storage || a[1]->kind != Value::Kind::integer) {
            fail("_rebuild_tensor_v2 with arguments other than (storage, offset, size, stride, requires_grad, hooks)");
        }
        Ref t = make(Value::Kind::tensor);
        t->tensor = a[0]->tensor;
        t->tensor.offset = a[1]->integer;
        t->tensor.shape = ints(*a[2], "size");
        t->tensor.stride = ints(*a[3], "stride");
        if (t->tensor.shape.size() != t->tensor.stride.size()) fail("a tensor's size and stride differ in length");
        return t;
    }
    if (callable.text == "torch._utils _rebuild_parameter") {
        if (a.size() != 3 || a[0]->kind != Value::Kind::tensor) fail("_rebuild_parameter of something not a tensor");
        return a[0];
    }
    fail("REDUCE of " + excerpt(callable.text) + ", which a state dict does not use");
}

// The entries of a dict whose keys are strings and values tensors; empty when it is not one.
bool as_state_dict(const Value & v, std::vector<std::pair<std::string, PickledTensor>> & out) {
    if (v.kind != Value::Kind::dict || v.entries.empty()) return false;
    for (const auto & [key, value] : v.entries) {
        if (key->kind != Value::Kind::string || value->kind != Value::Kind::tensor) return false;
    }
    for (const auto & [key, value] : v.entries) out.emplace_back(key->text, value->tensor);
    return true;
}

}  // namespace

int64_t storage_extent(const PickledTensor & t) {
    if (t.offset < 0) return -1;
    int64_t last = t.offset;
    for (size_t d = 0; d < t.shape.size(); ++d) {
        if (t.shape[d] < 0 || t.stride[d] < 0) return -1;
        if (t.shape[d] == 0) return 0;
        const int64_t limit = std::numeric_limits<int64_t>::max() / 2;
        if (t.shape[d] > limit || (t.stride[d] > 0 && (t.shape[d] - 1) > (limit - last) / t.stride[d])) return -1;
        last += (t.shape[d] - 1) * t.stride[d];
    }
    return last + 1;
}

PickledStateDict read_torch_state_dict(std::string_view pickle, const std::string & what) {
    check_pickle(pickle, what, torch_save_globals());
    const Ref root = Interpreter(pickle, what).run();
    PickledStateDict out;
    if (as_state_dict(*root, out.tensors)) return out;
    if (root->kind != Value::Kind::dict) {
        throw FormatError(what + ": the pickle holds " + kind_name(root->kind) + ", not a dict of tensors");
    }
    std::string keys;
    for (const auto & [key, value] : root->entries) {
        if (key->kind == Value::Kind::string) keys += (keys.empty() ? "" : ", ") + excerpt(key->text);
    }
    for (const char * name : {"state_dict", "model", "model_ema", "module"}) {
        for (const auto & [key, value] : root->entries) {
            if (key->kind == Value::Kind::string && key->text == name && as_state_dict(*value, out.tensors)) {
                out.found_at = name;
                return out;
            }
        }
    }
    throw FormatError(what + ": no state dict (a dict of tensors) at the top level or under 'state_dict', 'model', "
                      "'model_ema' or 'module'; the top-level keys are: " + (keys.empty() ? "(none)" : keys));
}

}  // namespace bitvit::format
