#include "runner/data/tiktoken_pickle.h"

#include <cstring>
#include <memory>
#include <optional>
#include <unordered_map>
#include <variant>

#include "runner/data/errors.h"
#include "runner/util/format.h"

namespace l3lab::data {

namespace {

// The values a tiktoken Encoding pickle holds. Containers are shared: the memo may refer to them.
struct Value;
using ValuePtr = std::shared_ptr<Value>;
struct Mark {};
struct Global {
    std::string module, name;
};
struct Str {
    std::string utf8;
};
struct Bytes {
    std::string data;
};
using Items = std::vector<ValuePtr>;
struct Tuple {
    Items items;
};
struct Dict {
    std::vector<std::pair<ValuePtr, ValuePtr>> items;
};
struct Object {  // NEWOBJ of tiktoken.core.Encoding, and the state BUILD gave it
    ValuePtr state;
};
struct Value {
    std::variant<std::monostate, Mark, Global, Str, Bytes, int64_t, Tuple, Dict, Object> v;
};

template <class T>
ValuePtr make(T x) {
    auto p = std::make_shared<Value>();
    p->v = std::move(x);
    return p;
}

class Unpickler {
public:
    Unpickler(std::string_view bytes, std::string file) : in_(bytes), file_(std::move(file)) {}

    ValuePtr run() {
        if (in_.empty() || static_cast<unsigned char>(in_[0]) != 0x80)
            fail(0, "not a pickle (a pickled tiktoken Encoding, nanochat's tokenizer.pkl, starts with byte 0x80)");
        while (true) {
            const size_t at = pos_;
            const unsigned char op = u8();
            switch (op) {
            case 0x80: {  // PROTO
                const unsigned proto = u8();
                if (proto < 2 || proto > 5) fail(at, "pickle protocol " + std::to_string(proto) + " is not supported (2 to 5)");
                break;
            }
            case 0x95: take(8); break;  // FRAME: the frame's length; frames are read as they come
            case '.': {                 // STOP
                if (stack_.size() != 1) fail(at, "the pickle ends with " + std::to_string(stack_.size()) + " values on its stack");
                return stack_.back();
            }
            case '(': stack_.push_back(make(Mark{})); break;
            case 'N': stack_.push_back(make(std::monostate{})); break;
            case ')': stack_.push_back(make(Tuple{})); break;
            case '}': stack_.push_back(make(Dict{})); break;
            case 0x8c: stack_.push_back(make(Str{utf8(at, take(u8()))})); break;          // SHORT_BINUNICODE
            case 'X': stack_.push_back(make(Str{utf8(at, take(le(4)))})); break;           // BINUNICODE
            case 0x8d: stack_.push_back(make(Str{utf8(at, take(le(8)))})); break;          // BINUNICODE8
            case 'C': stack_.push_back(make(Bytes{std::string(take(u8()))})); break;      // SHORT_BINBYTES
            case 'B': stack_.push_back(make(Bytes{std::string(take(le(4)))})); break;     // BINBYTES
            case 0x8e: stack_.push_back(make(Bytes{std::string(take(le(8)))})); break;    // BINBYTES8
            case 'K': stack_.push_back(make(static_cast<int64_t>(u8()))); break;          // BININT1
            case 'M': stack_.push_back(make(static_cast<int64_t>(le(2)))); break;         // BININT2
            case 'J': stack_.push_back(make(static_cast<int64_t>(static_cast<int32_t>(le(4))))); break;  // BININT
            case 0x8a: {  // LONG1: little-endian two's complement of n bytes
                const unsigned n = u8();
                if (n > 8) fail(at, "an integer of " + std::to_string(n) + " bytes is too large for a token id");
                const uint64_t raw = n ? le(n) : 0;
                int64_t v = static_cast<int64_t>(raw);
                if (n > 0 && n < 8 && (raw >> (8 * n - 1)) & 1) v -= static_cast<int64_t>(1) << (8 * n);
                stack_.push_back(make(v));
                break;
            }
            case 0x85: tuple_of(at, 1); break;  // TUPLE1
            case 0x86: tuple_of(at, 2); break;  // TUPLE2
            case 0x87: tuple_of(at, 3); break;  // TUPLE3
            case 't': {                          // TUPLE
                Tuple t{pop_to_mark(at)};
                stack_.push_back(make(std::move(t)));
                break;
            }
            case 0x93: {  // STACK_GLOBAL
                ValuePtr name = pop(at), module = pop(at);
                global(at, as_str(at, module), as_str(at, name));
                break;
            }
            case 'c': {  // GLOBAL "module\nname\n"
                const std::string module = line(at), name = line(at);
                global(at, module, name);
                break;
            }
            case 0x81: {  // NEWOBJ cls args
                ValuePtr args = pop(at), cls = pop(at);
                if (!std::holds_alternative<Global>(cls->v)) fail(at, "NEWOBJ of something that is not a class");
                stack_.push_back(make(Object{}));
                break;
            }
            case 'b': {  // BUILD obj state
                ValuePtr state = pop(at);
                ValuePtr obj = top(at);
                auto* o = std::get_if<Object>(&obj->v);
                if (!o) fail(at, "BUILD on something that is not an object");
                o->state = state;
                break;
            }
            case 's': {  // SETITEM
                ValuePtr v = pop(at), k = pop(at);
                dict(at, top(at)).items.emplace_back(k, v);
                break;
            }
            case 'u': {  // SETITEMS
                Items kv = pop_to_mark(at);
                if (kv.size() % 2) fail(at, "SETITEMS with an odd number of values");
                Dict& d = dict(at, top(at));
                for (size_t i = 0; i < kv.size(); i += 2) d.items.emplace_back(kv[i], kv[i + 1]);
                break;
            }
            case 0x94: memo_[memo_.size()] = top(at); break;         // MEMOIZE
            case 'q': memo_[u8()] = top(at); break;                  // BINPUT
            case 'r': memo_[le(4)] = top(at); break;                 // LONG_BINPUT
            case 'h': stack_.push_back(memo_get(at, u8())); break;   // BINGET
            case 'j': stack_.push_back(memo_get(at, le(4))); break;  // LONG_BINGET
            default:
                fail(at, "pickle opcode 0x" + hex(op) +
                             " is not one a tiktoken Encoding pickle uses; this is not nanochat's tokenizer.pkl");
            }
        }
    }

    [[noreturn]] void fail(size_t offset, const std::string& message) const {
        throw DataError::at_offset(file_, offset, message);
    }

private:
    static std::string hex(unsigned v) {
        const char* d = "0123456789abcdef";
        return {d[(v >> 4) & 15], d[v & 15]};
    }
    unsigned char u8() { return static_cast<unsigned char>(take(1)[0]); }
    uint64_t le(int n) {
        std::string_view b = take(static_cast<uint64_t>(n));
        uint64_t v = 0;
        for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(b[static_cast<size_t>(i)]);
        return v;
    }
    std::string_view take(uint64_t n) {
        if (n > in_.size() - pos_) fail(pos_, "the pickle is truncated (" + util::group_digits(static_cast<int64_t>(n)) +
                                                  " more bytes expected, " +
                                                  util::group_digits(static_cast<int64_t>(in_.size() - pos_)) + " left)");
        std::string_view s = in_.substr(pos_, n);
        pos_ += n;
        return s;
    }
    std::string line(size_t at) {
        const size_t end = in_.find('\n', pos_);
        if (end == std::string_view::npos) fail(at, "the pickle is truncated inside a GLOBAL");
        std::string s(in_.substr(pos_, end - pos_));
        pos_ = end + 1;
        return s;
    }
    std::string utf8(size_t at, std::string_view s) {
        // Strings of this pickle are names, the pattern and special tokens: they must be valid UTF-8.
        for (size_t i = 0; i < s.size(); ++i)
            if (static_cast<unsigned char>(s[i]) == 0xED && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) >= 0xA0)
                fail(at, "a string of the pickle holds a surrogate");
        return std::string(s);
    }
    ValuePtr pop(size_t at) {
        if (stack_.empty()) fail(at, "the pickle's stack is empty where a value was expected");
        ValuePtr v = stack_.back();
        stack_.pop_back();
        if (std::holds_alternative<Mark>(v->v)) fail(at, "a MARK where a value was expected");
        return v;
    }
    ValuePtr top(size_t at) {
        if (stack_.empty()) fail(at, "the pickle's stack is empty where a value was expected");
        return stack_.back();
    }
    Items pop_to_mark(size_t at) {
        Items items;
        while (true) {
            if (stack_.empty()) fail(at, "no MARK on the pickle's stack");
            ValuePtr v = stack_.back();
            stack_.pop_back();
            if (std::holds_alternative<Mark>(v->v)) break;
            items.push_back(v);
        }
        return Items(items.rbegin(), items.rend());
    }
    void tuple_of(size_t at, int n) {
        Tuple t;
        for (int i = 0; i < n; ++i) t.items.insert(t.items.begin(), pop(at));
        stack_.push_back(make(std::move(t)));
    }
    Dict& dict(size_t at, const ValuePtr& v) {
        auto* d = std::get_if<Dict>(&v->v);
        if (!d) fail(at, "SETITEM(S) on something that is not a dict");
        return *d;
    }
    std::string as_str(size_t at, const ValuePtr& v) {
        auto* s = std::get_if<Str>(&v->v);
        if (!s) fail(at, "STACK_GLOBAL's module and name must be strings");
        return s->utf8;
    }
    void global(size_t at, const std::string& module, const std::string& name) {
        if (module != "tiktoken.core" || name != "Encoding")
            fail(at, "the pickle refers to " + module + "." + name +
                         "; only a pickled tiktoken.core.Encoding (nanochat's tokenizer.pkl) is read, and nothing in it runs");
        stack_.push_back(make(Global{module, name}));
    }
    ValuePtr memo_get(size_t at, uint64_t key) {
        auto it = memo_.find(key);
        if (it == memo_.end()) fail(at, "the pickle refers to memo entry " + std::to_string(key) + ", which it never stored");
        return it->second;
    }

    std::string_view in_;
    std::string file_;
    size_t pos_ = 0;
    std::vector<ValuePtr> stack_;
    std::unordered_map<uint64_t, ValuePtr> memo_;
};

void put_u32(std::string& out, uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
void put_string(std::string& out, std::string_view s, bool is_bytes) {
    if (s.size() < 256) {
        out.push_back(is_bytes ? 'C' : static_cast<char>(0x8c));
        out.push_back(static_cast<char>(s.size()));
    } else {
        out.push_back(is_bytes ? 'B' : 'X');
        put_u32(out, static_cast<uint32_t>(s.size()));
    }
    out.append(s);
}
void put_int(std::string& out, int64_t v) {
    if (v >= 0 && v < 256) {
        out.push_back('K');
        out.push_back(static_cast<char>(v));
    } else if (v >= 0 && v < 65536) {
        out.push_back('M');
        out.push_back(static_cast<char>(v & 0xFF));
        out.push_back(static_cast<char>(v >> 8));
    } else {
        out.push_back('J');
        put_u32(out, static_cast<uint32_t>(static_cast<int32_t>(v)));
    }
}
void put_dict(std::string& out, const std::vector<std::pair<std::string, int64_t>>& items, bool keys_are_bytes) {
    out.push_back('}');
    for (size_t i = 0; i < items.size(); i += 1000) {  // batches of 1,000 items, as Python's pickler writes
        out.push_back('(');
        for (size_t j = i; j < std::min(items.size(), i + 1000); ++j) {
            put_string(out, items[j].first, keys_are_bytes);
            put_int(out, items[j].second);
        }
        out.push_back('u');
    }
}

}  // namespace

TiktokenEncoding read_tiktoken_pickle(std::string_view bytes, const std::string& file) {
    Unpickler unpickler(bytes, file);
    ValuePtr root = unpickler.run();
    auto* object = std::get_if<Object>(&root->v);
    if (!object || !object->state)
        unpickler.fail(0, "the pickle holds no tiktoken Encoding (nanochat's tokenizer.pkl pickles one)");
    if (std::holds_alternative<Str>(object->state->v))
        unpickler.fail(0, "the pickle names the registered tiktoken encoding '" + std::get<Str>(object->state->v).utf8 +
                              "' instead of holding its ranks; l3lab reads only self-contained encodings (nanochat's)");
    auto* state = std::get_if<Dict>(&object->state->v);
    if (!state) unpickler.fail(0, "the Encoding's state is not a dict");
    TiktokenEncoding e;
    bool have_pattern = false, have_ranks = false, have_specials = false;
    auto int_of = [&](const ValuePtr& v, const std::string& what) {
        auto* i = std::get_if<int64_t>(&v->v);
        if (!i || *i < 0) unpickler.fail(0, what + " must be a non-negative integer");
        return *i;
    };
    for (const auto& [k, v] : state->items) {
        auto* key = std::get_if<Str>(&k->v);
        if (!key) unpickler.fail(0, "the Encoding's state has a key that is not a string");
        const std::string& name = key->utf8;
        if (name == "name" || name == "pat_str") {
            auto* s = std::get_if<Str>(&v->v);
            if (!s) unpickler.fail(0, "the Encoding's '" + name + "' is not a string");
            (name == "name" ? e.name : e.pattern) = s->utf8;
            have_pattern |= name == "pat_str";
        } else if (name == "mergeable_ranks" || name == "special_tokens") {
            auto* d = std::get_if<Dict>(&v->v);
            if (!d) unpickler.fail(0, "the Encoding's '" + name + "' is not a dict");
            const bool ranks = name == "mergeable_ranks";
            auto& out = ranks ? e.ranks : e.specials;
            out.reserve(d->items.size());
            for (const auto& [dk, dv] : d->items) {
                const std::string* text = nullptr;
                if (ranks) {
                    if (auto* b = std::get_if<Bytes>(&dk->v)) text = &b->data;
                } else if (auto* s = std::get_if<Str>(&dk->v)) {
                    text = &s->utf8;
                }
                if (!text) unpickler.fail(0, "a key of the Encoding's '" + name + "' is not " + (ranks ? "bytes" : "a string"));
                out.emplace_back(*text, int_of(dv, "a value of the Encoding's '" + name + "'"));
            }
            (ranks ? have_ranks : have_specials) = true;
        } else if (name != "explicit_n_vocab") {
            unpickler.fail(0, "the Encoding's state has an unknown key '" + name + "'");
        }
    }
    if (!have_pattern || !have_ranks || !have_specials)
        unpickler.fail(0, "the Encoding's state lacks " +
                              std::string(!have_pattern ? "pat_str" : !have_ranks ? "mergeable_ranks" : "special_tokens"));
    return e;
}

std::string write_tiktoken_pickle(const TiktokenEncoding& e) {
    std::string out = "\x80\x04";
    put_string(out, "tiktoken.core", false);
    put_string(out, "Encoding", false);
    out += "\x93)\x81}(";
    put_string(out, "name", false);
    put_string(out, e.name, false);
    put_string(out, "pat_str", false);
    put_string(out, e.pattern, false);
    put_string(out, "mergeable_ranks", false);
    put_dict(out, e.ranks, true);
    put_string(out, "special_tokens", false);
    put_dict(out, e.specials, false);
    out += "ub.";
    return out;
}

std::string write_tiktoken_ranks(const TiktokenEncoding& e) {
    static const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    for (const auto& [token, rank] : e.ranks) {
        const auto* p = reinterpret_cast<const unsigned char*>(token.data());
        size_t i = 0;
        for (; i + 3 <= token.size(); i += 3) {
            const uint32_t v = (p[i] << 16) | (p[i + 1] << 8) | p[i + 2];
            for (int s = 18; s >= 0; s -= 6) out.push_back(alphabet[(v >> s) & 63]);
        }
        if (const size_t rest = token.size() - i; rest > 0) {
            const uint32_t v = (p[i] << 16) | (rest == 2 ? p[i + 1] << 8 : 0);
            out.push_back(alphabet[(v >> 18) & 63]);
            out.push_back(alphabet[(v >> 12) & 63]);
            out.push_back(rest == 2 ? alphabet[(v >> 6) & 63] : '=');
            out.push_back('=');
        }
        out += ' ' + std::to_string(rank) + '\n';
    }
    return out;
}

}  // namespace l3lab::data
