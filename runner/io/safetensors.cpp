#include "runner/io/safetensors.h"

#include "runner/util/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>
#include <tuple>

namespace l3lab::io {

namespace {

using nlohmann::json;

constexpr uint64_t kLengthBytes = 8;
// The Python library refuses larger headers too; a real one is a few hundred bytes per tensor.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr const char* kMetadataKey = "__metadata__";

struct DTypeInfo {
    DType dtype;
    const char* name;
    size_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::BOOL, "BOOL", 1}, {DType::U8, "U8", 1},     {DType::I8, "I8", 1},   {DType::I16, "I16", 2},
    {DType::U16, "U16", 2},   {DType::F16, "F16", 2},   {DType::BF16, "BF16", 2}, {DType::I32, "I32", 4},
    {DType::U32, "U32", 4},   {DType::F32, "F32", 4},   {DType::F64, "F64", 8}, {DType::I64, "I64", 8},
    {DType::U64, "U64", 8},
};

const DTypeInfo& info(DType dtype) {
    for (const auto& d : kDTypes)
        if (d.dtype == dtype) return d;
    throw std::logic_error("safetensors: DType out of range");
}

std::string known_dtypes() {
    std::string out;
    for (const auto& d : kDTypes) out += (out.empty() ? "" : ", ") + std::string(d.name);
    return out;
}

// nlohmann's what() without its "[json.exception.parse_error.101] " prefix.
std::string json_detail(const std::exception& e) {
    std::string what = e.what();
    auto pos = what.find("] ");
    return pos == std::string::npos ? what : what.substr(pos + 2);
}

// A header value for a message: its JSON text when it is short and flat, else what it is. dump() recurses
// once per nesting level, and a damaged or hostile header can nest a million levels deep.
std::string brief(const json& v) {
    auto text = [](const json& x) { return x.dump(-1, ' ', false, json::error_handler_t::replace); };
    if (v.is_primitive()) {
        std::string t = text(v);
        return t.size() > 60 ? t.substr(0, 57) + "..." : t;
    }
    if (v.is_object()) return "an object";
    if (!std::all_of(v.begin(), v.end(), [](const json& x) { return x.is_primitive(); })) return "a nested list";
    std::string t = v.size() <= 16 ? text(v) : "";
    return !t.empty() && t.size() <= 200 ? t : "a list of " + std::to_string(v.size()) + " values";
}

std::string errno_str() { return std::generic_category().message(errno); }

// Bytes a tensor of this shape occupies, or nothing when that does not fit in 64 bits.
// Dimensions are assumed non-negative (checked by the callers).
std::optional<uint64_t> checked_nbytes(DType dtype, const std::vector<int64_t>& shape) {
    uint64_t n = dtype_size(dtype);
    for (int64_t dim : shape)
        if (__builtin_mul_overflow(n, static_cast<uint64_t>(dim), &n)) return std::nullopt;
    return n;
}

class Fd {
public:
    explicit Fd(int fd) : fd_(fd) {}
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() {
        if (fd_ >= 0) ::close(fd_);
    }
    int get() const { return fd_; }
    // Closes now, so that a failing close (possible on network file systems) is reported.
    int close() {
        int rc = ::close(fd_);
        fd_ = -1;
        return rc;
    }

private:
    int fd_;
};

// ---- reading ----

// Reads exactly `size` bytes at `offset`; false when the file ends first (it shrank under us).
bool read_exact(const std::string& path, int fd, void* out, size_t size, uint64_t offset) {
    auto* p = static_cast<char*>(out);
    while (size > 0) {
        ssize_t got = ::pread(fd, p, size, static_cast<off_t>(offset));
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) throw SafetensorsError(path, "read failed at byte offset " + std::to_string(offset) + ": " + errno_str());
        if (got == 0) return false;
        p += got;
        size -= static_cast<size_t>(got);
        offset += static_cast<uint64_t>(got);
    }
    return true;
}

// What one header entry says about its tensor, once validated.
struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    uint64_t begin, end;  // relative to the data buffer
};

// Parses the header JSON, refusing duplicate keys (nlohmann would silently keep the last one).
json parse_header(const std::string& path, const std::string& text) {
    std::vector<std::set<std::string>> open_objects;
    std::string duplicate;
    int duplicate_depth = 0;
    auto track_keys = [&](int depth, json::parse_event_t event, json& parsed) {
        if (event == json::parse_event_t::object_start) {
            open_objects.emplace_back();
        } else if (event == json::parse_event_t::object_end) {
            open_objects.pop_back();
        } else if (event == json::parse_event_t::key && duplicate.empty()) {
            if (!open_objects.back().insert(parsed.get<std::string>()).second) {
                duplicate = parsed.get<std::string>();
                duplicate_depth = depth;
            }
        }
        return true;
    };
    // nlohmann stops at a NUL byte and would ignore whatever follows it.
    if (auto nul = text.find('\0'); nul != std::string::npos)
        throw SafetensorsError(path, "header is not valid JSON: NUL byte at file byte offset " +
                                         std::to_string(kLengthBytes + nul));
    json header;
    try {
        header = json::parse(text, track_keys);
    } catch (const json::parse_error& e) {
        // e.byte is 1-based within the header; the header starts after the 8-byte length.
        throw SafetensorsError(path, "header is not valid JSON (file byte offset " +
                                         std::to_string(kLengthBytes + (e.byte > 0 ? e.byte - 1 : 0)) +
                                         "): " + json_detail(e));
    }
    if (!header.is_object())
        throw SafetensorsError(path, std::string("header is not a JSON object but ") + header.type_name());
    if (!duplicate.empty()) {
        if (duplicate_depth == 1) throw SafetensorsError(path, "duplicate tensor name '" + duplicate + "' in the header");
        throw SafetensorsError(path, "duplicate key '" + duplicate + "' inside one object of the header");
    }
    return header;
}

std::map<std::string, std::string> parse_metadata(const std::string& path, const json& value) {
    if (!value.is_object())
        throw SafetensorsError(path, std::string(kMetadataKey) + " must be an object of strings, not " + value.type_name());
    std::map<std::string, std::string> out;
    for (const auto& [k, v] : value.items()) {
        if (!v.is_string())
            throw SafetensorsError(path, std::string(kMetadataKey) + " values must be strings; '" + k + "' is " +
                                             v.type_name());
        out[k] = v.get<std::string>();
    }
    return out;
}

Entry parse_entry(const std::string& path, const std::string& name, const json& value) {
    auto fail = [&](const std::string& problem) { throw SafetensorsError(path, "tensor '" + name + "': " + problem); };
    if (!value.is_object()) fail(std::string("header entry is not an object but ") + value.type_name());
    Entry e{name, DType::F32, {}, 0, 0};

    auto dtype = value.find("dtype");
    if (dtype == value.end() || !dtype->is_string()) fail("\"dtype\" is missing or not a string");
    auto parsed = parse_dtype(dtype->get<std::string>());
    if (!parsed) fail("unknown dtype '" + dtype->get<std::string>() + "' (known: " + known_dtypes() + ")");
    e.dtype = *parsed;

    auto shape = value.find("shape");
    if (shape == value.end() || !shape->is_array()) fail("\"shape\" is missing or not a list");
    for (const auto& dim : *shape) {
        if (dim.is_number_unsigned() && dim.get<uint64_t>() <= uint64_t(std::numeric_limits<int64_t>::max()))
            e.shape.push_back(static_cast<int64_t>(dim.get<uint64_t>()));
        else if (dim.is_number_integer() && dim.get<int64_t>() < 0)
            fail("negative dimension " + brief(dim) + " in shape " + brief(*shape));
        else
            fail("shape " + brief(*shape) + " holds " + brief(dim) + ", not a dimension");
    }

    auto offsets = value.find("data_offsets");
    if (offsets == value.end() || !offsets->is_array() || offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() ||
        !(*offsets)[1].is_number_unsigned())
        fail("\"data_offsets\" must be two non-negative integers [begin, end]");
    e.begin = (*offsets)[0].get<uint64_t>();
    e.end = (*offsets)[1].get<uint64_t>();
    if (e.end < e.begin) fail("data_offsets " + brief(*offsets) + " end before they begin");

    auto nbytes = checked_nbytes(e.dtype, e.shape);
    if (!nbytes) fail("shape " + shape_str(e.shape) + " of " + dtype_name(e.dtype) + " overflows 64-bit byte counts");
    if (*nbytes != e.end - e.begin)
        fail("shape " + shape_str(e.shape) + " of " + dtype_name(e.dtype) + " needs " + std::to_string(*nbytes) +
             " bytes but data_offsets " + brief(*offsets) + " hold " + std::to_string(e.end - e.begin));
    return e;
}

// The tensors must tile the data buffer exactly: no byte outside it, shared or unclaimed.
void check_layout(const std::string& path, std::vector<Entry>& entries, uint64_t data_start, uint64_t buffer_size) {
    auto at = [&](uint64_t offset) { return " (file byte offset " + std::to_string(data_start + offset) + ")"; };
    for (const auto& e : entries)
        if (e.end > buffer_size)
            throw SafetensorsError(path, "tensor '" + e.name + "': data_offsets [" + std::to_string(e.begin) + ", " +
                                             std::to_string(e.end) + "] run past the " + std::to_string(buffer_size) +
                                             "-byte data buffer" + at(e.begin) + "; is the file truncated?");
    std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
        return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
    });
    uint64_t covered = 0;
    const Entry* previous = nullptr;
    for (const auto& e : entries) {
        if (e.begin < covered)
            throw SafetensorsError(path, "tensor '" + e.name + "' overlaps tensor '" + previous->name +
                                             "': its data begins at buffer byte " + std::to_string(e.begin) +
                                             ", before the previous tensor's end at " + std::to_string(covered) +
                                             at(e.begin));
        if (e.begin > covered)
            throw SafetensorsError(path, "gap in the data buffer: bytes " + std::to_string(covered) + " to " +
                                             std::to_string(e.begin) + " before tensor '" + e.name +
                                             "' belong to no tensor" + at(covered));
        covered = e.end;
        previous = &e;
    }
    if (covered != buffer_size)
        throw SafetensorsError(path, "the data buffer has " + std::to_string(buffer_size) + " bytes but the tensors cover " +
                                         std::to_string(covered) + "; trailing bytes" + at(covered));
}


}  // namespace

SafetensorsError::SafetensorsError(const std::string& path, const std::string& problem)
    : std::runtime_error(path + ": " + problem), path_(path) {}

size_t dtype_size(DType dtype) { return info(dtype).size; }

const char* dtype_name(DType dtype) { return info(dtype).name; }

std::optional<DType> parse_dtype(std::string_view name) {
    for (const auto& d : kDTypes)
        if (name == d.name) return d.dtype;
    return std::nullopt;
}

std::string shape_str(const std::vector<int64_t>& shape) {
    std::string out = "[";
    for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
    return out + "]";
}

const TensorRecord* SafetensorsFile::find(std::string_view name) const {
    for (const auto& t : tensors)
        if (t.name == name) return &t;
    return nullptr;
}

SafetensorsFile read_safetensors(const std::string& path) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) throw SafetensorsError(path, "cannot open: " + errno_str());
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw SafetensorsError(path, "cannot stat: " + errno_str());
    if (!S_ISREG(st.st_mode)) throw SafetensorsError(path, "not a regular file");
    const uint64_t file_size = static_cast<uint64_t>(st.st_size);
    auto truncated = [&](uint64_t offset) {
        return SafetensorsError(path, "unexpected end of file at byte offset " + std::to_string(offset) +
                                          " (did it change while being read?)");
    };

    if (file_size < kLengthBytes)
        throw SafetensorsError(path, "file too short (" + std::to_string(file_size) +
                                         " bytes) to hold the 8-byte header length");
    unsigned char length_bytes[kLengthBytes];
    if (!read_exact(path, fd.get(), length_bytes, kLengthBytes, 0)) throw truncated(0);
    uint64_t header_size = 0;
    for (size_t i = 0; i < kLengthBytes; ++i) header_size |= uint64_t(length_bytes[i]) << (8 * i);
    if (header_size > kMaxHeaderBytes)
        throw SafetensorsError(path, "header length " + std::to_string(header_size) +
                                         " (file bytes 0-7) is absurd: the limit is " +
                                         std::to_string(kMaxHeaderBytes) + " bytes; not a safetensors file?");
    if (header_size > file_size - kLengthBytes)
        throw SafetensorsError(path, "header length " + std::to_string(header_size) + " (file bytes 0-7) runs past the end of the " +
                                         std::to_string(file_size) + "-byte file; is it truncated?");

    std::string text(header_size, '\0');
    if (!read_exact(path, fd.get(), text.data(), text.size(), kLengthBytes)) throw truncated(kLengthBytes);
    const json header = parse_header(path, text);

    SafetensorsFile out;
    std::vector<Entry> entries;
    for (const auto& [key, value] : header.items()) {
        if (key == kMetadataKey)
            out.metadata = parse_metadata(path, value);
        else
            entries.push_back(parse_entry(path, key, value));
    }
    const uint64_t data_start = kLengthBytes + header_size;
    check_layout(path, entries, data_start, file_size - data_start);

    // Sizes are now known to sum to the data buffer's size, which the file holds.
    out.tensors.reserve(entries.size());
    for (auto& e : entries) {
        TensorRecord& t = out.tensors.emplace_back();
        t.name = std::move(e.name);
        t.dtype = e.dtype;
        t.shape = std::move(e.shape);
        t.data.resize(e.end - e.begin);
        if (!read_exact(path, fd.get(), t.data.data(), t.data.size(), data_start + e.begin))
            throw truncated(data_start + e.begin);
    }
    return out;
}

void write_safetensors(const std::string& path, const std::vector<TensorRecord>& tensors,
                       const std::map<std::string, std::string>& metadata) {
    std::vector<const TensorRecord*> order;
    std::set<std::string_view> names;
    for (const auto& t : tensors) {
        auto fail = [&](const std::string& problem) {
            throw SafetensorsError(path, "cannot write tensor '" + t.name + "': " + problem);
        };
        if (t.name == kMetadataKey) fail(std::string(kMetadataKey) + " is reserved for the metadata");
        if (!names.insert(t.name).second) fail("the name appears twice");
        for (int64_t dim : t.shape)
            if (dim < 0) fail("negative dimension in shape " + shape_str(t.shape));
        auto nbytes = checked_nbytes(t.dtype, t.shape);
        if (!nbytes) fail("shape " + shape_str(t.shape) + " overflows 64-bit byte counts");
        if (*nbytes != t.data.size())
            fail("shape " + shape_str(t.shape) + " of " + dtype_name(t.dtype) + " needs " + std::to_string(*nbytes) +
                 " bytes but the record holds " + std::to_string(t.data.size()));
        order.push_back(&t);
    }
    // The Python library's order: widest dtype first, then by name.
    std::sort(order.begin(), order.end(), [](const TensorRecord* a, const TensorRecord* b) {
        if (a->dtype != b->dtype) return a->dtype > b->dtype;
        return a->name < b->name;
    });

    // ordered_json keeps insertion order: metadata first, then the tensors in data order.
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata.empty()) header[kMetadataKey] = metadata;
    uint64_t offset = 0;
    for (const TensorRecord* t : order) {
        nlohmann::ordered_json entry = nlohmann::ordered_json::object();
        entry["dtype"] = dtype_name(t->dtype);
        entry["shape"] = t->shape;
        entry["data_offsets"] = {offset, offset + t->data.size()};
        header[t->name] = std::move(entry);
        offset += t->data.size();
    }
    std::string text;
    try {
        text = header.dump();
    } catch (const nlohmann::ordered_json::type_error& e) {
        throw SafetensorsError(path, "tensor names and metadata must be valid UTF-8: " + json_detail(e));
    }
    text.append((kLengthBytes - text.size() % kLengthBytes) % kLengthBytes, ' ');  // data starts 8-byte aligned
    unsigned char length_bytes[kLengthBytes];
    for (size_t i = 0; i < kLengthBytes; ++i) length_bytes[i] = static_cast<unsigned char>(uint64_t(text.size()) >> (8 * i));

    std::vector<std::string_view> pieces{{reinterpret_cast<const char*>(length_bytes), kLengthBytes}, text};
    for (const TensorRecord* t : order) pieces.emplace_back(reinterpret_cast<const char*>(t->data.data()), t->data.size());
    try {
        util::write_file_atomic(path, pieces);
    } catch (const std::runtime_error& e) {
        throw SafetensorsError(path, e.what());
    }
}

std::vector<std::string> check_names_and_shapes(
    const SafetensorsFile& file, const std::vector<std::pair<std::string, std::vector<int64_t>>>& expected) {
    std::vector<std::string> problems;
    std::set<std::string_view> expected_names;
    for (const auto& [name, shape] : expected) {
        expected_names.insert(name);
        const TensorRecord* t = file.find(name);
        if (!t)
            problems.push_back(name + ": missing (expected " + shape_str(shape) + ")");
        else if (t->shape != shape)
            problems.push_back(name + ": expected " + shape_str(shape) + ", file has " + shape_str(t->shape));
    }
    for (const auto& t : file.tensors)
        if (!expected_names.count(t.name)) problems.push_back(t.name + ": unexpected (file has " + shape_str(t.shape) + ")");
    return problems;
}

}  // namespace l3lab::io
