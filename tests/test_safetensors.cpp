// safetensors I/O: round trips, interop with Python's `safetensors` package, refusal of corrupt files.
#include <gtest/gtest.h>
#include <unistd.h>

#include <bit>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>

#include "runner/io/safetensors.h"
#include "test_util.h"

using namespace l3lab;
using io::DType;
using io::SafetensorsError;
using io::TensorRecord;
namespace fs = std::filesystem;

namespace {

template <typename T>
TensorRecord record(const std::string& name, DType dtype, std::vector<int64_t> shape, const std::vector<T>& values) {
    TensorRecord t{name, dtype, std::move(shape), std::vector<std::byte>(values.size() * sizeof(T))};
    if (!values.empty()) std::memcpy(t.data.data(), values.data(), t.data.size());
    return t;
}

template <typename T>
std::vector<T> values_of(const TensorRecord& t) {
    std::vector<T> out(t.data.size() / sizeof(T));
    if (!out.empty()) std::memcpy(out.data(), t.data.data(), t.data.size());
    return out;
}

// bfloat16 is the top half of a float32; exact for the values used here.
uint16_t bf16_bits(float f) { return static_cast<uint16_t>(std::bit_cast<uint32_t>(f) >> 16); }

// The same tensors are built by kPythonScript below; keep the two in step.
std::vector<TensorRecord> sample_tensors() {
    std::vector<float> wte(12);
    for (size_t i = 0; i < wte.size(); ++i) wte[i] = 0.5f * float(i) - 1.0f;
    std::vector<uint16_t> lambdas;
    for (float f : {1.0f, -2.5f, 0.15625f, 3.0f, 256.0f}) lambdas.push_back(bf16_bits(f));
    return {
        record("transformer.wte.weight", DType::F32, {3, 4}, wte),
        record("resid_lambdas", DType::BF16, {5}, lambdas),
        record("tokens", DType::I64, {2, 2}, std::vector<int64_t>{1, -2, int64_t(1) << 40, std::numeric_limits<int64_t>::max()}),
        record("step", DType::I64, {}, std::vector<int64_t>{-1234567890123}),
        record("empty", DType::F32, {0, 3}, std::vector<float>{}),
    };
}

const std::map<std::string, std::string> kSampleMetadata = {{"format", "pt"}};

void expect_same_tensors(const std::vector<TensorRecord>& expected, const io::SafetensorsFile& file) {
    ASSERT_EQ(file.tensors.size(), expected.size());
    for (const auto& e : expected) {
        SCOPED_TRACE(e.name);
        const TensorRecord* t = file.find(e.name);
        ASSERT_NE(t, nullptr);
        EXPECT_EQ(t->dtype, e.dtype);
        EXPECT_EQ(t->shape, e.shape);
        EXPECT_EQ(t->data, e.data);
    }
}

std::string read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::string& bytes) {
    // A fresh file, not a truncated one: ext4 flushes truncate-then-rewrite files on close, which is slow.
    fs::remove(path);
    std::ofstream(path, std::ios::binary) << bytes;
}

std::string le64(uint64_t v) {
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(v >> (8 * i));
    return out;
}

// A file made of a header text and a data buffer, for hand-made corruptions.
std::string file_with(const std::string& header, const std::string& buffer = "") {
    return le64(header.size()) + header + buffer;
}

// The SafetensorsError message of reading `bytes`, or "" when the read succeeds.
std::string read_error(const test::TempDir& dir, const std::string& bytes) {
    const std::string path = (dir.path() / "bad.safetensors").string();
    write_bytes(path, bytes);
    try {
        io::read_safetensors(path);
    } catch (const SafetensorsError& e) {
        EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << "message lacks the path: " << e.what();
        return e.what();
    }
    return "";
}

#define EXPECT_REFUSED(bytes, substring)                                              \
    do {                                                                              \
        std::string message_ = read_error(dir, bytes);                                \
        EXPECT_NE(message_.find(substring), std::string::npos)                        \
            << "expected an error containing '" << (substring) << "', got '" << message_ << "'"; \
    } while (0)

std::vector<std::string> dir_entries(const fs::path& dir) {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
}

}  // namespace

// ---- round trip ----

TEST(Safetensors, RoundTripKeepsDtypesShapesValuesAndMetadata) {
    test::TempDir dir;
    const std::string path = (dir.path() / "model.safetensors").string();
    const auto tensors = sample_tensors();
    io::write_safetensors(path, tensors, {{"format", "pt"}, {"note", "héllo"}});

    auto file = io::read_safetensors(path);
    expect_same_tensors(tensors, file);
    EXPECT_EQ(file.metadata, (std::map<std::string, std::string>{{"format", "pt"}, {"note", "héllo"}}));
    EXPECT_EQ(values_of<int64_t>(*file.find("step")), std::vector<int64_t>{-1234567890123});
    EXPECT_EQ(file.find("missing"), nullptr);
    const std::string bytes = read_bytes(path);
    EXPECT_EQ(uint8_t(bytes[0]) % 8, 0) << "the header is padded so the data starts 8-byte aligned";
    EXPECT_EQ(bytes.find("       "), std::string::npos) << "padding is under 8 spaces";
}

TEST(Safetensors, EmptyFileRoundTrips) {
    test::TempDir dir;
    const std::string path = (dir.path() / "empty.safetensors").string();
    io::write_safetensors(path, {});
    EXPECT_EQ(read_bytes(path), le64(8) + "{}      ");  // what Python writes for save({})
    auto file = io::read_safetensors(path);
    EXPECT_TRUE(file.tensors.empty());
    EXPECT_TRUE(file.metadata.empty());
}

TEST(Safetensors, WriteIsDeterministicWhateverTheInputOrder) {
    test::TempDir dir;
    auto tensors = sample_tensors();
    const std::string a = (dir.path() / "a.safetensors").string(), b = (dir.path() / "b.safetensors").string();
    io::write_safetensors(a, tensors, kSampleMetadata);
    std::reverse(tensors.begin(), tensors.end());
    io::write_safetensors(b, tensors, kSampleMetadata);
    EXPECT_EQ(read_bytes(a), read_bytes(b));
}

TEST(Safetensors, DtypeNamesParse) {
    for (const char* name : {"BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"}) {
        auto dtype = io::parse_dtype(name);
        ASSERT_TRUE(dtype) << name;
        EXPECT_STREQ(io::dtype_name(*dtype), name);
    }
    EXPECT_EQ(io::dtype_size(DType::BF16), 2u);
    EXPECT_EQ(io::dtype_size(DType::I64), 8u);
    EXPECT_FALSE(io::parse_dtype("f32"));
    EXPECT_FALSE(io::parse_dtype("F8_E4M3"));
}

TEST(Safetensors, WriterRefusesBadRecords) {
    test::TempDir dir;
    const std::string path = (dir.path() / "x.safetensors").string();
    auto expect_refused = [&](std::vector<TensorRecord> tensors, const std::string& substring) {
        try {
            io::write_safetensors(path, tensors);
            ADD_FAILURE() << "expected a refusal containing '" << substring << "'";
        } catch (const SafetensorsError& e) {
            EXPECT_NE(std::string(e.what()).find(substring), std::string::npos) << e.what();
        }
        EXPECT_FALSE(fs::exists(path));
    };
    auto a = record("a", DType::F32, {2}, std::vector<float>{1, 2});
    expect_refused({a, a}, "'a': the name appears twice");
    expect_refused({record("a", DType::F32, {3}, std::vector<float>{1, 2})}, "needs 12 bytes but the record holds 8");
    expect_refused({record("a", DType::F32, {-1}, std::vector<float>{})}, "negative dimension");
    expect_refused({record("a", DType::F32, {int64_t(1) << 62, 8}, std::vector<float>{})}, "overflows");
    expect_refused({record("__metadata__", DType::F32, {0}, std::vector<float>{})}, "reserved");
    EXPECT_TRUE(dir_entries(dir.path()).empty());
}

TEST(Safetensors, CheckNamesAndShapesListsEveryMismatch) {
    io::SafetensorsFile file;
    file.tensors = {record("a", DType::F32, {2, 3}, std::vector<float>(6)),
                    record("b", DType::F32, {4}, std::vector<float>(4)),
                    record("extra", DType::F32, {1}, std::vector<float>(1))};
    EXPECT_TRUE(io::check_names_and_shapes(file, {{"a", {2, 3}}, {"b", {4}}, {"extra", {1}}}).empty());
    EXPECT_EQ(io::check_names_and_shapes(file, {{"a", {3, 2}}, {"b", {4}}, {"lm_head.weight", {5, 6}}}),
              (std::vector<std::string>{"a: expected [3, 2], file has [2, 3]", "lm_head.weight: missing (expected [5, 6])",
                                        "extra: unexpected (file has [1])"}));
}

// ---- interop with Python's safetensors package ----

namespace {

// Checks the file l3lab wrote against tensors built independently in torch, then writes the same
// tensors with save_file for the C++ side to read. Prints a JSON report on its last line.
constexpr const char* kPythonScript = R"PY(
import json, sys, torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
d = sys.argv[1]
expected = {
    "transformer.wte.weight": (torch.arange(12, dtype=torch.float32) * 0.5 - 1.0).reshape(3, 4),
    "resid_lambdas": torch.tensor([1.0, -2.5, 0.15625, 3.0, 256.0], dtype=torch.bfloat16),
    "tokens": torch.tensor([[1, -2], [1 << 40, 2**63 - 1]], dtype=torch.int64),
    "step": torch.tensor(-1234567890123, dtype=torch.int64),
    "empty": torch.zeros(0, 3, dtype=torch.float32),
}
got = load_file(d + "/from_l3lab.safetensors")
problems = []
for name in sorted(set(expected) | set(got)):
    e, g = expected.get(name), got.get(name)
    if e is None or g is None:
        problems.append(name + ": only in " + ("python" if g is None else "l3lab"))
    elif g.dtype != e.dtype or g.shape != e.shape or not torch.equal(g, e):
        problems.append(f"{name}: python expected {e.dtype} {list(e.shape)} {e.tolist()}, got {g.dtype} {list(g.shape)} {g.tolist()}")
with safe_open(d + "/from_l3lab.safetensors", framework="pt") as f:
    metadata = f.metadata()
save_file(expected, d + "/from_python.safetensors", metadata={"format": "pt"})
print(json.dumps({"problems": problems, "metadata": metadata}))
)PY";

// Runs kPythonScript in `dir`; skip_reason says why not when there is no Python to run it.
struct PythonRun {
    std::string skip_reason, output;
    int exit_code = -1;
};

PythonRun run_python(const test::TempDir& dir) {
    const std::string python = L3LAB_PYTHON;
    if (python.empty() || ::access(python.c_str(), X_OK) != 0)
        return {"no Python at '" + python + "' (the L3LAB_PYTHON CMake variable; run tools/bootstrap.sh)", "", -1};
    PythonRun run;
    const std::string script = dir.write("interop.py", kPythonScript);
    const std::string command = "'" + python + "' '" + script + "' '" + dir.path().string() + "' 2>&1";
    FILE* pipe = ::popen(command.c_str(), "r");
    if (!pipe) return {"", "popen failed", -1};
    char buf[4096];
    while (size_t n = std::fread(buf, 1, sizeof buf, pipe)) run.output.append(buf, n);
    run.exit_code = ::pclose(pipe);
    return run;
}

}  // namespace

// One test, so one Python run: importing torch takes over a second.
TEST(SafetensorsPython, InteropBothWaysWithIdenticalBytes) {
    test::TempDir dir;
    const std::string ours = (dir.path() / "from_l3lab.safetensors").string();
    const std::string theirs = (dir.path() / "from_python.safetensors").string();
    io::write_safetensors(ours, sample_tensors(), kSampleMetadata);
    const PythonRun run = run_python(dir);
    if (!run.skip_reason.empty()) GTEST_SKIP() << run.skip_reason;
    ASSERT_EQ(run.exit_code, 0) << "python failed:\n" << run.output;

    // Python loads what l3lab writes.
    const auto last_line = run.output.substr(run.output.find_last_of('\n', run.output.size() - 2) + 1);
    const auto report = nlohmann::json::parse(last_line, nullptr, false);
    ASSERT_TRUE(report.is_object()) << run.output;
    EXPECT_TRUE(report["problems"].empty()) << report["problems"].dump(2);
    EXPECT_EQ(report["metadata"], nlohmann::json(kSampleMetadata));

    // l3lab reads what Python writes.
    auto file = io::read_safetensors(theirs);
    expect_same_tensors(sample_tensors(), file);
    EXPECT_EQ(file.metadata, kSampleMetadata);

    // Same tensor order, header layout and padding as save_file.
    EXPECT_EQ(read_bytes(ours), read_bytes(theirs));
}

// ---- corrupt files ----

TEST(SafetensorsCorrupt, HandMadeDefectsAreNamed) {
    test::TempDir dir;
    const std::string f4 = R"("dtype":"F32","shape":[1])";
    EXPECT_REFUSED("", "too short (0 bytes)");
    EXPECT_REFUSED("\x01\x02\x03", "too short (3 bytes)");
    EXPECT_REFUSED(le64(uint64_t(1) << 63) + "{}", "header length 9223372036854775808 (file bytes 0-7) is absurd");
    EXPECT_REFUSED(le64(100) + "{}", "header length 100 (file bytes 0-7) runs past the end of the 10-byte file");
    EXPECT_REFUSED(file_with(""), "not valid JSON");
    EXPECT_REFUSED(file_with("{\"a\": {"), "not valid JSON (file byte offset 15)");
    EXPECT_REFUSED(file_with(std::string("{}\0\0\0\0\0\0", 8)), "not valid JSON: NUL byte at file byte offset 10");
    EXPECT_REFUSED(file_with("{\"a\": \"\xff\"}"), "not valid JSON");
    EXPECT_REFUSED(file_with("[1, 2]"), "header is not a JSON object but array");
    EXPECT_REFUSED(file_with(R"({"a": 3})"), "tensor 'a': header entry is not an object");
    EXPECT_REFUSED(file_with(R"({"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}})", "abcd"), "tensor 'a': unknown dtype 'F33'");
    EXPECT_REFUSED(file_with(R"({"a":{"shape":[1],"data_offsets":[0,4]}})", "abcd"), "\"dtype\" is missing");
    EXPECT_REFUSED(file_with(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "abcd"),
                   "tensor 'a': negative dimension -1");
    EXPECT_REFUSED(file_with(R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", "abcd"), "not a dimension");
    EXPECT_REFUSED(file_with(R"({"a":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,4]}})", "abcd"),
                   "tensor 'a': shape [4611686018427387904, 4611686018427387904] of F32 overflows");
    EXPECT_REFUSED(file_with(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", "abcd"),
                   "tensor 'a': shape [2] of F32 needs 8 bytes but data_offsets [0,4] hold 4");
    EXPECT_REFUSED(file_with(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", "abcd"), "end before they begin");
    EXPECT_REFUSED(file_with(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", "abcd"), "two non-negative integers");
    EXPECT_REFUSED(file_with(R"({"a":{)" + f4 + R"(,"data_offsets":[96,100]}})", "abcd"),
                   "tensor 'a': data_offsets [96, 100] run past the 4-byte data buffer");
    EXPECT_REFUSED(file_with(R"({"a":{)" + f4 + R"(,"data_offsets":[0,4]},"b":{)" + f4 + R"(,"data_offsets":[2,6]}})", "abcdef"),
                   "tensor 'b' overlaps tensor 'a'");
    EXPECT_REFUSED(file_with(R"({"a":{)" + f4 + R"(,"data_offsets":[0,4]},"b":{)" + f4 + R"(,"data_offsets":[6,10]}})", "abcdefghij"),
                   "gap in the data buffer: bytes 4 to 6 before tensor 'b'");
    EXPECT_REFUSED(file_with(R"({"a":{)" + f4 + R"(,"data_offsets":[0,4]}})", "abcdef"), "the data buffer has 6 bytes but the tensors cover 4");
    EXPECT_REFUSED(file_with(R"({"a":{)" + f4 + R"(,"data_offsets":[0,4]},"a":{)" + f4 + R"(,"data_offsets":[0,4]}})", "abcd"),
                   "duplicate tensor name 'a'");
    EXPECT_REFUSED(file_with(R"({"a":{)" + f4 + R"(,"dtype":"I32","data_offsets":[0,4]}})", "abcd"), "duplicate key 'dtype'");
    EXPECT_REFUSED(file_with(R"({"__metadata__":{"step":5}})"), "__metadata__ values must be strings; 'step' is number");
    EXPECT_REFUSED(file_with(R"({"__metadata__":["x"]})"), "__metadata__ must be an object of strings");
    EXPECT_REFUSED(file_with("{\"__metadata__\":" + std::string(100000, '[') + std::string(100000, ']') + "}"),
                   "__metadata__ must be an object");
    EXPECT_EQ(read_error(dir, file_with(R"(  {"a":{)" + f4 + R"(,"data_offsets":[0,4],"future":1}}    )", "abcd")), "");
}

TEST(SafetensorsCorrupt, RandomBytesAreRefused) {
    test::TempDir dir;
    std::mt19937_64 rng(20240520);
    for (int i = 0; i < 50; ++i) {
        std::string bytes(rng() % 300, '\0');
        for (auto& c : bytes) c = static_cast<char>(rng());
        EXPECT_NE(read_error(dir, bytes), "") << "random file " << i << " was accepted";
    }
}

TEST(SafetensorsCorrupt, EveryTruncationIsRefused) {
    test::TempDir dir;
    const std::string path = (dir.path() / "good.safetensors").string();
    io::write_safetensors(path, sample_tensors(), kSampleMetadata);
    const std::string good = read_bytes(path);
    uint64_t header_end = 8;
    for (int i = 0; i < 8; ++i) header_end += uint64_t(uint8_t(good[i])) << (8 * i);
    for (size_t cut = 0; cut < good.size(); ++cut) {
        SCOPED_TRACE("truncated at " + std::to_string(cut));
        const char* why = cut < 8 ? "too short" : cut < header_end ? "runs past the end" : "is the file truncated?";
        EXPECT_REFUSED(good.substr(0, cut), why);
    }
}

TEST(SafetensorsCorrupt, RandomDamageGivesACleanParseOrSafetensorsError) {
    test::TempDir dir;
    const std::string path = (dir.path() / "good.safetensors").string();
    io::write_safetensors(path, sample_tensors(), kSampleMetadata);
    const std::string good = read_bytes(path);
    std::mt19937 rng(12345);
    int refused = 0;
    for (int i = 0; i < 400; ++i) {
        std::string bytes = good;
        const int flips = 1 + int(rng() % 3);
        for (int f = 0; f < flips; ++f) bytes[rng() % bytes.size()] = static_cast<char>(rng());
        if (rng() % 4 == 0) bytes.resize(rng() % bytes.size());
        try {
            write_bytes(path, bytes);
            auto file = io::read_safetensors(path);
            size_t total = 0;
            for (const auto& t : file.tensors) total += t.data.size();
            EXPECT_LE(total, bytes.size());
        } catch (const SafetensorsError&) {
            ++refused;
        } catch (const std::exception& e) {
            ADD_FAILURE() << "damage " << i << " raised something else: " << e.what();
        }
    }
    EXPECT_GT(refused, 100);  // the header is most of the file, so most damage must be caught
}

// ---- atomic write ----

TEST(SafetensorsWrite, OverwritingLeavesTheNewFileAndNoTemporaries) {
    test::TempDir dir;
    const std::string path = (dir.path() / "model.safetensors").string();
    io::write_safetensors(path, {record("old", DType::F32, {1}, std::vector<float>{1})});
    io::write_safetensors(path, sample_tensors(), kSampleMetadata);
    expect_same_tensors(sample_tensors(), io::read_safetensors(path));
    EXPECT_EQ(dir_entries(dir.path()), std::vector<std::string>{"model.safetensors"});
}

TEST(SafetensorsWrite, AFailedWriteLeavesTheOldFile) {
    test::TempDir dir;
    const std::string path = (dir.path() / "model.safetensors").string();
    io::write_safetensors(path, sample_tensors(), kSampleMetadata);
    const std::string before = read_bytes(path);

    // The temporary name is taken by a directory, so the new file cannot even be created.
    const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
    fs::create_directory(tmp);
    try {
        io::write_safetensors(path, {record("new", DType::F32, {1}, std::vector<float>{2})});
        ADD_FAILURE() << "the write should have failed";
    } catch (const SafetensorsError& e) {
        EXPECT_NE(std::string(e.what()).find(tmp + ": cannot create"), std::string::npos) << e.what();
    }
    EXPECT_EQ(read_bytes(path), before);
    fs::remove(tmp);

    // A refused record never touches the file either.
    EXPECT_THROW(io::write_safetensors(path, {record("new", DType::F32, {2}, std::vector<float>{2})}), SafetensorsError);
    EXPECT_EQ(read_bytes(path), before);
    EXPECT_EQ(dir_entries(dir.path()), std::vector<std::string>{"model.safetensors"});
}

TEST(SafetensorsWrite, MissingDirectoryIsAnError) {
    test::TempDir dir;
    const std::string path = (dir.path() / "no" / "such" / "model.safetensors").string();
    EXPECT_THROW(io::write_safetensors(path, sample_tensors()), SafetensorsError);
    EXPECT_THROW(io::read_safetensors(path), SafetensorsError);
    EXPECT_THROW(io::read_safetensors(dir.path().string()), SafetensorsError);  // a directory
}
