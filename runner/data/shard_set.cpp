#include "runner/data/shard_set.h"

#include <glob.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <filesystem>
#include <map>
#include <thread>

#include "runner/data/errors.h"
#include "runner/data/sha256.h"
#include "runner/util/format.h"
#include "runner/util/progress.h"
#include "runner/util/stop.h"

namespace fs = std::filesystem;

namespace l3lab::data {

namespace {

constexpr int64_t kGpt2Vocab = 50257, kGpt2Bos = 50256;

using util::group_digits;
std::string short_sha(const std::string& s) { return s.substr(0, 12); }

struct Candidate {
    std::string path;
    std::string dir;  // where its manifest would be
};

std::vector<Candidate> resolve(const std::string& spec, const std::string& split,
                               std::map<std::string, std::optional<Manifest>>& manifests,
                               std::map<std::string, std::string>& manifest_paths) {
    auto manifest_for = [&](const std::string& dir) -> const std::optional<Manifest>& {
        auto it = manifests.find(dir);
        if (it != manifests.end()) return it->second;
        std::optional<Manifest> m;
        if (auto p = manifest_path_in(dir)) {
            m = Manifest::read(*p);
            manifest_paths[dir] = *p;
        }
        return manifests.emplace(dir, std::move(m)).first->second;
    };
    std::vector<Candidate> out;
    std::error_code ec;
    if (fs::is_directory(spec, ec)) {
        if (const auto& m = manifest_for(spec)) {
            for (const auto& f : m->files)
                if (split.empty() || f.split == split) out.push_back({(fs::path(spec) / f.file).string(), spec});
            if (out.empty())
                throw DataError(manifest_paths[spec], "lists no " + (split.empty() ? std::string("") : "'" + split + "' ") + "shards");
            return out;
        }
        std::vector<std::string> names;
        for (const auto& e : fs::directory_iterator(spec, ec))
            if (e.is_regular_file() && e.path().extension() == ".bin" &&
                (split.empty() || e.path().filename().string().find(split) != std::string::npos))
                names.push_back(e.path().string());
        if (ec) throw DataError(spec, "cannot list the directory: " + ec.message());
        if (names.empty())
            throw DataError(spec, "no " + (split.empty() ? std::string("") : "'" + split + "' ") +
                                      "shards (*.bin) and no manifest.json in this directory");
        std::sort(names.begin(), names.end());
        for (auto& n : names) out.push_back({n, spec});
        return out;
    }
    std::vector<std::string> paths;
    if (fs::exists(spec, ec)) {
        paths.push_back(spec);
    } else if (spec.find_first_of("*?[") != std::string::npos) {
        glob_t g{};
        if (glob(spec.c_str(), 0, nullptr, &g) == 0) paths.assign(g.gl_pathv, g.gl_pathv + g.gl_pathc);
        globfree(&g);
        if (paths.empty()) throw DataError(spec, "no shard file matches this pattern");
        std::sort(paths.begin(), paths.end());
    } else {
        throw DataError(spec, "no such shard file or directory");
    }
    for (auto& p : paths) {
        std::string dir = fs::path(p).parent_path().string();
        if (dir.empty()) dir = ".";
        manifest_for(dir);
        out.push_back({p, dir});
    }
    return out;
}

// Finds the documents of one shard and checks every token against the vocabulary.
template <class T>
void index_tokens(const T* p, uint64_t n, uint32_t bos, int64_t vocab, const ShardFile& file, ShardDocs& docs) {
    uint32_t max_token = 0;
    for (uint64_t i = 0; i < n; ++i) {
        const uint32_t t = p[i];
        if (t == bos) docs.starts.push_back(i);
        max_token = std::max(max_token, t);
    }
    if (max_token >= vocab) {
        for (uint64_t i = 0; i < n; ++i)
            if (static_cast<int64_t>(p[i]) >= vocab)
                throw DataError::at_offset(file.path(), file.offset_of(i),
                                           "token id " + std::to_string(p[i]) + " (token " + group_digits(i) +
                                               ") is not below the vocabulary size " + group_digits(vocab));
    }
    docs.max_token = max_token;
    docs.leading_tokens = docs.starts.empty() ? n : docs.starts.front();
}

}  // namespace

std::shared_ptr<const ShardSet> ShardSet::open(const std::string& spec, const ShardSetOptions& options) {
    auto set = std::make_shared<ShardSet>();
    set->spec_ = spec;
    std::map<std::string, std::optional<Manifest>> manifests;
    std::map<std::string, std::string> manifest_paths;
    const std::vector<Candidate> candidates = resolve(spec, options.split, manifests, manifest_paths);

    // Vocabulary and BOS: the caller's (its tokenizer), else the manifests', which must agree.
    std::optional<int64_t> vocab = options.vocab_size, bos = options.bos_id;
    for (const auto& [dir, m] : manifests) {
        if (!m) continue;
        const std::string& mpath = manifest_paths[dir];
        if (!set->manifest_) {
            set->manifest_ = m;
            set->manifest_path_ = mpath;
        }
        if (!options.tokenizer_sha256.empty() && m->tokenizer_sha256 != options.tokenizer_sha256)
            throw DataError(mpath, "these shards were made with the tokenizer " + m->tokenizer_file + " (sha256 " +
                                       short_sha(m->tokenizer_sha256) + "...), not with " +
                                       (options.tokenizer_name.empty() ? "the given tokenizer" : options.tokenizer_name) +
                                       " (sha256 " + short_sha(options.tokenizer_sha256) +
                                       "...): tokenize the corpus again with this tokenizer, or use its own");
        if (vocab && *vocab != m->vocab_size)
            throw DataError(mpath, "the shards' vocabulary has " + group_digits(m->vocab_size) + " tokens, not " + group_digits(*vocab));
        if (bos && *bos != m->bos_id)
            throw DataError(mpath, "the shards' BOS token is " + std::to_string(m->bos_id) + ", not " + std::to_string(*bos));
        vocab = m->vocab_size;
        bos = m->bos_id;
    }

    // Open every file; headers are checked against sizes here.
    std::vector<ShardDocs>& shards = set->shards_;
    shards.resize(candidates.size());
    for (size_t i = 0; i < candidates.size(); ++i) {
        shards[i].file = ShardFile::open(candidates[i].path);
        shards[i].name = fs::path(candidates[i].path).filename().string();
        const auto& m = manifests[candidates[i].dir];
        if (!m) continue;
        const std::string& mpath = manifest_paths[candidates[i].dir];
        const ManifestFile* entry = m->find(shards[i].name);
        if (!entry) throw DataError(candidates[i].path, "not listed in " + mpath);
        if (static_cast<uint64_t>(entry->tokens) != shards[i].file->num_tokens())
            throw DataError(candidates[i].path, "has " + group_digits(shards[i].file->num_tokens()) + " tokens but " + mpath +
                                                    " says " + group_digits(entry->tokens));
        if (shards[i].file->version() != m->shard_version)
            throw DataError(candidates[i].path, "is a version " + std::to_string(shards[i].file->version()) +
                                                    " shard but " + mpath + " says version " + std::to_string(m->shard_version));
    }
    if (!vocab || !bos) {
        if (shards.front().file->version() != 1)
            throw DataError(candidates.front().path, "no manifest.json beside the shard says which tokenizer made it: "
                                                     "give the tokenizer (its vocabulary and BOS id)");
        if (!vocab) vocab = kGpt2Vocab;
        if (!bos) bos = kGpt2Bos;
        set->notes_.push_back("no manifest.json: assuming GPT-2 token ids as in llm.c/modded-nanogpt shards (vocabulary " +
                              group_digits(*vocab) + ", documents start with token " + std::to_string(*bos) + ")");
    }
    if (*bos < 0 || *bos >= *vocab)
        throw DataError(spec, "BOS id " + std::to_string(*bos) + " is not below the vocabulary size " + group_digits(*vocab));
    set->vocab_size_ = *vocab;
    set->bos_id_ = *bos;

    // Index documents and check tokens, a shard per thread; the first error in file order wins. A stop
    // signal (docs/stopping.md) abandons the remaining shards.
    std::vector<std::exception_ptr> errors(shards.size());
    std::atomic<size_t> next{0};
    util::Progress progress("opening " + spec, static_cast<int64_t>(shards.size()), "shards");
    auto work = [&] {
        for (size_t i; (i = next++) < shards.size();) {
            try {
                if (util::stop_requested()) util::throw_if_stop_requested("opening the data (" + spec + ")");
                ShardDocs& s = shards[i];
                const ShardFile& f = *s.file;
                if (f.version() == 1) index_tokens(f.u16(), f.num_tokens(), static_cast<uint32_t>(*bos), *vocab, f, s);
                else index_tokens(f.u32(), f.num_tokens(), static_cast<uint32_t>(*bos), *vocab, f, s);
                const auto& m = manifests[candidates[i].dir];
                if (!m) continue;
                const ManifestFile* entry = m->find(s.name);
                if (static_cast<uint64_t>(entry->documents) != s.documents())
                    throw DataError(f.path(), "has " + group_digits(s.documents()) + " documents but " +
                                                  manifest_paths[candidates[i].dir] + " says " + group_digits(entry->documents));
                s.row_groups.assign(entry->row_groups.begin(), entry->row_groups.end());
                if (s.leading_tokens != 0)
                    throw DataError::at_offset(f.path(), f.offset_of(0), "does not start with the BOS token " +
                                                                             std::to_string(*bos));
                if (options.verify_sha256 && sha256_file(f.path()) != entry->sha256)
                    throw DataError(f.path(), "sha256 differs from " + manifest_paths[candidates[i].dir] +
                                                  ": the file changed after it was written");
            } catch (...) {
                errors[i] = std::current_exception();
            }
            progress.advance();
        }
    };
    const size_t threads = std::min<size_t>(shards.size(), options.threads > 0 ? options.threads
                                                                             : std::max(1u, std::thread::hardware_concurrency()));
    std::vector<std::thread> pool;
    for (size_t t = 1; t < threads; ++t) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
    progress.finish();
    for (auto& e : errors)
        if (e) std::rethrow_exception(e);

    Sha256 h;
    for (const auto& s : shards) {
        h.update(s.name + ":" + std::to_string(s.file->num_tokens()) + ":" + std::to_string(s.documents()));
        for (uint32_t g : s.row_groups) h.update("," + std::to_string(g));  // parquet-born: its row groups too
        h.update(";");
    }
    set->fingerprint_ = h.hex_digest();
    return set;
}

uint64_t ShardSet::tokens() const {
    uint64_t n = 0;
    for (const auto& s : shards_) n += s.file->num_tokens();
    return n;
}

uint64_t ShardSet::documents() const {
    uint64_t n = 0;
    for (const auto& s : shards_) n += s.documents();
    return n;
}

}  // namespace l3lab::data
