// The shards a run reads: a file, a glob or a directory, checked as a whole before anything trains -
// headers against file sizes, every token against the vocabulary, counts (and optionally sha256)
// against manifest.json, the manifest's tokenizer against the caller's - and indexed by document.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runner/data/manifest.h"
#include "runner/data/shard.h"

namespace l3lab::data {

// One shard and where its documents start. A document runs from its BOS token to the next BOS or the
// end of the shard. Tokens before a shard's first BOS (llm.c shards continue the previous shard's last
// document there) belong to no document and are never read.
struct ShardDocs {
    std::shared_ptr<const ShardFile> file;
    std::string name;               // file name, as manifest.json and loader states refer to it
    std::vector<uint64_t> starts;   // token offset of each document's BOS
    uint64_t leading_tokens = 0;    // tokens before the first BOS
    uint32_t max_token = 0;
    // Documents per row group of the parquet file the shard was made from (manifest.json), in order;
    // empty for shards made from text, which the loader cuts into row groups of row_group_docs.
    std::vector<uint32_t> row_groups;

    uint64_t documents() const { return starts.size(); }
    uint64_t doc_begin(uint64_t d) const { return starts[d]; }
    uint64_t doc_length(uint64_t d) const {
        return (d + 1 < starts.size() ? starts[d + 1] : file->num_tokens()) - starts[d];
    }
};

struct ShardSetOptions {
    std::string split{};                 // for a directory: "train", "val" or "" (every shard)
    std::optional<int64_t> vocab_size{}; // the tokenizer's; default: the manifest's
    std::optional<int64_t> bos_id{};     // ditto
    std::string tokenizer_sha256{};      // non-empty: the manifest's tokenizer must be this one
    std::string tokenizer_name{};        // the tokenizer's path, for messages
    bool verify_sha256 = false;          // also hash every shard against the manifest
    int threads = 0;                     // 0 = every core
};

class ShardSet {
public:
    // `spec` is a shard file, a glob or a directory (with a manifest.json: its files of `split`;
    // without: its *.bin files whose names contain `split`). Without any manifest, vocab_size and
    // bos_id come from the options, or for version 1 shards default to GPT-2's (50257, BOS 50256 -
    // llm.c and modded-nanogpt shards), which notes() then says. Throws DataError naming the file (and
    // byte offset) for every problem.
    static std::shared_ptr<const ShardSet> open(const std::string& spec, const ShardSetOptions& options = {});

    const std::string& spec() const { return spec_; }
    const std::vector<ShardDocs>& shards() const { return shards_; }
    int64_t vocab_size() const { return vocab_size_; }
    int64_t bos_id() const { return bos_id_; }
    // The manifest that described the shards (the first, if they come from several directories).
    const std::optional<Manifest>& manifest() const { return manifest_; }
    const std::string& manifest_path() const { return manifest_path_; }
    uint64_t tokens() const;
    uint64_t documents() const;
    const std::vector<std::string>& notes() const { return notes_; }
    // sha256 over the shards' names, token and document counts: what a loader state belongs to.
    const std::string& fingerprint() const { return fingerprint_; }

private:
    std::string spec_;
    std::vector<ShardDocs> shards_;
    int64_t vocab_size_ = 0;
    int64_t bos_id_ = 0;
    std::optional<Manifest> manifest_;
    std::string manifest_path_;
    std::vector<std::string> notes_;
    std::string fingerprint_;
};

}  // namespace l3lab::data
