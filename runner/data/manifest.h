// manifest.json beside a shard directory: the files with their split, token and document counts and
// sha256, and the tokenizer (file, sha256, vocabulary, BOS) that made them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace l3lab::data {

inline constexpr const char* kManifestName = "manifest.json";

struct ManifestFile {
    std::string file;   // name inside the directory, e.g. "train_000000.bin"
    std::string split;  // "train" | "val"
    int64_t tokens = 0;
    int64_t documents = 0;
    std::string sha256;
    // Shards made from a parquet file: the file, and its row groups' documents in this shard (a row
    // group with none of them is 0): the loader's rank striding follows these, as nanochat's does.
    std::string source;
    std::vector<int64_t> row_groups;
};

struct Manifest {
    int version = 1;
    std::string created_by;
    // The tokenizer that made the shards; sha256 of its file ties the shards to it.
    std::string tokenizer_file;
    std::string tokenizer_sha256;
    int64_t vocab_size = 0;
    int64_t bos_id = 0;
    int shard_version = 1;        // 1 = uint16 tokens, 2 = uint32
    int64_t shard_tokens = 0;     // target tokens per shard
    double val_fraction = 0;      // share of documents pinned to validation by content hash
    std::string split = "hash";   // "hash" (val_fraction) | "nanochat" (the last parquet file is val)
    std::vector<std::string> inputs;
    int64_t empty_documents_skipped = 0;
    int64_t max_doc_bytes = 0;    // > 0: input documents longer than this were cut into pieces (documents)
    int64_t documents_cut = 0;    // how many input documents were cut
    std::vector<ManifestFile> files;

    const ManifestFile* find(const std::string& name) const;
    int64_t tokens(const std::string& split) const;     // "" = all
    int64_t documents(const std::string& split) const;  // "" = all

    std::string to_json() const;  // pretty, stable key order
    // Throws DataError naming `path` and the bad key.
    static Manifest parse(const std::string& text, const std::string& path);
    static Manifest read(const std::string& path);
};

// `dir/manifest.json` when it exists.
std::optional<std::string> manifest_path_in(const std::string& dir);

}  // namespace l3lab::data
