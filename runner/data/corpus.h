// Text inputs of the data commands: .txt files (one document each), .jsonl files ({"text": ...} per
// line) and .parquet files (a string column, `text` unless told otherwise: one document per row, row
// group by row group, as nanochat's base_data/ shards), named directly, by glob, or by a directory
// (searched recursively for *.txt, *.jsonl and *.parquet).
#pragma once

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace l3lab::data {

enum class InputKind { Text, Jsonl, Parquet };

struct InputFile {
    std::string path;
    InputKind kind;
};

// Expands the --input arguments in order: a file as it is, a glob's matches sorted, a directory's
// *.txt/*.jsonl/*.parquet files sorted by path; the same file twice is read once. Throws DataError for a
// missing path, a glob without matches, a directory without inputs or a file of another kind.
std::vector<InputFile> expand_inputs(const std::vector<std::string>& specs);

struct Document {
    std::string text;  // valid UTF-8; never empty, except a parquet row's
    std::string file;
    size_t file_index = 0;          // which of the reader's files
    int64_t line = 0;               // 1-based line of a .jsonl document; 0 otherwise
    int64_t row_group = -1;         // a parquet document's row group and row in it; -1 otherwise
    int64_t row = -1;
    int64_t row_groups_in_file = 0;  // row groups of its parquet file
};

class ParquetTextFile;

// Reads the documents of the inputs in order; empty .txt/.jsonl ones are skipped and counted (a parquet
// row is a document even when empty: nanochat's loader reads it as a lone BOS). Throws DataError naming
// the file (and line, row group and row, or byte offset) for an unreadable or damaged file, a line that
// is not a JSON object with a string "text", a parquet file without the string column `text_column` or
// with a null in it, or text that is not valid UTF-8.
class DocumentReader {
public:
    explicit DocumentReader(std::vector<InputFile> files, std::string text_column = "text");
    ~DocumentReader();
    bool next(Document& doc);
    int64_t empty_skipped() const { return empty_skipped_; }
    int64_t bytes_read() const { return bytes_read_; }  // text bytes of the documents returned so far

private:
    bool open_next_file();
    std::vector<InputFile> files_;
    size_t next_file_ = 0;
    const InputFile* current_ = nullptr;
    std::unique_ptr<std::ifstream> jsonl_;
    std::string text_column_;
    std::unique_ptr<ParquetTextFile> parquet_;
    int64_t row_group_ = -1;
    std::vector<std::string> texts_;  // the current row group's
    size_t next_text_ = 0;
    int64_t line_ = 0;
    int64_t empty_skipped_ = 0;
    int64_t bytes_read_ = 0;
};

}  // namespace l3lab::data
