// Text inputs of the data commands: .txt files (one document each) and .jsonl files ({"text": ...} per
// line), named directly, by glob, or by a directory (searched recursively for *.txt and *.jsonl).
#pragma once

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace l3lab::data {

enum class InputKind { Text, Jsonl };

struct InputFile {
    std::string path;
    InputKind kind;
};

// Expands the --input arguments in order: a file as it is, a glob's matches sorted, a directory's
// *.txt/*.jsonl files sorted by path; the same file twice is read once. Throws DataError for a missing
// path, a glob without matches, a directory without inputs or a file that is neither .txt nor .jsonl.
std::vector<InputFile> expand_inputs(const std::vector<std::string>& specs);

struct Document {
    std::string text;  // valid UTF-8, never empty
    std::string file;
    int64_t line = 0;  // 1-based line of a .jsonl document; 0 for a .txt file
};

// Reads the documents of the inputs in order; empty ones are skipped and counted. Throws DataError
// naming the file (and line or byte offset) for an unreadable file, a line that is not a JSON object
// with a string "text", or text that is not valid UTF-8.
class DocumentReader {
public:
    explicit DocumentReader(std::vector<InputFile> files);
    bool next(Document& doc);
    int64_t empty_skipped() const { return empty_skipped_; }
    int64_t bytes_read() const { return bytes_read_; }  // text bytes of the documents returned so far

private:
    bool open_next_file();
    std::vector<InputFile> files_;
    size_t next_file_ = 0;
    const InputFile* current_ = nullptr;
    std::unique_ptr<std::ifstream> jsonl_;
    int64_t line_ = 0;
    int64_t empty_skipped_ = 0;
    int64_t bytes_read_ = 0;
};

}  // namespace l3lab::data
