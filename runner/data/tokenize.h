// `l3lab data tokenize`: text inputs -> BOS-prefixed token shards for train and val + manifest.json.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "runner/data/manifest.h"
#include "runner/data/tokenizer.h"
#include "runner/util/progress.h"

namespace l3lab::data {

struct TokenizeOptions {
    int64_t shard_tokens = 100'000'000;  // a shard is closed before it would exceed this (llm.c's size)
    double val_fraction = 0.05;          // share of documents pinned to validation (split "hash")
    std::string split = "hash";          // "hash" | "nanochat": the last parquet file is validation
    std::string text_column = "text";    // the parquet files' text column
    int64_t max_doc_bytes = 0;           // > 0: cut longer .txt/.jsonl documents into pieces (split_document)
    int threads = 0;                     // 0 = every core
    bool overwrite = false;              // replace a non-empty output directory
    std::string created_by = "l3lab";    // recorded in manifest.json
};

struct TokenizeReport {
    Manifest manifest;
    std::string manifest_path;
    int64_t bytes = 0;  // text bytes tokenized
    double seconds = 0;
    int threads = 1;
};

// Whether a document belongs to the validation split: decided by a hash of its text alone, so the split
// is pinned - it does not change with the inputs' order, other documents, the shard size or how many
// training shards there are.
bool is_validation_document(std::string_view text, double val_fraction);

// The pieces, each of at most `max_bytes` bytes (>= 4), that a document longer than that is cut into:
// at the last paragraph break (a blank line) in the second half of the window, else the last line break,
// else the last space, else the last UTF-8 character boundary. Separators stay with the piece before;
// concatenated, the pieces are the document. nanochat's loader crops a document that does not fit a row
// (the rest of it is never read), so a corpus of long documents trains on their first T tokens only;
// cut into pieces shorter than a row, all of it is read.
std::vector<std::string_view> split_document(std::string_view text, int64_t max_bytes);

// Reads the inputs (see corpus.h), encodes documents in parallel, writes `train_NNNNNN.bin` and
// `val_NNNNNN.bin` (uint16 tokens when the vocabulary fits, else uint32; each document starts with BOS,
// no document is split unless max_doc_bytes asks for it) and manifest.json into a temporary directory beside `output_dir`, then renames
// it into place. Nothing is left behind on error, and an existing output is replaced only with
// `overwrite`. Throws DataError for bad inputs or options. Shows its progress (MB of input read) as
// util::Progress does.
TokenizeReport tokenize_corpus(const Tokenizer& tokenizer, const std::string& tokenizer_path,
                               const std::vector<std::string>& inputs, const std::string& output_dir,
                               const TokenizeOptions& options, const util::ProgressOptions& progress = {});

}  // namespace l3lab::data
