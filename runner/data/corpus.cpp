#include "runner/data/corpus.h"

#include <glob.h>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "runner/data/errors.h"
#include "runner/data/parquet.h"
#include "runner/data/utf8.h"

namespace fs = std::filesystem;

namespace l3lab::data {

namespace {

bool has_suffix(const std::string& s, std::string_view suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::optional<InputKind> kind_of(const std::string& path) {
    if (has_suffix(path, ".txt")) return InputKind::Text;
    if (has_suffix(path, ".jsonl")) return InputKind::Jsonl;
    if (has_suffix(path, ".parquet")) return InputKind::Parquet;
    return std::nullopt;
}

bool is_glob(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

void add_directory(const std::string& dir, std::vector<std::string>& out) {
    std::vector<std::string> found;
    std::error_code ec;
    for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        if (it->is_regular_file() && kind_of(it->path().string())) found.push_back(it->path().string());
    }
    if (ec) throw DataError(dir, "cannot list the directory: " + ec.message());
    if (found.empty()) throw DataError(dir, "the directory has no .txt, .jsonl or .parquet files");
    std::sort(found.begin(), found.end());
    out.insert(out.end(), found.begin(), found.end());
}

void add_path(const std::string& path, bool explicit_file, std::vector<std::string>& out) {
    std::error_code ec;
    auto status = fs::status(path, ec);
    if (!fs::exists(status)) throw DataError(path, "no such file or directory");
    if (fs::is_directory(status)) return add_directory(path, out);
    if (!kind_of(path)) {
        if (explicit_file)
            throw DataError(path, "not an input: expected a .txt file (one document), a .jsonl file or a .parquet file");
        return;  // a glob may match other files too; skip them
    }
    out.push_back(path);
}

}  // namespace

std::vector<InputFile> expand_inputs(const std::vector<std::string>& specs) {
    std::vector<std::string> paths;
    for (const auto& spec : specs) {
        if (!is_glob(spec) || fs::exists(spec)) {
            add_path(spec, true, paths);
            continue;
        }
        glob_t g{};
        int rc = glob(spec.c_str(), 0, nullptr, &g);
        std::vector<std::string> matches(g.gl_pathv, g.gl_pathv + (rc == 0 ? g.gl_pathc : 0));
        globfree(&g);
        if (matches.empty()) throw DataError(spec, "no file matches this pattern");
        std::sort(matches.begin(), matches.end());
        const size_t before = paths.size();
        for (const auto& m : matches) add_path(m, false, paths);
        if (paths.size() == before) throw DataError(spec, "the pattern matches no .txt, .jsonl or .parquet file");
    }
    std::vector<InputFile> out;
    std::set<std::string> seen;
    for (const auto& p : paths) {
        std::error_code ec;
        auto key = fs::weakly_canonical(p, ec).string();
        if (!seen.insert(ec ? p : key).second) continue;
        out.push_back({p, *kind_of(p)});
    }
    return out;
}

DocumentReader::DocumentReader(std::vector<InputFile> files, std::string text_column)
    : files_(std::move(files)), text_column_(std::move(text_column)) {}

DocumentReader::~DocumentReader() = default;

bool DocumentReader::open_next_file() {
    jsonl_.reset();
    parquet_.reset();
    current_ = nullptr;
    if (next_file_ >= files_.size()) return false;
    current_ = &files_[next_file_++];
    line_ = 0;
    if (current_->kind == InputKind::Parquet) {
        parquet_ = std::make_unique<ParquetTextFile>(current_->path, text_column_);
        row_group_ = -1;
        texts_.clear();
        next_text_ = 0;
    }
    return true;
}

bool DocumentReader::next(Document& doc) {
    for (;;) {
        if (!current_ && !open_next_file()) return false;
        const InputFile& f = *current_;
        if (f.kind == InputKind::Parquet) {
            // Every row is a document, an empty text too (nanochat's loader makes it a lone BOS).
            while (next_text_ == texts_.size()) {
                if (++row_group_ >= parquet_->row_groups()) break;
                texts_ = parquet_->read_row_group(static_cast<int>(row_group_));
                next_text_ = 0;
            }
            if (row_group_ >= parquet_->row_groups()) {
                current_ = nullptr;
                continue;
            }
            doc.text = std::move(texts_[next_text_]);
            doc.file = f.path;
            doc.file_index = next_file_ - 1;
            doc.line = 0;
            doc.row_group = row_group_;
            doc.row_groups_in_file = parquet_->row_groups();
            doc.row = static_cast<int64_t>(next_text_++);
            bytes_read_ += static_cast<int64_t>(doc.text.size());
            return true;
        }
        if (f.kind == InputKind::Text) {
            std::ifstream in(f.path, std::ios::binary);
            if (!in) throw DataError(f.path, "cannot open the file");
            std::ostringstream text;
            text << in.rdbuf();
            if (in.bad()) throw DataError(f.path, "read error");
            current_ = nullptr;
            doc.text = std::move(text).str();
            doc.file = f.path;
            doc.file_index = next_file_ - 1;
            doc.line = 0;
            doc.row_group = doc.row = -1;
            doc.row_groups_in_file = 0;
            if (size_t bad = first_invalid_utf8(doc.text); bad != std::string::npos)
                throw DataError::at_offset(f.path, bad, "not valid UTF-8");
            if (doc.text.empty()) {
                ++empty_skipped_;
                continue;
            }
            bytes_read_ += static_cast<int64_t>(doc.text.size());
            return true;
        }
        if (!jsonl_) {
            jsonl_ = std::make_unique<std::ifstream>(f.path, std::ios::binary);
            if (!*jsonl_) throw DataError(f.path, "cannot open the file");
        }
        std::string line;
        if (!std::getline(*jsonl_, line)) {
            if (jsonl_->bad()) throw DataError(f.path, static_cast<int>(line_), "read error");
            current_ = nullptr;
            continue;
        }
        ++line_;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank line
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::parse_error& e) {
            std::string what = e.what();
            if (auto p = what.find("syntax error"); p != std::string::npos) what = what.substr(p);
            throw DataError(f.path, static_cast<int>(line_), "not a JSON line: " + what);
        }
        if (!j.is_object() || !j.contains("text"))
            throw DataError(f.path, static_cast<int>(line_), "expected a JSON object with a \"text\" field");
        if (!j["text"].is_string())
            throw DataError(f.path, static_cast<int>(line_), "\"text\" must be a string, not " + std::string(j["text"].type_name()));
        doc.text = j["text"].get<std::string>();
        doc.file = f.path;
        doc.file_index = next_file_ - 1;
        doc.line = line_;
        doc.row_group = doc.row = -1;
        doc.row_groups_in_file = 0;
        if (doc.text.empty()) {
            ++empty_skipped_;
            continue;
        }
        bytes_read_ += static_cast<int64_t>(doc.text.size());
        return true;
    }
}

}  // namespace l3lab::data
