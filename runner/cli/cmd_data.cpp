// `l3lab data`: train a tokenizer, tokenize a corpus into shards, inspect shards, preview batches.
#include <boost/program_options.hpp>

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <unistd.h>

#include "runner/cli/commands.h"
#include "runner/config/errors.h"
#include "runner/data/bpb.h"
#include "runner/data/bpe.h"
#include "runner/data/corpus.h"
#include "runner/data/errors.h"
#include "runner/data/loader.h"
#include "runner/data/shard_set.h"
#include "runner/data/tokenize.h"
#include "runner/data/tokenizer.h"
#include "runner/util/format.h"
#include "runner/version.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace l3lab::cli {

namespace {

using util::group_digits;
using Clock = std::chrono::steady_clock;

struct Subcommand {
    const char* name;
    const char* usage;
    const char* summary;
    const char* about;
    void (*options)(po::options_description&);
    int (*run)(const po::variables_map& vm, std::ostream& out, std::ostream& err);
};

int hardware_threads() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

// The first `max_chars` characters of `s`, never cutting a UTF-8 sequence.
std::string clip(const std::string& s, size_t max_chars) {
    size_t chars = 0;
    for (size_t i = 0; i < s.size(); ++i) {
        if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80 && chars++ == max_chars) return s.substr(0, i) + " [...]";
    }
    return s;
}

// Writes `bytes` to `path` through a temporary name in the same directory.
void write_atomically(const std::string& path, const std::string& bytes) {
    fs::path target(path);
    if (target.has_parent_path()) fs::create_directories(target.parent_path());
    const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
    {
        std::ofstream o(tmp, std::ios::binary);
        o.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        o.close();
        if (!o) {
            std::error_code ec;
            fs::remove(tmp, ec);
            throw data::DataError(path, "cannot write the file");
        }
    }
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec) {
        fs::remove(tmp, ec);
        throw data::DataError(path, "cannot move the new file into place: " + ec.message());
    }
}

// ---------------------------------------------------------------------------------------------------
// train-tokenizer

void train_tokenizer_options(po::options_description& o) {
    o.add_options()
        ("input", po::value<std::vector<std::string>>()->multitoken()->required(), ".txt/.jsonl/.parquet files, directories or globs")
        ("text-column", po::value<std::string>()->default_value("text"), "the parquet files' text column")
        ("vocab-size", po::value<int>()->default_value(32768), "vocabulary size, special and byte tokens included")
        ("output", po::value<std::string>()->required(),
         "where to write: a directory for bpe (tokenizer.pkl + tokenizer.tiktoken, as nanochat's tokenizer/), a file for sentencepiece")
        ("type", po::value<std::string>()->default_value("bpe"), "bpe (nanochat's GPT-4-style BPE, read by tiktoken) or sentencepiece")
        ("max-chars", po::value<int64_t>()->default_value(2'000'000'000), "stop reading after this many characters")
        ("doc-cap", po::value<int64_t>()->default_value(10'000), "characters used of each document (0 = all)")
        ("threads", po::value<int>()->default_value(0), "threads (0 = every core)");
}

// The tokenizer `train-tokenizer --type` makes: nanochat's BPE (a tokenizer/ directory) or SentencePiece.
struct TrainedTokenizer {
    std::unique_ptr<data::Tokenizer> tokenizer;
    std::vector<std::pair<std::string, std::string>> files;  // path, bytes
};

TrainedTokenizer train_bpe_tokenizer(const std::function<bool(std::string&)>& next, const data::TokenizerTrainOptions& o,
                                     const std::string& output, data::TokenizerTrainReport& report) {
    data::BpeTrainOptions options;
    options.vocab_size = o.vocab_size;
    options.max_chars = o.max_chars;
    options.doc_cap = o.doc_cap;
    options.threads = o.threads;
    const auto encoding = data::train_bpe(next, options, &report);
    TrainedTokenizer t;
    const fs::path dir(output);
    std::string pkl = data::write_tiktoken_pickle(encoding);
    t.tokenizer = data::tokenizer_from_bytes(pkl, (dir / data::kBpeTokenizerFile).string());
    t.files.emplace_back((dir / data::kBpeTokenizerFile).string(), std::move(pkl));
    t.files.emplace_back((dir / "tokenizer.tiktoken").string(), data::write_tiktoken_ranks(encoding));
    return t;
}

int run_train_tokenizer(const po::variables_map& vm, std::ostream& out, std::ostream&) {
    const auto inputs = vm["input"].as<std::vector<std::string>>();
    const std::string output = vm["output"].as<std::string>();
    const std::string type = vm["type"].as<std::string>();
    if (type != "bpe" && type != "sentencepiece")
        throw data::DataError("--type", "'" + type + "' is not a tokenizer type: bpe (nanochat's, the default) or sentencepiece");
    const bool bpe = type == "bpe";
    data::TokenizerTrainOptions options;
    options.vocab_size = vm["vocab-size"].as<int>();
    options.max_chars = vm["max-chars"].as<int64_t>();
    options.doc_cap = vm["doc-cap"].as<int64_t>();
    options.threads = vm["threads"].as<int>() > 0 ? vm["threads"].as<int>() : hardware_threads();
    if (bpe && fs::exists(output) && !fs::is_directory(output))
        throw data::DataError(output, "exists and is not a directory; --type bpe writes nanochat's tokenizer directory "
                                      "(tokenizer.pkl and tokenizer.tiktoken)");
    if (!bpe && fs::is_directory(output)) throw data::DataError(output, "is a directory; give the tokenizer file to write");
    auto files = data::expand_inputs(inputs);
    data::DocumentReader reader(files, vm["text-column"].as<std::string>());
    data::Document doc;
    auto next = [&](std::string& text) {
        if (!reader.next(doc)) return false;
        text = std::move(doc.text);
        return true;
    };
    data::TokenizerTrainReport report;
    TrainedTokenizer trained;
    if (bpe) {
        trained = train_bpe_tokenizer(next, options, output, report);
    } else {
        std::string model = data::train_tokenizer(next, options, &report);
        trained.tokenizer = data::tokenizer_from_bytes(model, output);
        trained.files.emplace_back(output, std::move(model));
    }
    const auto& tokenizer = trained.tokenizer;
    const std::string check = "Hello world! Numbers: 123, 4567. Unicode: \xE4\xBD\xA0\xE5\xA5\xBD\xE4\xB8\x96\xE7\x95\x8C \xF0\x9F\x8C\x8D\n\tcode()  ";
    auto ids = tokenizer->encode(check);
    if (tokenizer->decode(ids) != check) throw std::runtime_error("the new tokenizer does not reproduce its check text");
    for (const auto& [path, bytes] : trained.files) write_atomically(path, bytes);

    out << fmt::format("read {} documents ({} characters used, at most {} of each) from {} input file{}\n",
                       group_digits(report.documents), group_digits(report.chars), group_digits(options.doc_cap),
                       files.size(), files.size() == 1 ? "" : "s");
    out << fmt::format("trained a {}-token {} vocabulary in {:.1f} s on {} thread{}\n", group_digits(tokenizer->vocab_size()),
                       bpe ? "BPE (nanochat's)" : "SentencePiece BPE", report.seconds, options.threads,
                       options.threads == 1 ? "" : "s");
    std::string specials;
    for (const auto& s : tokenizer->special_tokens())
        if (auto id = tokenizer->special_id(s); id && s != "<unk>") specials += fmt::format(" {}={}", s, *id);
    out << "special tokens:" << specials << "\n";
    out << fmt::format("check: {} bytes -> {} tokens -> the same bytes\n", check.size(), ids.size());
    for (const auto& [path, bytes] : trained.files)
        out << fmt::format("wrote {} ({} bytes{})\n", path, group_digits(static_cast<int64_t>(bytes.size())),
                           path == trained.files.front().first ? ", sha256 " + tokenizer->sha256() : "");
    return 0;
}

// ---------------------------------------------------------------------------------------------------
// tokenize

void tokenize_options(po::options_description& o) {
    o.add_options()
        ("tokenizer", po::value<std::string>()->required(),
         "tokenizer: nanochat's tokenizer.pkl or its directory, or a SentencePiece model (from train-tokenizer)")
        ("input", po::value<std::vector<std::string>>()->multitoken()->required(), ".txt/.jsonl/.parquet files, directories or globs")
        ("text-column", po::value<std::string>()->default_value("text"), "the parquet files' text column")
        ("output", po::value<std::string>()->required(), "directory for the shards and manifest.json")
        ("split", po::value<std::string>()->default_value("hash"),
         "hash: documents pinned to val by a hash of their text (--val-fraction); nanochat: the last parquet file is val")
        ("shard-tokens", po::value<int64_t>()->default_value(100'000'000), "tokens per shard at most (a longer document gets a shard of its own)")
        ("val-fraction", po::value<double>()->default_value(0.05), "share of documents pinned to validation by a hash of their text")
        ("max-doc-bytes", po::value<int64_t>()->default_value(0),
         "cut .txt/.jsonl documents longer than this many bytes into pieces at paragraph or line breaks, each piece "
         "a document of its own with its BOS, so that the loader does not crop them (0 = keep documents whole)")
        ("threads", po::value<int>()->default_value(0), "encoding threads (0 = every core)")
        ("overwrite", "replace the output directory if it is not empty");
}

int run_tokenize(const po::variables_map& vm, std::ostream& out, std::ostream& err) {
    const std::string tok_path = vm["tokenizer"].as<std::string>();
    auto tokenizer = data::load_tokenizer(tok_path);
    data::TokenizeOptions options;
    options.shard_tokens = vm["shard-tokens"].as<int64_t>();
    options.val_fraction = vm["val-fraction"].as<double>();
    options.split = vm["split"].as<std::string>();
    options.text_column = vm["text-column"].as<std::string>();
    options.max_doc_bytes = vm["max-doc-bytes"].as<int64_t>();
    options.threads = vm["threads"].as<int>() > 0 ? vm["threads"].as<int>() : hardware_threads();
    options.overwrite = vm.count("overwrite") > 0;
    options.created_by = std::string("l3lab ") + version::kVersion;
    const std::string output = vm["output"].as<std::string>();
    const int version = data::shard_version_for_vocab(tokenizer->vocab_size());
    const auto inputs = vm["input"].as<std::vector<std::string>>();
    const size_t files = data::expand_inputs(inputs).size();  // bad inputs fail before anything is printed
    out << fmt::format("tokenizing {} input file{} with {} (vocabulary {}, {} shards) on {} thread{}\n", files,
                       files == 1 ? "" : "s", tok_path, group_digits(tokenizer->vocab_size()),
                       version == 1 ? "uint16" : "uint32", options.threads, options.threads == 1 ? "" : "s");
    out.flush();
    util::ProgressOptions progress;
    progress.plain_line = [&err](const std::string& line) { err << line << std::endl; };
    auto report = data::tokenize_corpus(*tokenizer, tok_path, inputs, output, options, progress);
    const auto& m = report.manifest;
    for (const char* split : {"train", "val"}) {
        int64_t files = 0;
        for (const auto& f : m.files) files += f.split == split;
        out << fmt::format("  {:<5} {:>12} documents {:>15} tokens {:>5} shard{}\n", split, group_digits(m.documents(split)),
                           group_digits(m.tokens(split)), files, files == 1 ? "" : "s");
    }
    if (m.documents_cut)
        out << fmt::format("  cut {} documents longer than {} bytes into pieces (each piece a document above)\n",
                           group_digits(m.documents_cut), group_digits(m.max_doc_bytes));
    if (m.empty_documents_skipped) out << fmt::format("  skipped {} empty documents\n", group_digits(m.empty_documents_skipped));
    const int64_t tokens = m.tokens("");
    out << fmt::format("{:.1f} MB of text -> {} tokens in {:.2f} s: {} tokens/s ({:.2f} bytes/token)\n", report.bytes / 1e6,
                       group_digits(tokens), report.seconds,
                       group_digits(static_cast<int64_t>(tokens / std::max(report.seconds, 1e-9))),
                       tokens ? double(report.bytes) / double(tokens - m.documents("")) : 0.0);
    if (m.documents("val") == 0) err << "warning: no document was picked for validation; raise --val-fraction\n";
    if (m.documents("train") == 0) err << "warning: no document was picked for training; lower --val-fraction\n";
    out << "wrote " << report.manifest_path << "\n";
    return 0;
}

// ---------------------------------------------------------------------------------------------------
// inspect

void inspect_options(po::options_description& o) {
    o.add_options()
        ("shards", po::value<std::string>()->required(), "a shard file, a glob or a directory")
        ("tokenizer", po::value<std::string>(), "tokenizer to decode with (default: the manifest's, if it is there)")
        ("docs", po::value<int>()->default_value(3), "documents to show")
        ("chars", po::value<int>()->default_value(600), "characters to show of each document")
        ("no-verify", "skip checking sha256 against manifest.json");
}

// The manifest's tokenizer file when it is present and is the one that made the shards.
std::unique_ptr<data::Tokenizer> manifest_tokenizer(const data::ShardSet& set) {
    if (!set.manifest()) return nullptr;
    const auto& path = set.manifest()->tokenizer_file;
    std::error_code ec;
    if (path.empty() || !fs::is_regular_file(path, ec)) return nullptr;
    try {
        auto tok = data::load_tokenizer(path);
        if (tok->sha256() == set.manifest()->tokenizer_sha256) return tok;
    } catch (const config::ConfigException&) {
    }
    return nullptr;
}

int run_inspect(const po::variables_map& vm, std::ostream& out, std::ostream&) {
    const std::string spec = vm["shards"].as<std::string>();
    std::unique_ptr<data::Tokenizer> tokenizer;
    data::ShardSetOptions so;
    so.verify_sha256 = vm.count("no-verify") == 0;
    if (vm.count("tokenizer")) {
        so.tokenizer_name = vm["tokenizer"].as<std::string>();
        tokenizer = data::load_tokenizer(so.tokenizer_name);
        so.tokenizer_sha256 = tokenizer->sha256();
        so.vocab_size = tokenizer->vocab_size();
        so.bos_id = tokenizer->bos_id();
    }
    auto set = data::ShardSet::open(spec, so);
    if (!tokenizer) tokenizer = manifest_tokenizer(*set);

    for (const auto& note : set->notes()) out << "note: " << note << "\n";
    if (set->manifest()) {
        const auto& m = *set->manifest();
        out << fmt::format("manifest   {}: tokenizer {} (sha256 {}...), vocabulary {}, BOS {}{}\n", set->manifest_path(),
                           m.tokenizer_file, m.tokenizer_sha256.substr(0, 12), group_digits(m.vocab_size), m.bos_id,
                           so.verify_sha256 ? ", every shard's sha256 checked" : "");
    }
    for (const auto& s : set->shards()) {
        const auto& f = *s.file;
        out << fmt::format("{}\n", f.path());
        out << fmt::format("  header     magic {}, version {} ({} tokens), {} tokens, {} bytes\n", data::kShardMagic,
                           f.version(), f.version() == 1 ? "uint16" : "uint32", group_digits(f.num_tokens()), group_digits(f.file_bytes()));
        uint64_t min_len = UINT64_MAX, max_len = 0;
        for (uint64_t d = 0; d < s.documents(); ++d) {
            min_len = std::min(min_len, s.doc_length(d));
            max_len = std::max(max_len, s.doc_length(d));
        }
        if (s.documents())
            out << fmt::format("  documents  {} (tokens each: min {}, mean {:.1f}, max {})\n", group_digits(s.documents()),
                               group_digits(min_len), double(f.num_tokens() - s.leading_tokens) / double(s.documents()),
                               group_digits(max_len));
        else
            out << "  documents  0\n";
        if (s.leading_tokens)
            out << fmt::format("  before the first BOS: {} tokens (the end of a document begun in the previous shard; not read)\n",
                               group_digits(s.leading_tokens));
        out << fmt::format("  token ids  max {} (vocabulary {}, BOS {})\n", s.max_token, group_digits(set->vocab_size()),
                           set->bos_id());
        if (set->manifest())
            if (const auto* e = set->manifest()->find(s.name)) out << fmt::format("  split      {}\n", e->split);
    }

    const auto& first = set->shards().front();
    const int docs = std::min<int>(vm["docs"].as<int>(), static_cast<int>(std::min<uint64_t>(first.documents(), INT32_MAX)));
    if (docs > 0 && !tokenizer)
        out << "\n(no tokenizer to decode with: pass --tokenizer; showing token ids)\n";
    for (int d = 0; d < docs; ++d) {
        const uint64_t begin = first.doc_begin(static_cast<uint64_t>(d)), len = first.doc_length(static_cast<uint64_t>(d));
        out << fmt::format("\n--- {} document {} (tokens {}..{}, {} tokens) ---\n", first.name, d, group_digits(begin),
                           group_digits(begin + len - 1), group_digits(len));
        std::vector<int64_t> wide(len);
        first.file->copy(begin, len, wide.data());
        if (tokenizer) {
            std::vector<int32_t> ids(wide.begin(), wide.end());
            out << clip(tokenizer->decode(ids), static_cast<size_t>(std::max(0, vm["chars"].as<int>()))) << "\n";
        } else {
            std::string ids;
            for (size_t i = 0; i < std::min<size_t>(wide.size(), 64); ++i) ids += (i ? " " : "") + std::to_string(wide[i]);
            out << ids << (wide.size() > 64 ? " ..." : "") << "\n";
        }
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------------
// batches

void batches_options(po::options_description& o) {
    o.add_options()
        ("shards", po::value<std::string>()->required(), "a shard file, a glob or a directory")
        ("split", po::value<std::string>()->default_value("train"), "split of a directory: train, val, or all")
        ("tokenizer", po::value<std::string>(), "tokenizer (default: the manifest's); needed for --show and the baseline")
        ("batch-size", po::value<int>()->default_value(8), "rows per batch (B)")
        ("sequence-len", po::value<int>()->default_value(256), "tokens per row (T)")
        ("batches", po::value<int64_t>()->default_value(100), "batches to make")
        ("rank", po::value<int>()->default_value(0), "this rank")
        ("world-size", po::value<int>()->default_value(1), "ranks")
        ("buffer-size", po::value<int>()->default_value(1000), "documents to choose from")
        ("row-group-docs", po::value<int>()->default_value(1024), "documents per row group")
        ("shuffle", "permute row groups every epoch (from --seed)")
        ("seed", po::value<uint64_t>()->default_value(42), "seed for --shuffle")
        ("state-in", po::value<std::string>(), "continue from a saved loader state (JSON)")
        ("state-out", po::value<std::string>(), "save the loader state after the last batch (JSON)")
        ("show", po::value<int>()->default_value(0), "rows of the first batch to print decoded");
}

uint64_t fnv1a(const std::vector<int64_t>& v, uint64_t h = 0xcbf29ce484222325ull) {
    for (int64_t x : v)
        for (int b = 0; b < 8; ++b) h = (h ^ ((static_cast<uint64_t>(x) >> (8 * b)) & 0xff)) * 0x100000001b3ull;
    return h;
}

int run_batches(const po::variables_map& vm, std::ostream& out, std::ostream&) {
    const std::string spec = vm["shards"].as<std::string>();
    std::string split = vm["split"].as<std::string>();
    if (split != "train" && split != "val" && split != "all") throw UsageError("--split must be train, val or all");
    if (split == "all") split.clear();
    data::ShardSetOptions so;
    so.split = split;
    std::unique_ptr<data::Tokenizer> tokenizer;
    if (vm.count("tokenizer")) {
        so.tokenizer_name = vm["tokenizer"].as<std::string>();
        tokenizer = data::load_tokenizer(so.tokenizer_name);
        so.tokenizer_sha256 = tokenizer->sha256();
        so.vocab_size = tokenizer->vocab_size();
        so.bos_id = tokenizer->bos_id();
    }
    auto set = data::ShardSet::open(spec, so);
    if (!tokenizer) tokenizer = manifest_tokenizer(*set);
    for (const auto& note : set->notes()) out << "note: " << note << "\n";

    data::LoaderOptions lo;
    lo.batch_size = vm["batch-size"].as<int>();
    lo.sequence_len = vm["sequence-len"].as<int>();
    lo.rank = vm["rank"].as<int>();
    lo.world_size = vm["world-size"].as<int>();
    lo.buffer_size = vm["buffer-size"].as<int>();
    lo.row_group_docs = vm["row-group-docs"].as<int>();
    lo.shuffle = vm.count("shuffle") > 0;
    lo.seed = vm["seed"].as<uint64_t>();
    const int64_t n = vm["batches"].as<int64_t>();
    if (n < 1) throw UsageError("--batches must be at least 1");
    data::BestFitLoader base(set, lo);
    if (vm.count("state-in")) {
        const std::string path = vm["state-in"].as<std::string>();
        std::ifstream in(path, std::ios::binary);
        if (!in) throw data::DataError(path, "cannot open the loader state");
        std::ostringstream text;
        text << in.rdbuf();
        base.restore(data::LoaderState::from_json(text.str(), path));
    }
    const auto start_state = base.state();
    out << fmt::format("{}: {} shard{}, {} documents, {} tokens; rank {} of {}, B={} T={}, from batch {} (epoch {})\n", spec,
                       set->shards().size(), set->shards().size() == 1 ? "" : "s", group_digits(set->documents()),
                       group_digits(set->tokens()), lo.rank, lo.world_size, lo.batch_size, lo.sequence_len,
                       group_digits(start_state.batches), start_state.last_epoch);

    // Unigram baseline: each target costs -ln p(token) with p from the training split's token counts.
    std::vector<double> unigram_nats;
    std::string baseline_source;
    if (tokenizer) {
        std::shared_ptr<const data::ShardSet> counts_from = set;
        if (fs::is_directory(spec) && set->manifest() && split != "train") {
            data::ShardSetOptions train = so;
            train.split = "train";
            counts_from = data::ShardSet::open(spec, train);
        }
        std::vector<double> counts(static_cast<size_t>(set->vocab_size()), 1.0);  // add-one smoothing
        double total = static_cast<double>(counts.size());
        for (const auto& s : counts_from->shards())
            for (uint64_t i = s.leading_tokens; i < s.file->num_tokens(); ++i) counts[s.file->token(i)] += 1, total += 1;
        unigram_nats.resize(counts.size());
        for (size_t t = 0; t < counts.size(); ++t) unigram_nats[t] = -std::log(counts[t] / total);
        baseline_source = counts_from == set ? "these shards" : "the train split";
    }

    data::PrefetchingLoader loader(std::move(base));
    data::Batch batch;
    data::BpbSums sums;
    std::vector<float> losses;
    uint64_t last_checksum = 0;
    const auto t0 = Clock::now();
    for (int64_t b = 0; b < n; ++b) {
        loader.next(batch);
        last_checksum = fnv1a(batch.targets, fnv1a(batch.inputs));
        if (!unigram_nats.empty()) {
            losses.resize(batch.targets.size());
            for (size_t i = 0; i < losses.size(); ++i) losses[i] = static_cast<float>(unigram_nats[static_cast<size_t>(batch.targets[i])]);
            data::accumulate_bpb(losses, batch.targets, tokenizer->token_bytes(), sums);
        }
        if (b == 0 && tokenizer) {
            const int rows = std::min(vm["show"].as<int>(), batch.batch_size);
            for (int r = 0; r < rows; ++r) {
                std::vector<int32_t> ids(batch.inputs.begin() + int64_t(r) * batch.sequence_len,
                                         batch.inputs.begin() + int64_t(r + 1) * batch.sequence_len);
                ids.push_back(static_cast<int32_t>(batch.targets[size_t(r + 1) * size_t(batch.sequence_len) - 1]));
                out << fmt::format("--- row {} of the first batch ---\n{}\n", r, clip(tokenizer->decode(ids), 2000));
            }
        }
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    const auto state = loader.state();
    const int64_t made = state.batches - start_state.batches;
    out << fmt::format("made {} batches ({} tokens) in {:.3f} s: {} tokens/s\n", group_digits(made),
                       group_digits(made * lo.batch_size * lo.sequence_len), seconds,
                       group_digits(static_cast<int64_t>(double(made * lo.batch_size * lo.sequence_len) / std::max(seconds, 1e-9))));
    out << fmt::format("epoch {} after the last batch; cropped {:.2f}% of the tokens read ({} of {})\n", batch.epoch,
                       100.0 * state.cropped_fraction(), group_digits(state.cropped), group_digits(state.tokens + state.cropped));
    out << fmt::format("last batch checksum {:016x}\n", last_checksum);
    if (!unigram_nats.empty())
        out << fmt::format("unigram baseline: {:.4f} bits per byte on these batches' targets ({} bytes; token "
                           "frequencies of {})\n", data::bits_per_byte(sums), group_digits(sums.bytes), baseline_source);
    if (vm.count("state-out")) {
        write_atomically(vm["state-out"].as<std::string>(), state.to_json() + "\n");
        out << "wrote the loader state to " << vm["state-out"].as<std::string>() << "\n";
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------------

const std::vector<Subcommand>& subcommands() {
    static const std::vector<Subcommand> list = {
        {"train-tokenizer", "--input PATH... --output TOK [--vocab-size N] [--type bpe|sentencepiece]",
         "train nanochat's BPE tokenizer (or a SentencePiece one) on text",
         "Trains a tokenizer on .txt files (one document each) and .jsonl files ({\"text\": ...} per line), given\n"
         "as files, directories or globs. --type bpe (the default) learns nanochat's GPT-4-style byte-level BPE\n"
         "with the merges rustbpe makes and writes nanochat's tokenizer directory: tokenizer.pkl (a pickled\n"
         "tiktoken Encoding that nanochat loads) and tokenizer.tiktoken (the ranks). The vocabulary counts the\n"
         "256 byte tokens and the reference's 9 special tokens (<|bos|> and the chat markers), which come last.\n"
         "--type sentencepiece writes a byte-fallback SentencePiece model file instead. Like nanochat's\n"
         "tok_train.py it uses at most --doc-cap characters of each document and --max-chars in all.",
         train_tokenizer_options, run_train_tokenizer},
        {"tokenize", "--tokenizer TOK --input PATH... --output DIR [--split hash|nanochat]",
         "write token shards (llm.c format) for train and val + manifest.json",
         "Encodes every document, prefixes it with <|bos|> and writes train_NNNNNN.bin and val_NNNNNN.bin shards\n"
         "(llm.c format: uint16 tokens when the vocabulary fits, else uint32) with manifest.json: files, token\n"
         "and document counts, sha256, and the tokenizer's hash. A document goes to validation by a hash of its\n"
         "text, so the split never changes with the inputs' order or the number of shards; --split nanochat\n"
         "takes the last parquet file as validation instead, as nanochat does. Parquet files (nanochat's\n"
         "base_data/) give a shard each, with their row groups recorded for the loader's rank striding.\n"
         "The output appears only when complete.",
         tokenize_options, run_tokenize},
        {"inspect", "SHARD [--tokenizer TOK] [--docs N]", "header, counts and the first documents of shards",
         "Checks shards (a file, a glob or a directory) as training would - header, size, token ids, manifest -\n"
         "and prints each header, its document and token counts, and the first documents decoded. Reads\n"
         "llm.c/modded-nanogpt .bin shards too.",
         inspect_options, run_inspect},
        {"batches", "SHARDS [--split S] [--batch-size B] [--sequence-len T] [--batches N]",
         "pack shards into training batches as the trainer would and report",
         "Runs the best-fit loader (BOS-aligned rows, as nanochat's dataloader) over shards and reports the\n"
         "throughput, the epoch, the share of tokens lost to cropping, a checksum of the last batch and, with a\n"
         "tokenizer, the bits per byte of a unigram model on the batches' targets - the number any trained\n"
         "model has to beat. --state-out/--state-in save and continue the loader exactly.",
         batches_options, run_batches},
    };
    return list;
}

void print_data_help(std::ostream& out) {
    out << "usage: l3lab data <subcommand> [options]\n\nsubcommands:\n";
    for (const auto& s : subcommands()) out << fmt::format("  {:<17}{}\n", s.name, s.summary);
    out << "\nRun 'l3lab data <subcommand> --help' for its options; docs/data.md describes the formats.\n";
}

}  // namespace

int cmd_data(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
    if (args.empty()) throw UsageError("missing the subcommand: train-tokenizer, tokenize, inspect or batches");
    if (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
        print_data_help(out);
        return 0;
    }
    const Subcommand* sub = nullptr;
    for (const auto& s : subcommands())
        if (args[0] == s.name) sub = &s;
    if (!sub) throw UsageError("unknown subcommand '" + args[0] + "': expected train-tokenizer, tokenize, inspect or batches");

    const std::string prefix = std::string("l3lab data ") + sub->name;
    try {
        po::options_description options("options");
        sub->options(options);
        options.add_options()("help,h", "show this help");
        po::positional_options_description positional;
        if (std::string(sub->name) == "inspect" || std::string(sub->name) == "batches") positional.add("shards", 1);
        po::variables_map vm;
        std::vector<std::string> rest(args.begin() + 1, args.end());
        po::store(po::command_line_parser(rest).options(options).positional(positional).run(), vm);
        if (vm.count("help")) {
            out << "usage: " << prefix << " " << sub->usage << "\n\n" << sub->about << "\n\n" << options << "\n";
            return 0;
        }
        po::notify(vm);
        return sub->run(vm, out, err);
    } catch (const UsageError& e) {
        err << prefix << ": " << e.what() << "\nusage: " << prefix << " " << sub->usage << "\n(see '" << prefix << " --help')\n";
        return 2;
    } catch (const po::error& e) {
        err << prefix << ": " << e.what() << "\nusage: " << prefix << " " << sub->usage << "\n(see '" << prefix << " --help')\n";
        return 2;
    } catch (const config::ConfigException& e) {
        for (const auto& error : e.errors()) err << prefix << ": " << error.str() << "\n";
        return 2;
    }
}

}  // namespace l3lab::cli
