// Seeded random corruption of the binary inputs: token shards, the shard manifest and safetensors
// files. Every damaged file is either read correctly (when the damage happens to leave a valid file,
// e.g. a token changed to another valid token) or refused with DataError / SafetensorsError naming the
// file; nothing else may escape, and nothing may read out of bounds. This file is also compiled into
// l3lab_sanitize_tests (tests/CMakeLists.txt) with AddressSanitizer and UBSan, where an out-of-bounds
// read, an overflow or a bad cast fails the run. L3LAB_FUZZ_CASES scales the loops.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runner/data/errors.h"
#include "runner/data/manifest.h"
#include "runner/data/shard.h"
#include "runner/data/shard_set.h"
#include "runner/io/safetensors.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace l3lab;
using nlohmann::json;

namespace {

using test::Rng;

int cases(int fallback) {
    const char* n = std::getenv("L3LAB_FUZZ_CASES");
    return n && *n ? std::max(fallback, std::atoi(n)) : fallback;
}

void write_file(const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string le32(int32_t v) {
    std::string out(4, '\0');
    for (int i = 0; i < 4; ++i) out[i] = static_cast<char>(static_cast<uint32_t>(v) >> (8 * i));
    return out;
}

std::string le64(uint64_t v) {
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(v >> (8 * i));
    return out;
}

// Damage typical of disks, copies and bad writers: flipped bytes, cut files, junk appended, a header
// word replaced with an extreme.
std::string damage_shard(const std::string& good, Rng& rng) {
    std::string b = good;
    switch (rng.below(7)) {
        case 0:  // random bytes anywhere
            for (size_t k = 0, n = 1 + rng.below(8); k < n && !b.empty(); ++k) b[rng.below(b.size())] = static_cast<char>(rng.next());
            break;
        case 1:  // truncated
            b.resize(rng.below(b.size() + 1));
            break;
        case 2: {  // a header word (magic, version, count) set to an extreme
            static const int32_t extremes[] = {0, 1, 2, 3, -1, INT32_MAX, INT32_MIN, 20240520, 1 << 30, 65536};
            size_t word = rng.below(3);
            b.replace(4 * word, 4, le32(extremes[rng.below(10)]));
            break;
        }
        case 3:  // junk appended
            for (size_t k = 0, n = 1 + rng.below(64); k < n; ++k) b += static_cast<char>(rng.next());
            break;
        case 4:  // nothing but random bytes
            b.assign(rng.below(4096), '\0');
            for (auto& c : b) c = static_cast<char>(rng.next());
            break;
        case 5:  // token bytes past the vocabulary, or the BOS moved
            for (size_t k = 0, n = 1 + rng.below(4); k < n && b.size() > 1024; ++k)
                b[1024 + rng.below(b.size() - 1024)] = static_cast<char>(0xff);
            break;
        default:  // the count off by a little
            if (b.size() >= 12) {
                int32_t count;
                std::memcpy(&count, b.data() + 8, 4);
                b.replace(8, 4, le32(count + static_cast<int32_t>(rng.below(7)) - 3));
            }
    }
    return b;
}

// A DataError's text must name the file it is about.
void expect_names(const std::string& what, const std::string& file, const std::string& context) {
    EXPECT_NE(what.find(file), std::string::npos) << context << ": the error does not name " << file << ": " << what;
}

}  // namespace

TEST(CorruptShards, RandomDamageIsReadOrRefusedWithFileAndOffset) {
    test::TempDir dir;
    const std::string good_path = (dir.path() / "good.bin").string();
    int opened = 0, refused = 0;
    Rng rng{20240520};
    const int n = cases(600);
    for (int i = 0; i < n; ++i) {
        const int version = 1 + static_cast<int>(rng.below(2));
        std::vector<int32_t> tokens;
        for (size_t k = 0, len = rng.below(300); k < len; ++k) tokens.push_back(k % 40 == 0 ? 1 : static_cast<int32_t>(2 + rng.below(398)));
        {
            data::ShardWriter w(good_path, version);
            w.append(tokens);
            w.close();
        }
        const std::string bad = damage_shard(test::slurp(good_path), rng);
        const std::string path = (dir.path() / ("s" + std::to_string(i) + ".bin")).string();
        write_file(path, bad);
        const std::string context = "case " + std::to_string(i);
        try {
            auto shard = data::ShardFile::open(path);
            // Opened: the header agrees with the size, so every token can be read.
            EXPECT_EQ(shard->file_bytes(), bad.size()) << context;
            std::vector<int64_t> all(shard->num_tokens());
            shard->copy(0, shard->num_tokens(), all.data());
            // The whole set check: tokens against a 400-token vocabulary, documents from BOS 1.
            try {
                auto set = data::ShardSet::open(path, {.vocab_size = 400, .bos_id = 1, .threads = 1});
                for (int64_t t : all) EXPECT_LT(t, 400) << context;
                EXPECT_EQ(set->tokens(), shard->num_tokens()) << context;
            } catch (const data::DataError& e) {
                expect_names(e.what(), path, context);
                EXPECT_NE(std::string(e.what()).find("byte offset"), std::string::npos) << context << ": " << e.what();
            }
            ++opened;
        } catch (const data::DataError& e) {
            ++refused;
            expect_names(e.what(), path, context);
        } catch (const std::exception& e) {
            ADD_FAILURE() << context << ": not a DataError: " << e.what();
        }
        fs::remove(path);
    }
    std::printf("[ shards   ] %d damaged shards: %d opened, %d refused\n", n, opened, refused);
    EXPECT_GT(refused, n / 3);
}

TEST(CorruptShards, HeaderLiesAreRefusedAtTheirOffset) {
    test::TempDir dir;
    const std::string path = (dir.path() / "lie.bin").string();
    auto header = [](int32_t magic, int32_t version, int32_t count) {
        std::string h = le32(magic) + le32(version) + le32(count);
        h.resize(1024, '\0');
        return h;
    };
    struct Case {
        std::string bytes, message;
    };
    const std::vector<Case> lies = {
        {header(20240520, 1, INT32_MAX) + std::string(10, '\0'), "byte offset 1,034: truncated: the header promises 2,147,483,647 tokens"},
        {header(20240520, 2, INT32_MAX), "byte offset 1,024: truncated: the header promises 2,147,483,647 tokens (8,589,935,612 bytes)"},
        {header(20240520, 1, -5), "byte offset 8: negative token count -5"},
        {header(20240520, 1, INT32_MIN), "byte offset 8: negative token count -2147483648"},
        {header(20240520, 0, 0), "byte offset 4: unknown shard version 0"},
        {header(20240520, -1, 0), "byte offset 4: unknown shard version -1"},
        {header(-20240520, 1, 0), "byte offset 0: wrong magic -20240520"},
        {header(20240520, 1, 0) + "x", "byte offset 1,024: 1 bytes after the 0 tokens"},
        {std::string(1023, '\0'), "byte offset 1,023: truncated: the file has 1,023 bytes"},
        {"", "byte offset 0: truncated: the file has 0 bytes"},
    };
    for (const auto& lie : lies) {
        write_file(path, lie.bytes);
        try {
            data::ShardFile::open(path);
            ADD_FAILURE() << "accepted: " << lie.message;
        } catch (const data::DataError& e) {
            EXPECT_NE(std::string(e.what()).find(path + ": " + lie.message), std::string::npos) << e.what();
        }
    }
    // An empty shard (0 tokens) is valid and has no documents.
    write_file(path, header(20240520, 1, 0));
    EXPECT_EQ(data::ShardFile::open(path)->num_tokens(), 0u);
}

// manifest.json beside two good shards, damaged as text and as JSON values.
TEST(CorruptManifest, RandomDamageIsRefusedNamingTheManifestOrTheShard) {
    test::TempDir dir;
    const fs::path shards = dir.path() / "shards";
    fs::create_directories(shards);
    data::Manifest m;
    m.created_by = "test";
    m.tokenizer_file = "tok.model";
    m.tokenizer_sha256 = std::string(64, 'a');
    m.vocab_size = 400;
    m.bos_id = 1;
    m.shard_version = 1;
    m.shard_tokens = 1000;
    m.val_fraction = 0.1;
    const std::vector<int32_t> train = {1, 5, 6, 7, 1, 8, 9}, val = {1, 10, 11};
    for (const auto& [name, tokens, split] : {std::tuple{"train_000000.bin", train, "train"}, std::tuple{"val_000000.bin", val, "val"}}) {
        data::ShardWriter w((shards / name).string(), 1);
        w.append(tokens);
        w.close();
        m.files.push_back({name, split, static_cast<int64_t>(tokens.size()), split == std::string("train") ? 2 : 1,
                           std::string(64, '0'), "", {}});
    }
    const std::string manifest_path = (shards / "manifest.json").string();
    const std::string good = m.to_json();
    write_file(manifest_path, good);
    ASSERT_EQ(data::ShardSet::open(shards.string(), {.split = "train", .threads = 1})->documents(), 2u);

    static const std::vector<json> values = {nullptr, true, -1, 0, 1, 2, 400, 401, 1.5, -0.5, 1e300, -1e300,
                                             9223372036854775807LL, "x", "", "../x.bin", "a/b", json::array(),
                                             json::array({1, 2}), json::object(), json::object({{"a", 1}}),
                                             "train", "val", "l3lab token shards", 18446744073709551615ULL};
    Rng rng{7};
    int refused = 0, opened = 0;
    const int n = cases(400);
    for (int i = 0; i < n; ++i) {
        std::string text;
        if (rng.below(3) == 0) {  // text damage: flipped bytes, cut, duplicated spans
            text = good;
            for (size_t k = 0, c = 1 + rng.below(4); k < c; ++k) {
                switch (rng.below(3)) {
                    case 0: text[rng.below(text.size())] = static_cast<char>(rng.next()); break;
                    case 1: text.resize(rng.below(text.size() + 1)); break;
                    default: {
                        size_t a = rng.below(text.size() + 1), len = rng.below(40);
                        text.insert(rng.below(text.size() + 1), text.substr(a, len));
                    }
                }
                if (text.empty()) break;
            }
        } else {  // value damage: one key of the manifest, a tokenizer field or a file entry replaced or removed
            json j = json::parse(good);
            json* target = &j;
            const int where = static_cast<int>(rng.below(3));
            if (where == 1) target = &j["tokenizer"];
            if (where == 2 && j["files"].is_array() && j["files"].size() == 2) target = &j["files"][rng.below(2)];
            std::vector<std::string> keys;
            for (auto it = target->begin(); it != target->end(); ++it) keys.push_back(it.key());
            const std::string key = keys[rng.below(keys.size())];
            if (rng.below(5) == 0) target->erase(key);
            else (*target)[key] = values[rng.below(values.size())];
            if (rng.below(6) == 0 && j["files"].is_array() && !j["files"].empty())
                j["files"].push_back(j["files"][0]);  // a file listed twice
            text = j.dump(rng.below(2) ? 2 : -1);
        }
        write_file(manifest_path, text);
        const std::string context = "case " + std::to_string(i) + " manifest:\n" + text.substr(0, 600);
        for (const char* split : {"train", "val", ""}) {
            try {
                auto set = data::ShardSet::open(shards.string(), {.split = split, .threads = 1});
                EXPECT_GT(set->tokens(), 0u) << context;
                ++opened;
            } catch (const data::DataError& e) {
                ++refused;
                const std::string what = e.what();
                EXPECT_TRUE(what.find(manifest_path) != std::string::npos || what.find(shards.string()) != std::string::npos)
                    << context << "\nthe error names neither the manifest nor a shard: " << what;
            } catch (const std::exception& e) {
                ADD_FAILURE() << context << "\nnot a DataError: " << e.what();
            }
        }
    }
    std::printf("[ manifest ] %d damaged manifests x 3 splits: %d opened, %d refused\n", n, opened, refused);
    EXPECT_GT(refused, n);
}

// ---- safetensors: the header's JSON damaged value by value, and the length prefix lying ----

namespace {

std::string safetensors_bytes(const json& header, const std::string& data) {
    std::string text = header.dump();
    return le64(text.size()) + text + data;
}

}  // namespace

TEST(CorruptSafetensors, DamagedHeadersAreRefusedOrReadConsistently) {
    test::TempDir dir;
    const std::string path = (dir.path() / "t.safetensors").string();
    // Three tensors tiling a 40-byte buffer.
    const json good = {{"__metadata__", {{"format", "pt"}}},
                       {"a", {{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {0, 24}}}},
                       {"b", {{"dtype", "BF16"}, {"shape", {4}}, {"data_offsets", {24, 32}}}},
                       {"c", {{"dtype", "I64"}, {"shape", json::array()}, {"data_offsets", {32, 40}}}}};
    std::string data(40, '\0');
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7);
    write_file(path, safetensors_bytes(good, data));
    ASSERT_EQ(io::read_safetensors(path).tensors.size(), 3u);

    static const std::vector<json> values = {nullptr, true, -1, 0, 1, 3, 8, 24, 32, 40, 41, 1.5, 1e300,
                                             9223372036854775807LL, 18446744073709551615ULL, "F32", "F16", "I8",
                                             "U64", "BOOL", "f32", "", json::array(), json::array({0}),
                                             json::array({0, 40}), json::array({24, 8}), json::array({-1, 8}),
                                             json::array({4611686018427387904LL, 4611686018427387904LL}),
                                             json::array({json::array({1})}), json::object(), "x"};
    Rng rng{99};
    int refused = 0, read = 0;
    const int n = cases(600);
    for (int i = 0; i < n; ++i) {
        json h = good;
        std::string bytes;
        const size_t kind = rng.below(10);
        if (kind < 6) {  // a field of one tensor (or the metadata) replaced or removed
            static const char* names[] = {"a", "b", "c", "__metadata__"};
            json& t = h[names[rng.below(4)]];
            static const char* fields[] = {"dtype", "shape", "data_offsets", "format"};
            const std::string field = fields[rng.below(4)];
            if (rng.below(6) == 0) t.erase(field);
            else if (t.is_object()) t[field] = values[rng.below(values.size())];
            if (rng.below(4) == 0) h[std::string(1, static_cast<char>('a' + rng.below(5)))] = values[rng.below(values.size())];
            bytes = safetensors_bytes(h, data.substr(0, data.size() - (rng.below(4) == 0 ? rng.below(41) : 0)));
        } else if (kind < 8) {  // the length prefix lies
            bytes = safetensors_bytes(h, data);
            static const uint64_t lengths[] = {0, 1, 7, 8, 100, 1000, 100'000'000, 100'000'001, 1ull << 32, 1ull << 63, ~0ull};
            uint64_t len = rng.below(2) ? lengths[rng.below(11)] : h.dump().size() + rng.below(9) - 4;
            bytes.replace(0, 8, le64(len));
        } else {  // bytes flipped in the header text, or the file cut
            bytes = safetensors_bytes(h, data);
            if (kind == 8)
                for (size_t k = 0, c = 1 + rng.below(4); k < c; ++k) bytes[8 + rng.below(bytes.size() - 8)] = static_cast<char>(rng.next());
            else
                bytes.resize(rng.below(bytes.size()));
        }
        write_file(path, bytes);
        const std::string context = "case " + std::to_string(i) + ": " + bytes.substr(std::min<size_t>(8, bytes.size()), 400);
        try {
            auto file = io::read_safetensors(path);
            ++read;
            // Accepted: every tensor's bytes match its shape and dtype, and they tile the file's buffer.
            uint64_t total = 0;
            for (const auto& t : file.tensors) {
                uint64_t numel = 1;
                for (int64_t d : t.shape) numel *= static_cast<uint64_t>(d);
                EXPECT_EQ(t.data.size(), numel * io::dtype_size(t.dtype)) << context;
                total += t.data.size();
            }
            EXPECT_LE(total, bytes.size()) << context;
        } catch (const io::SafetensorsError& e) {
            ++refused;
            EXPECT_EQ(std::string(e.what()).rfind(path + ": ", 0), 0u) << context << "\n" << e.what();
        } catch (const std::exception& e) {
            ADD_FAILURE() << context << "\nnot a SafetensorsError: " << e.what();
        }
    }
    std::printf("[ safetens ] %d damaged files: %d read, %d refused\n", n, read, refused);
    EXPECT_GT(refused, n / 2);
}

TEST(CorruptSafetensors, EveryTruncationIsRefusedNamingTheFile) {
    test::TempDir dir;
    const std::string path = (dir.path() / "cut.safetensors").string();
    const json header = {{"a", {{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {0, 24}}}},
                         {"b", {{"dtype", "U8"}, {"shape", {5}}, {"data_offsets", {24, 29}}}}};
    const std::string good = safetensors_bytes(header, std::string(29, 'x'));
    for (size_t cut = 0; cut < good.size(); ++cut) {
        write_file(path, good.substr(0, cut));
        try {
            io::read_safetensors(path);
            ADD_FAILURE() << "accepted the file cut at " << cut;
        } catch (const io::SafetensorsError& e) {
            EXPECT_EQ(std::string(e.what()).rfind(path + ": ", 0), 0u) << e.what();
        }
    }
}

TEST(CorruptSafetensors, DeeplyNestedHeaderValuesAreRefusedWithoutRecursing) {
    // A header value nested a million levels deep: the message must not try to print it whole.
    test::TempDir dir;
    const std::string path = (dir.path() / "deep.safetensors").string();
    const std::string deep = std::string(1'000'000, '[') + std::string(1'000'000, ']');
    for (const std::string& header : {"{\"a\":{\"dtype\":\"F32\",\"shape\":" + deep + ",\"data_offsets\":[0,4]}}",
                                      "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":" + deep + "}}",
                                      "{\"a\":{\"dtype\":" + deep + ",\"shape\":[1],\"data_offsets\":[0,4]}}",
                                      "{\"a\":" + deep + "}"}) {
        write_file(path, le64(header.size()) + header + "abcd");
        try {
            io::read_safetensors(path);
            ADD_FAILURE() << "accepted";
        } catch (const io::SafetensorsError& e) {
            EXPECT_LT(std::string(e.what()).size(), 2000u) << std::string(e.what()).substr(0, 300);
        }
    }
}
