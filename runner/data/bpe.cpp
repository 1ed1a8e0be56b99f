#include "runner/data/bpe.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <mutex>
#include <queue>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "runner/data/errors.h"
#include "runner/data/tokenizer_common.h"
#include "runner/data/utf8.h"
#include "runner/util/format.h"
#include "runner/util/progress.h"

namespace l3lab::data {

namespace {

// Unicode White_Space, which `\s` means in the regex engine of tiktoken and rustbpe (fancy-regex).
// PCRE2's \s with PCRE2_UCP takes U+180E MONGOLIAN VOWEL SEPARATOR as well, so it is spelled out.
constexpr std::string_view kWhiteSpace = R"(\t-\r\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";

std::string with_white_space_spelled_out(std::string_view pattern) {
    std::string out;
    bool in_class = false;
    for (size_t i = 0; i < pattern.size(); ++i) {
        const char c = pattern[i];
        if (c == '\\' && i + 1 < pattern.size()) {
            const char e = pattern[++i];
            if (e == 's') out += in_class ? std::string(kWhiteSpace) : "[" + std::string(kWhiteSpace) + "]";
            else if (e == 'S' && !in_class) out += "[^" + std::string(kWhiteSpace) + "]";
            else out += {c, e};
            continue;
        }
        if (c == '[' && !in_class) {
            in_class = true;
            out += c;
            if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
            if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];  // a literal ] first
            continue;
        }
        if (c == ']' && in_class) in_class = false;
        out += c;
    }
    return out;
}

// What each thread matches with: PCRE2's match data and a JIT stack large enough for long runs.
struct MatchScratch {
    MatchScratch() {
        data = pcre2_match_data_create(1, nullptr);
        context = pcre2_match_context_create(nullptr);
        stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
        pcre2_jit_stack_assign(context, nullptr, stack);
    }
    ~MatchScratch() {
        pcre2_jit_stack_free(stack);
        pcre2_match_context_free(context);
        pcre2_match_data_free(data);
    }
    pcre2_match_data* data;
    pcre2_match_context* context;
    pcre2_jit_stack* stack;
};

std::string pcre2_message(int code) {
    PCRE2_UCHAR buffer[256];
    pcre2_get_error_message(code, buffer, sizeof buffer);
    return reinterpret_cast<const char*>(buffer);
}

// FNV-1a over the bytes: a fast hash for the short strings the rank table holds.
struct BytesHash {
    size_t operator()(std::string_view s) const noexcept {
        uint64_t h = 1469598103934665603ull;
        for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
        return static_cast<size_t>(h ^ (h >> 29));
    }
};

constexpr uint32_t kNoRank = std::numeric_limits<uint32_t>::max();

// How many bytes Python's bytes.decode("utf-8", errors="replace") turns `s` into, encoded again: a
// maximal ill-formed subpart becomes U+FFFD (3 bytes). nanochat's token_bytes is this of each token.
int32_t replaced_utf8_length(std::string_view s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const size_t n = s.size();
    int32_t out = 0;
    size_t i = 0;
    while (i < n) {
        const unsigned char c = p[i];
        if (c < 0x80) { ++out; ++i; continue; }
        size_t len;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c == 0xE0) { len = 3; lo = 0xA0; }
        else if (c >= 0xE1 && c <= 0xEC) len = 3;
        else if (c == 0xED) { len = 3; hi = 0x9F; }
        else if (c >= 0xEE && c <= 0xEF) len = 3;
        else if (c == 0xF0) { len = 4; lo = 0x90; }
        else if (c >= 0xF1 && c <= 0xF3) len = 4;
        else if (c == 0xF4) { len = 4; hi = 0x8F; }
        else { out += 3; ++i; continue; }
        size_t k = 1;
        for (; k < len && i + k < n; ++k) {
            const unsigned char b = p[i + k];
            if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) break;
        }
        out += k == len ? static_cast<int32_t>(len) : 3;
        i += k;
    }
    return out;
}

class BpeTokenizer final : public TokenizerCommon {
public:
    BpeTokenizer(TiktokenEncoding e, std::string sha256, const std::string& file)
        : pattern_(e.pattern, file + ": pat_str") {
        sha256_ = std::move(sha256);
        int64_t n = 0;
        for (const auto& [bytes, rank] : e.ranks) n = std::max(n, rank + 1);
        for (const auto& [name, id] : e.specials) n = std::max(n, id + 1);
        if (e.ranks.empty()) throw DataError(file, "the Encoding has no mergeable ranks");
        if (n > std::numeric_limits<int32_t>::max())
            throw DataError(file, "token id " + util::group_digits(n - 1) + " is too large");
        if (n != static_cast<int64_t>(e.ranks.size() + e.specials.size()))  // before anything of size n is made
            throw DataError(file, "the Encoding's ids are not 0 to " + util::group_digits(n - 1) + " without gaps or repeats (" +
                                      util::group_digits(static_cast<int64_t>(e.ranks.size())) + " ranks and " +
                                      std::to_string(e.specials.size()) + " special tokens)");
        surface_.resize(static_cast<size_t>(n));
        std::vector<char> used(static_cast<size_t>(n), 0);
        ranks_.reserve(e.ranks.size() * 2);
        for (auto& [bytes, rank] : e.ranks) {
            if (bytes.empty()) throw DataError(file, "the Encoding has an empty token (rank " + std::to_string(rank) + ")");
            if (used[static_cast<size_t>(rank)]++) throw DataError(file, "two tokens have rank " + std::to_string(rank));
            surface_[static_cast<size_t>(rank)] = std::move(bytes);
        }
        for (size_t id = 0; id < surface_.size(); ++id)
            if (used[id] && !ranks_.emplace(surface_[id], static_cast<uint32_t>(id)).second)
                throw DataError(file, "the token of rank " + std::to_string(id) + " appears twice");
        for (int b = 0; b < 256; ++b)
            if (!ranks_.count(std::string_view(&byte_chars()[b], 1)))
                throw DataError(file, "the Encoding cannot encode the single byte 0x" + std::to_string(b) +
                                          ": every byte must have a token, as in nanochat's byte-level BPE");
        std::sort(e.specials.begin(), e.specials.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
        for (auto& [name, id] : e.specials) {
            if (used[static_cast<size_t>(id)]++)
                throw DataError(file, "special token " + name + " has id " + std::to_string(id) + ", which a token has already");
            surface_[static_cast<size_t>(id)] = name;
            specials_.push_back(name);
            special_ids_.push_back(static_cast<int>(id));
        }
        const std::unordered_set<std::string> special_names(specials_.begin(), specials_.end());
        token_bytes_.resize(surface_.size());
        for (size_t id = 0; id < surface_.size(); ++id)
            token_bytes_[id] = special_names.count(surface_[id]) ? 0 : replaced_utf8_length(surface_[id]);
        bos_ = special_id(kBosToken).value_or(special_id("<|endoftext|>").value_or(-1));
        if (bos_ < 0) throw DataError(file, "the Encoding has neither <|bos|> nor <|endoftext|> among its special tokens");
        for (size_t id = 0; id < surface_.size(); ++id)
            if (!used[id]) throw DataError(file, "no token has id " + std::to_string(id) + " (the ids must be 0 to " +
                                                     std::to_string(surface_.size() - 1) + " without gaps)");
    }

    std::vector<int32_t> encode(std::string_view text) const override {
        if (size_t bad = first_invalid_utf8(text); bad != std::string_view::npos) throw InvalidUtf8(bad);
        std::vector<int32_t> ids;
        ids.reserve(text.size() / 3 + 1);
        std::vector<std::pair<uint32_t, uint32_t>> parts;
        pattern_.split(text, [&](std::string_view piece) {
            if (auto it = ranks_.find(piece); it != ranks_.end()) {
                ids.push_back(static_cast<int32_t>(it->second));
                return;
            }
            if (piece.size() > kLongPiece) {
                merge_long(piece, ids);
                return;
            }
            merge(piece, parts);
            for (size_t i = 0; i + 1 < parts.size(); ++i)
                ids.push_back(static_cast<int32_t>(rank_of(piece.substr(parts[i].first, parts[i + 1].first - parts[i].first))));
        });
        return ids;
    }

    std::string piece(int id) const override {
        const std::string& bytes = surface_.at(static_cast<size_t>(id));
        if (first_invalid_utf8(bytes) == std::string_view::npos) return bytes;
        std::string shown;
        for (unsigned char c : bytes) shown += c < 0x80 ? std::string(1, static_cast<char>(c)) : "<0x" + hex(c) + ">";
        return shown;
    }
private:
    static const char* byte_chars() {
        static const auto table = [] {
            std::array<char, 256> t{};
            for (int i = 0; i < 256; ++i) t[static_cast<size_t>(i)] = static_cast<char>(i);
            return t;
        }();
        return table.data();
    }
    static std::string hex(unsigned char c) {
        const char* d = "0123456789ABCDEF";
        return {d[c >> 4], d[c & 15]};
    }
    uint32_t rank_of(std::string_view bytes) const {
        auto it = ranks_.find(bytes);
        return it == ranks_.end() ? kNoRank : it->second;
    }

    // tiktoken's byte_pair_merge: parts (start, rank of the pair starting there); the lowest rank (the
    // first of equal ranks) is merged until no adjacent pair is a token.
    void merge(std::string_view piece, std::vector<std::pair<uint32_t, uint32_t>>& parts) const {
        parts.clear();
        const uint32_t n = static_cast<uint32_t>(piece.size());
        for (uint32_t i = 0; i + 1 < n; ++i) parts.emplace_back(i, rank_of(piece.substr(i, 2)));
        parts.emplace_back(n - 1, kNoRank);
        parts.emplace_back(n, kNoRank);
        auto pair_rank = [&](size_t i) {
            return i + 3 < parts.size() ? rank_of(piece.substr(parts[i].first, parts[i + 3].first - parts[i].first)) : kNoRank;
        };
        while (true) {
            uint32_t best = kNoRank;
            size_t at = 0;
            for (size_t i = 0; i + 1 < parts.size(); ++i)
                if (parts[i].second < best) {
                    best = parts[i].second;
                    at = i;
                }
            if (best == kNoRank) break;
            if (at > 0) parts[at - 1].second = pair_rank(at - 1);
            parts[at].second = pair_rank(at);
            parts.erase(parts.begin() + static_cast<std::ptrdiff_t>(at) + 1);
        }
    }

    // The same merges for a long piece in O(n log n) instead of tiktoken's O(n^2) scan (a run of 300,000
    // letters takes tiktoken 21 s): a heap of (rank, start) over a linked list of parts, stale entries
    // skipped. The smallest rank wins and, among equal ranks, the smallest start - the first in the list,
    // as tiktoken's scan picks it - so the tokens are the same.
    void merge_long(std::string_view piece, std::vector<int32_t>& ids) const {
        const uint32_t n = static_cast<uint32_t>(piece.size());
        std::vector<uint32_t> next(n + 1), prev(n + 1), rank(n + 1, kNoRank);
        for (uint32_t i = 0; i <= n; ++i) next[i] = i + 1, prev[i] = i - 1;  // part i: [i, next[i]); n ends the list
        using Entry = std::pair<uint32_t, uint32_t>;                           // (rank, start)
        std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
        auto pair_rank = [&](uint32_t i) {  // merging part i with the one after it
            if (i >= n || next[i] >= n) return kNoRank;
            return rank_of(piece.substr(i, next[next[i]] - i));
        };
        auto refresh = [&](uint32_t i) {
            rank[i] = pair_rank(i);
            if (rank[i] != kNoRank) heap.emplace(rank[i], i);
        };
        for (uint32_t i = 0; i < n; ++i) refresh(i);
        std::vector<char> alive(n + 1, 1);
        while (!heap.empty()) {
            const auto [r, i] = heap.top();
            heap.pop();
            if (!alive[i] || rank[i] != r) continue;  // stale: merged away or re-ranked since
            const uint32_t j = next[i];
            alive[j] = 0;
            next[i] = next[j];
            if (next[j] <= n) prev[next[j]] = i;
            refresh(i);
            if (i > 0) refresh(prev[i]);
        }
        for (uint32_t i = 0; i < n; i = next[i]) ids.push_back(static_cast<int32_t>(rank_of(piece.substr(i, next[i] - i))));
    }

    static constexpr size_t kLongPiece = 256;  // longer pieces take merge_long
    SplitPattern pattern_;
    std::unordered_map<std::string_view, uint32_t, BytesHash> ranks_;  // views into surface_
};

}  // namespace

SplitPattern::SplitPattern(std::string_view pattern, const std::string& source) : pattern_(pattern) {
    const std::string compiled = with_white_space_spelled_out(pattern);
    int error = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(compiled.data()), compiled.size(), PCRE2_UTF | PCRE2_UCP,
                          &error, &offset, nullptr);
    if (!code_)
        throw DataError(source, "the split pattern does not compile (PCRE2: " + pcre2_message(error) + " at offset " +
                                    std::to_string(offset) + ")");
    if (int rc = pcre2_jit_compile(static_cast<pcre2_code*>(code_), PCRE2_JIT_COMPLETE); rc != 0) {
        pcre2_code_free(static_cast<pcre2_code*>(code_));
        throw DataError(source, "PCRE2 cannot JIT-compile the split pattern: " + pcre2_message(rc));
    }
}

SplitPattern::~SplitPattern() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void SplitPattern::split(std::string_view text, const std::function<void(std::string_view)>& piece) const {
    thread_local MatchScratch scratch;
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    size_t start = 0;
    while (start < text.size()) {
        const int rc = pcre2_jit_match(static_cast<pcre2_code*>(code_), subject, text.size(), start, PCRE2_NO_UTF_CHECK,
                                       scratch.data, scratch.context);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) throw std::runtime_error("PCRE2 failed to match the split pattern: " + pcre2_message(rc));
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(scratch.data);
        if (ov[1] == ov[0]) {  // an empty match: step over one character, as a regex iterator does
            start = ov[1] + 1;
            while (start < text.size() && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) ++start;
            continue;
        }
        piece(text.substr(ov[0], ov[1] - ov[0]));
        start = ov[1];
    }
}

std::unique_ptr<Tokenizer> bpe_tokenizer(TiktokenEncoding encoding, std::string sha256, const std::string& file) {
    return std::make_unique<BpeTokenizer>(std::move(encoding), std::move(sha256), file);
}

// ---------------------------------------------------------------------------------------------------
// Training, as rustbpe's train_from_iterator + train_core_incremental

namespace {

using Pair = std::pair<uint32_t, uint32_t>;

uint64_t key(Pair p) { return (static_cast<uint64_t>(p.first) << 32) | p.second; }

struct Job {
    int64_t count;
    Pair pair;
    uint32_t positions;  // index into the jobs' word lists
};
// The heap's top is the largest count; of equal counts, the smallest pair (rustbpe's MergeJob order).
struct JobOrder {
    bool operator()(const Job& a, const Job& b) const {
        if (a.count != b.count) return a.count < b.count;
        return a.pair > b.pair;
    }
};

struct Word {
    std::vector<uint32_t> ids;
    // Merges every non-overlapping (a, b), left to right; reports the pair count changes in this word.
    template <class Delta>
    void merge(Pair p, uint32_t id, Delta&& delta) {
        std::vector<uint32_t> out;
        out.reserve(ids.size());
        for (size_t i = 0; i < ids.size();) {
            if (i + 1 < ids.size() && ids[i] == p.first && ids[i + 1] == p.second) {
                if (!out.empty()) {
                    delta(Pair{out.back(), p.first}, -1);
                    delta(Pair{out.back(), id}, 1);
                }
                delta(p, -1);
                if (i + 2 < ids.size()) {
                    delta(Pair{p.second, ids[i + 2]}, -1);
                    delta(Pair{id, ids[i + 2]}, 1);
                }
                out.push_back(id);
                i += 2;
            } else {
                out.push_back(ids[i++]);
            }
        }
        ids = std::move(out);
    }
};

}  // namespace

TiktokenEncoding train_bpe(const std::function<bool(std::string&)>& next_document, const BpeTrainOptions& options,
                           TokenizerTrainReport* report) {
    const int n_special = static_cast<int>(reference_special_tokens().size());
    if (options.vocab_size < n_special + 256)
        throw DataError("--vocab-size", "must be at least " + std::to_string(n_special + 256) +
                                            " (the 256 byte tokens and the 9 special tokens)");
    const auto start = std::chrono::steady_clock::now();
    const SplitPattern pattern(kNanochatSplitPattern, "the split pattern");
    const int threads = options.threads > 0 ? options.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

    // 1. Count the pieces, a batch of documents at a time split on every thread.
    TokenizerTrainReport r;
    std::unordered_map<std::string, int64_t> counts;
    std::vector<std::string> batch;
    std::mutex merge_lock;
    auto count_batch = [&] {
        std::vector<std::thread> pool;
        const size_t per = (batch.size() + static_cast<size_t>(threads) - 1) / static_cast<size_t>(threads);
        for (int t = 0; t < threads; ++t) {
            const size_t lo = std::min(batch.size(), per * static_cast<size_t>(t)), hi = std::min(batch.size(), lo + per);
            if (lo >= hi) break;
            pool.emplace_back([&, lo, hi] {
                std::unordered_map<std::string_view, int64_t> local;
                for (size_t i = lo; i < hi; ++i) pattern.split(batch[i], [&](std::string_view p) { ++local[p]; });
                std::lock_guard<std::mutex> hold(merge_lock);
                for (const auto& [p, c] : local) counts[std::string(p)] += c;
            });
        }
        for (auto& t : pool) t.join();
        batch.clear();
    };
    util::ProgressOptions in_millions;
    in_millions.unit_scale = 1e-6;
    util::Progress reading("reading and splitting the training text", options.max_chars, "M characters", in_millions);
    std::string doc;
    while (next_document(doc)) {
        ++r.documents;
        std::string_view text = options.doc_cap > 0 ? utf8_prefix(doc, options.doc_cap) : std::string_view(doc);
        r.chars += static_cast<int64_t>(utf8_chars(text));
        reading.set(r.chars);
        if (size_t bad = first_invalid_utf8(text); bad != std::string_view::npos) throw InvalidUtf8(bad);
        batch.emplace_back(text);
        if (batch.size() == 8192) count_batch();
        if (options.max_chars > 0 && r.chars > options.max_chars) break;  // as tok_train.py: yield, then check
    }
    count_batch();
    reading.finish();
    if (counts.empty()) throw DataError("tokenizer training", "the inputs contain no text");

    // 2. Words (the distinct pieces as bytes), pair counts and where each pair occurs.
    std::vector<Word> words;
    std::vector<int64_t> word_counts;
    words.reserve(counts.size());
    for (auto& [p, c] : counts) {
        words.push_back(Word{std::vector<uint32_t>(reinterpret_cast<const unsigned char*>(p.data()),
                                                   reinterpret_cast<const unsigned char*>(p.data()) + p.size())});
        word_counts.push_back(c);
    }
    counts.clear();
    std::unordered_map<uint64_t, int64_t> pair_counts;
    std::vector<std::vector<uint32_t>> positions;  // per job: the words where its pair may occur
    std::unordered_map<uint64_t, uint32_t> first_positions;
    for (uint32_t w = 0; w < words.size(); ++w) {
        const auto& ids = words[w].ids;
        for (size_t i = 0; i + 1 < ids.size(); ++i) {
            const uint64_t k = key({ids[i], ids[i + 1]});
            pair_counts[k] += word_counts[w];
            auto [it, fresh] = first_positions.emplace(k, static_cast<uint32_t>(positions.size()));
            if (fresh) positions.emplace_back();
            auto& pos = positions[it->second];
            if (pos.empty() || pos.back() != w) pos.push_back(w);
        }
    }
    std::priority_queue<Job, std::vector<Job>, JobOrder> heap;
    for (const auto& [k, job] : first_positions)
        heap.push(Job{pair_counts[k], Pair{static_cast<uint32_t>(k >> 32), static_cast<uint32_t>(k)}, job});
    first_positions.clear();

    // 3. Merge the most frequent pair until the vocabulary is full or no pair is left.
    TiktokenEncoding e;
    e.name = "rustbpe";
    e.pattern = std::string(kNanochatSplitPattern);
    std::vector<std::string> token(256);
    for (int b = 0; b < 256; ++b) token[static_cast<size_t>(b)] = std::string(1, static_cast<char>(b));
    const uint32_t merges = static_cast<uint32_t>(options.vocab_size - n_special - 256);
    util::Progress merging("merging pairs (BPE, " + util::group_digits(options.vocab_size) + " tokens)", merges, "merges");
    uint32_t done = 0;
    while (done < merges && !heap.empty()) {
        Job top = heap.top();
        heap.pop();
        const int64_t current = pair_counts[key(top.pair)];
        if (current <= 0) continue;
        if (top.count != current) {  // stale: requeue with the count it has now
            top.count = current;
            heap.push(top);
            continue;
        }
        const uint32_t id = 256 + done;
        token.push_back(token[top.pair.first] + token[top.pair.second]);
        std::unordered_map<uint64_t, std::vector<uint32_t>> created;
        for (uint32_t w : positions[top.positions]) {
            words[w].merge(top.pair, id, [&](Pair p, int delta) {
                pair_counts[key(p)] += delta * word_counts[w];
                if (delta > 0) {
                    auto& pos = created[key(p)];
                    if (pos.empty() || pos.back() != w) pos.push_back(w);
                }
            });
        }
        std::vector<uint32_t>().swap(positions[top.positions]);
        for (auto& [k, pos] : created) {
            const int64_t c = pair_counts[k];
            if (c <= 0) continue;
            positions.push_back(std::move(pos));
            heap.push(Job{c, Pair{static_cast<uint32_t>(k >> 32), static_cast<uint32_t>(k)},
                          static_cast<uint32_t>(positions.size() - 1)});
        }
        ++done;
        merging.set(done);
    }
    merging.finish();
    for (uint32_t id = 0; id < token.size(); ++id) e.ranks.emplace_back(std::move(token[id]), id);
    for (int i = 0; i < n_special; ++i)
        e.specials.emplace_back(reference_special_tokens()[static_cast<size_t>(i)], static_cast<int64_t>(e.ranks.size()) + i);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (report) *report = r;
    return e;
}

}  // namespace l3lab::data
