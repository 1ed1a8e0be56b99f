// safetensors files (https://github.com/huggingface/safetensors), read and written without libtorch:
// an 8-byte little-endian header length N, N bytes of JSON
// `{"__metadata__": {...}, "name": {"dtype", "shape", "data_offsets": [begin, end]}, ...}`, then the
// data buffer. A torch-side adapter turns TensorRecords into tensors; this file only moves bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace l3lab::io {

// Declared in the order of the Python library's own dtype enum: the writer sorts by it, widest first
// (so every tensor starts aligned), then by name, which gives the same bytes as `save_file`.
enum class DType { BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64 };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);  // "F32", "BF16", ... as spelled in the header
std::optional<DType> parse_dtype(std::string_view name);

// One tensor: raw bytes in the file's layout (row-major, little-endian; BF16 as its uint16 bits).
// data.size() == numel(shape) * dtype_size(dtype); an empty shape is a scalar.
struct TensorRecord {
    std::string name;
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
    std::vector<std::byte> data;
};

struct SafetensorsFile {
    std::vector<TensorRecord> tensors;  // in the order of their data in the file
    std::map<std::string, std::string> metadata;
    const TensorRecord* find(std::string_view name) const;  // nullptr when absent
};

// Every refusal, reading or writing: "<path>: <problem>", with the tensor name or byte offset where
// one applies.
class SafetensorsError : public std::runtime_error {
public:
    SafetensorsError(const std::string& path, const std::string& problem);
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

// Atomic and durable: writes `<path>.tmp-<pid>`, fsyncs it, renames it over `path`, fsyncs the
// directory. A failure leaves `path` as it was. Names must be unique; the header is space-padded so
// the data starts 8-byte aligned.
void write_safetensors(const std::string& path, const std::vector<TensorRecord>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Validates the whole header against the file size before allocating anything it describes.
SafetensorsFile read_safetensors(const std::string& path);

// One line per difference between the file and the expected names and shapes: missing tensors (in
// the order expected), wrong shapes ("name: expected [a, b], file has [c, d]"), then unexpected
// tensors. Empty when they agree, so a loader can report every mismatch in one error.
std::vector<std::string> check_names_and_shapes(
    const SafetensorsFile& file, const std::vector<std::pair<std::string, std::vector<int64_t>>>& expected);

// "[2, 3]"; "[]" for a scalar.
std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace l3lab::io
