#include "runner/data/tokenize.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <memory>
#include <thread>

#include "runner/data/corpus.h"
#include "runner/data/errors.h"
#include "runner/data/sha256.h"
#include "runner/data/shard.h"
#include "runner/util/format.h"

namespace fs = std::filesystem;

namespace l3lab::data {

bool is_validation_document(std::string_view text, double val_fraction) {
    uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a, then the splitmix64 finaliser to spread the bits
    for (unsigned char c : text) h = (h ^ c) * 0x100000001b3ull;
    h ^= h >> 30; h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27; h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return static_cast<double>(h >> 11) * 0x1.0p-53 < val_fraction;
}

std::vector<std::string_view> split_document(std::string_view text, int64_t max_bytes) {
    std::vector<std::string_view> pieces;
    const size_t max = static_cast<size_t>(std::max<int64_t>(max_bytes, 4));  // a UTF-8 character fits
    while (text.size() > max) {
        const std::string_view window = text.substr(0, max);
        const size_t half = max / 2;
        size_t cut = 0;  // bytes of the piece: up to and including its separator
        if (size_t at = window.rfind("\n\n"); at != std::string_view::npos && at + 2 > half) cut = at + 2;
        else if (at = window.rfind('\n'); at != std::string_view::npos && at + 1 > half) cut = at + 1;
        else if (at = window.rfind(' '); at != std::string_view::npos && at + 1 > half) cut = at + 1;
        else {
            cut = max;  // back to the start of a character: continuation bytes are 10xxxxxx
            while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
        }
        pieces.push_back(text.substr(0, cut));
        text.remove_prefix(cut);
    }
    if (!text.empty()) pieces.push_back(text);
    return pieces;
}

namespace {

using Clock = std::chrono::steady_clock;

void fsync_path(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ::fsync(fd);
        ::close(fd);
    }
}

// Removes the temporary directory unless released.
struct TempDirGuard {
    std::string path;
    ~TempDirGuard() {
        if (path.empty()) return;
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

// The shards of one split: rolls over to a new file before a document would overflow the current one.
class SplitWriter {
public:
    SplitWriter(std::string dir, std::string split, int version, int64_t shard_tokens)
        : dir_(std::move(dir)), split_(std::move(split)), version_(version), shard_tokens_(shard_tokens) {}

    // Parquet input: a shard per parquet file (and split), recording the file's row groups.
    void begin_source(const std::string& source, int64_t row_groups) {
        finish();
        source_ = source;
        row_groups_.assign(static_cast<size_t>(row_groups), 0);
    }

    void add(const std::vector<int32_t>& doc, int64_t row_group = -1) {
        if (static_cast<int64_t>(doc.size()) > kMaxShardTokens)
            throw DataError(split_, "a document of " + util::group_digits(static_cast<int64_t>(doc.size())) +
                                        " tokens does not fit in a shard");
        if (source_.empty() && writer_ && writer_->num_tokens() > 0 &&
            static_cast<int64_t>(writer_->num_tokens() + doc.size()) > shard_tokens_)
            finish();
        if (!source_.empty() && writer_ && static_cast<int64_t>(writer_->num_tokens() + doc.size()) > kMaxShardTokens)
            throw DataError(source_, "holds more than " + util::group_digits(kMaxShardTokens) +
                                         " tokens of one split, more than a shard can (split the parquet file)");
        if (row_group >= 0) ++row_groups_.at(static_cast<size_t>(row_group));
        if (!writer_) {
            name_ = fmt::format("{}_{:06d}.bin", split_, files_.size());
            writer_ = std::make_unique<ShardWriter>((fs::path(dir_) / name_).string(), version_);
            documents_ = 0;
        }
        writer_->append(doc);
        ++documents_;
    }

    void finish() {
        if (!writer_) return;
        const int64_t tokens = static_cast<int64_t>(writer_->num_tokens());
        writer_->close();
        writer_.reset();
        files_.push_back({name_, split_, tokens, documents_, "", source_, row_groups_});
    }

    std::vector<ManifestFile>& files() { return files_; }

private:
    std::string dir_, split_;
    int version_;
    int64_t shard_tokens_;
    std::unique_ptr<ShardWriter> writer_;
    std::string name_;
    int64_t documents_ = 0;
    std::string source_;               // parquet input: the file the current shard comes from
    std::vector<int64_t> row_groups_;  // and its row groups' documents in this shard
    std::vector<ManifestFile> files_;
};

// Encodes docs[i] into out[i], on `threads` threads; the first failure is rethrown.
void encode_parallel(const Tokenizer& tokenizer, const std::vector<Document>& docs,
                     std::vector<std::vector<int32_t>>& out, int threads) {
    out.resize(docs.size());
    std::atomic<size_t> next{0};
    std::exception_ptr error;
    std::atomic<bool> failed{false};
    auto work = [&] {
        try {
            for (size_t i; !failed && (i = next++) < docs.size();) out[i] = tokenizer.encode(docs[i].text);
        } catch (...) {
            if (!failed.exchange(true)) error = std::current_exception();
        }
    };
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
    if (error) std::rethrow_exception(error);
}

}  // namespace

TokenizeReport tokenize_corpus(const Tokenizer& tokenizer, const std::string& tokenizer_path,
                               const std::vector<std::string>& inputs, const std::string& output_dir,
                               const TokenizeOptions& options, const util::ProgressOptions& progress) {
    if (options.shard_tokens < 1 || options.shard_tokens > kMaxShardTokens)
        throw DataError("--shard-tokens", "must be between 1 and " + util::group_digits(kMaxShardTokens));
    if (!(options.val_fraction >= 0 && options.val_fraction < 1))
        throw DataError("--val-fraction", "must be at least 0 and below 1");
    if (inputs.empty()) throw DataError("--input", "no inputs given");
    std::vector<InputFile> files = expand_inputs(inputs);
    size_t parquet_files = 0;
    for (const auto& f : files) parquet_files += f.kind == InputKind::Parquet;
    const bool parquet = parquet_files > 0;
    if (parquet && parquet_files != files.size())
        throw DataError("--input", "parquet files cannot be mixed with .txt/.jsonl inputs (the parquet files' row groups "
                                   "decide which documents each rank reads); tokenize them separately");
    if (options.max_doc_bytes < 0 || (options.max_doc_bytes > 0 && options.max_doc_bytes < 64))
        throw DataError("--max-doc-bytes", "must be 0 (documents stay whole) or at least 64");
    if (parquet && options.max_doc_bytes > 0)
        throw DataError("--max-doc-bytes", "cuts .txt/.jsonl documents only: a parquet file's row groups count its documents, "
                                           "which the loader's ranks follow");
    if (options.split != "hash" && options.split != "nanochat")
        throw DataError("--split", "'" + options.split + "' is not a split: hash (by --val-fraction) or nanochat (the last parquet file is val)");
    const bool nanochat_split = options.split == "nanochat";
    if (nanochat_split && (!parquet || files.size() < 2))
        throw DataError("--split", "nanochat takes the last of two or more parquet files as validation; the inputs are " +
                                       std::to_string(files.size()) + (parquet ? " parquet file" : " text file") +
                                       (files.size() == 1 ? "" : "s"));

    fs::path out = fs::path(output_dir).lexically_normal();
    if (!out.has_filename()) out = out.parent_path();  // "dir/"
    std::error_code ec;
    if (fs::exists(out, ec)) {
        if (!fs::is_directory(out, ec)) throw DataError(output_dir, "exists and is not a directory");
        if (!fs::is_empty(out, ec) && !options.overwrite)
            throw DataError(output_dir, "exists and is not empty; pass --overwrite to replace it");
    }
    const fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
    const std::string base = out.filename().string();
    fs::create_directories(parent, ec);
    std::string pattern = (parent / ("." + base + ".tmp-XXXXXX")).string();
    if (!mkdtemp(pattern.data())) throw DataError(output_dir, "cannot create a temporary directory beside it");
    TempDirGuard guard{pattern};
    const std::string tmp = pattern;
    const mode_t mask = ::umask(0);  // mkdtemp makes 0700; the output gets the usual 0777 & ~umask
    ::umask(mask);
    ::chmod(tmp.c_str(), 0777 & ~mask);
    const std::string unique = tmp.substr(tmp.size() - 6);

    const int threads = options.threads > 0 ? options.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    const int version = shard_version_for_vocab(tokenizer.vocab_size());
    SplitWriter train(tmp, "train", version, options.shard_tokens), val(tmp, "val", version, options.shard_tokens);

    TokenizeReport report;
    report.threads = threads;
    const auto start = Clock::now();
    int64_t total_tokens = 0, input_bytes = 0;
    for (const auto& f : files) {
        const auto size = fs::file_size(f.path, ec);  // only the progress total: reading reports errors
        if (!ec) input_bytes += static_cast<int64_t>(size);
    }
    util::ProgressOptions shown = progress;
    shown.unit_scale = 1e-6;
    util::Progress meter("tokenizing", input_bytes, "MB", shown);
    DocumentReader reader(files, options.text_column);
    std::vector<Document> chunk;
    std::vector<char> chunk_val;  // the split of each entry, decided on the whole document
    int64_t documents_cut = 0;
    size_t source = SIZE_MAX;  // parquet input: the file whose shards are open
    std::vector<std::vector<int32_t>> encoded;
    const int32_t bos = tokenizer.bos_id();
    for (bool more = true; more;) {
        // A chunk of about 8 MB of text: big enough to keep every thread busy, small enough for memory.
        chunk.clear();
        chunk_val.clear();
        size_t chunk_bytes = 0;
        while (chunk_bytes < (8u << 20)) {
            Document d;
            if (!(more = reader.next(d))) break;
            chunk_bytes += d.text.size();
            const bool is_val = nanochat_split ? d.file_index + 1 == files.size()
                                               : is_validation_document(d.text, options.val_fraction);
            if (options.max_doc_bytes > 0 && static_cast<int64_t>(d.text.size()) > options.max_doc_bytes) {
                ++documents_cut;
                const std::string text = std::move(d.text);  // so that each piece copies only its own bytes
                for (std::string_view piece : split_document(text, options.max_doc_bytes)) {
                    Document p = d;  // the pieces keep the document's file and line
                    p.text = std::string(piece);
                    chunk.push_back(std::move(p));
                    chunk_val.push_back(is_val);
                }
                continue;
            }
            chunk.push_back(std::move(d));
            chunk_val.push_back(is_val);
        }
        encode_parallel(tokenizer, chunk, encoded, threads);
        for (size_t i = 0; i < chunk.size(); ++i) {
            const Document& d = chunk[i];
            encoded[i].insert(encoded[i].begin(), bos);
            total_tokens += static_cast<int64_t>(encoded[i].size());
            if (parquet && d.file_index != source) {
                source = d.file_index;
                train.begin_source(d.file, d.row_groups_in_file);
                val.begin_source(d.file, d.row_groups_in_file);
            }
            (chunk_val[i] ? val : train).add(encoded[i], d.row_group);
        }
        meter.set(static_cast<int64_t>(reader.bytes_read()));  // text bytes: below the file bytes of .jsonl
    }
    meter.set(input_bytes);
    meter.finish();
    train.finish();
    val.finish();
    if (train.files().empty() && val.files().empty())
        throw DataError(inputs.front(), "no documents in the inputs" +
                                            (reader.empty_skipped() ? " (" + util::group_digits(reader.empty_skipped()) + " empty ones skipped)"
                                                                    : std::string()));

    Manifest& m = report.manifest;
    m.created_by = options.created_by;
    m.tokenizer_file = tokenizer_path;
    m.tokenizer_sha256 = tokenizer.sha256();
    m.vocab_size = tokenizer.vocab_size();
    m.bos_id = bos;
    m.shard_version = version;
    m.shard_tokens = options.shard_tokens;
    m.val_fraction = nanochat_split ? 0.0 : options.val_fraction;
    m.split = options.split;
    m.inputs = inputs;
    m.empty_documents_skipped = reader.empty_skipped();
    m.max_doc_bytes = options.max_doc_bytes;
    m.documents_cut = documents_cut;
    for (auto* split : {&train, &val})
        for (auto& f : split->files()) {
            f.sha256 = sha256_file((fs::path(tmp) / f.file).string());
            m.files.push_back(f);
        }
    {
        const std::string path = (fs::path(tmp) / kManifestName).string();
        std::ofstream o(path, std::ios::binary);
        o << m.to_json();
        o.close();
        if (!o) throw DataError(path, "write failed");
        fsync_path(path);
    }
    fsync_path(tmp);

    // Into place: an existing output moves aside first and goes only once the new one is there.
    std::string old;
    if (fs::exists(out, ec)) {
        old = (parent / ("." + base + ".old-" + unique)).string();
        fs::rename(out, old, ec);
        if (ec) throw DataError(output_dir, "cannot move the existing directory aside: " + ec.message());
    }
    fs::rename(tmp, out, ec);
    if (ec) {
        if (!old.empty()) fs::rename(old, out, ec);
        throw DataError(output_dir, "cannot move the new shards into place: " + ec.message());
    }
    guard.path = old;  // removes the replaced directory, if any
    fsync_path(parent.string());

    report.manifest_path = (out / kManifestName).string();
    report.bytes = reader.bytes_read();
    report.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    return report;
}

}  // namespace l3lab::data
