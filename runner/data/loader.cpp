#include "runner/data/loader.h"

#include <algorithm>
#include <array>

#include <nlohmann/json.hpp>

#include "runner/data/errors.h"
#include "runner/util/format.h"

namespace l3lab::data {

namespace {

// splitmix64: a small generator whose output is the same on every platform (std::shuffle is not).
struct SplitMix64 {
    uint64_t state;
    uint64_t next() {
        uint64_t z = (state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    uint64_t below(uint64_t n) {  // uniform in [0, n), by rejection
        const uint64_t threshold = (0 - n) % n;
        for (;;)
            if (uint64_t r = next(); r >= threshold) return r % n;
    }
};

}  // namespace

void LoaderOptions::validate() const {
    auto at_least = [](const char* name, int64_t v, int64_t min) {
        if (v < min) throw DataError("data loader", std::string(name) + ": must be at least " + std::to_string(min) +
                                                        ", got " + std::to_string(v));
    };
    at_least("batch_size", batch_size, 1);
    at_least("sequence_len", sequence_len, 1);
    at_least("buffer_size", buffer_size, 1);
    at_least("refill_batch", refill_batch, 1);
    at_least("row_group_docs", row_group_docs, 1);
    at_least("world_size", world_size, 1);
    if (rank < 0 || rank >= world_size)
        throw DataError("data loader", "rank: must be in [0, world_size = " + std::to_string(world_size) + "), got " +
                                           std::to_string(rank));
}

std::vector<RowGroup> rank_row_groups(const ShardSet& shards, const LoaderOptions& options, int64_t epoch) {
    // The reference's assignment: in every shard, row groups rank, rank + W, rank + 2W, ... The part of
    // the data a rank reads is the same every epoch; shuffling only changes the order it reads it in.
    // A shard made from a parquet file has that file's row groups; others are cut into row_group_docs.
    const uint64_t G = static_cast<uint64_t>(options.row_group_docs);
    const uint64_t W = static_cast<uint64_t>(options.world_size), r = static_cast<uint64_t>(options.rank);
    std::vector<RowGroup> out;
    for (size_t s = 0; s < shards.shards().size(); ++s) {
        const ShardDocs& shard = shards.shards()[s];
        const uint64_t n = shard.documents();
        if (!shard.row_groups.empty()) {
            std::vector<uint32_t> first(shard.row_groups.size(), 0);
            for (size_t g = 1; g < first.size(); ++g) first[g] = first[g - 1] + shard.row_groups[g - 1];
            for (uint64_t g = r; g < shard.row_groups.size(); g += W)
                if (shard.row_groups[g] > 0) out.push_back({static_cast<uint32_t>(s), first[g], shard.row_groups[g]});
            continue;
        }
        for (uint64_t g = r; g * G < n; g += W)
            out.push_back({static_cast<uint32_t>(s), static_cast<uint32_t>(g * G), static_cast<uint32_t>(std::min(G, n - g * G))});
    }
    if (options.shuffle) {
        SplitMix64 rng{options.seed ^ (static_cast<uint64_t>(epoch) * 0xd1b54a32d192ed03ull) ^ (r * 0x8cb92ba72f3d8dd7ull)};
        rng.next();
        for (size_t i = out.size(); i > 1; --i) std::swap(out[i - 1], out[rng.below(i)]);  // Fisher-Yates
    }
    return out;
}

BestFitLoader::BestFitLoader(std::shared_ptr<const ShardSet> shards, LoaderOptions options)
    : shards_(std::move(shards)), options_(options) {
    options_.validate();
    plan_ = rank_row_groups(*shards_, options_, 1);
    if (plan_.empty())
        throw DataError(shards_->spec(), "rank " + std::to_string(options_.rank) + " of " + std::to_string(options_.world_size) +
                                             " gets no documents: the shards hold " +
                                             util::group_digits(static_cast<int64_t>(shards_->documents())) +
                                             " documents in row groups of " + std::to_string(options_.row_group_docs) +
                                             "; use fewer ranks or smaller row groups");
    buffer_.reserve(static_cast<size_t>(options_.buffer_size + options_.refill_batch));
}

BestFitLoader::Buffered BestFitLoader::buffered(DocRef ref) const {
    const ShardDocs& s = shards_->shards()[ref.shard];
    return {ref, static_cast<uint32_t>(s.doc_length(ref.doc)), s.doc_begin(ref.doc)};
}

void BestFitLoader::refill() {
    if (cursor_group_ >= static_cast<int64_t>(plan_.size())) {
        ++cursor_epoch_;
        cursor_group_ = 0;
        cursor_doc_ = 0;
        if (options_.shuffle) plan_ = rank_row_groups(*shards_, options_, cursor_epoch_);
    }
    const RowGroup& g = plan_[static_cast<size_t>(cursor_group_)];
    const int64_t n = std::min<int64_t>(options_.refill_batch, g.documents - cursor_doc_);
    for (int64_t k = 0; k < n; ++k)
        buffer_.push_back(buffered({g.shard, static_cast<uint32_t>(g.first_doc + cursor_doc_ + k)}));
    cursor_doc_ += n;
    if (cursor_doc_ == g.documents) {
        ++cursor_group_;
        cursor_doc_ = 0;
    }
    last_epoch_ = cursor_epoch_;
}

void BestFitLoader::next(Batch& out) {
    const size_t B = static_cast<size_t>(options_.batch_size), T = static_cast<size_t>(options_.sequence_len);
    const uint32_t capacity = static_cast<uint32_t>(T + 1);
    out.batch_size = options_.batch_size;
    out.sequence_len = options_.sequence_len;
    out.inputs.resize(B * T);
    out.targets.resize(B * T);
    row_.resize(capacity);
    const size_t buffer_size = static_cast<size_t>(options_.buffer_size);
    for (size_t r = 0; r < B; ++r) {
        uint32_t pos = 0;
        while (pos < capacity) {
            while (buffer_.size() < buffer_size) refill();
            const uint32_t remaining = capacity - pos;
            // The longest document that fits; the first of equal lengths.
            size_t best = buffer_.size();
            uint32_t best_len = 0;
            for (size_t i = 0; i < buffer_.size(); ++i) {
                const uint32_t len = buffer_[i].length;
                if (len <= remaining && len > best_len) {
                    best = i;
                    best_len = len;
                }
            }
            if (best < buffer_.size()) {
                const Buffered& d = buffer_[best];
                shards_->shards()[d.ref.shard].file->copy(d.begin, d.length, row_.data() + pos);
                pos += d.length;
                tokens_ += d.length;
                buffer_.erase(buffer_.begin() + static_cast<std::ptrdiff_t>(best));
            } else {
                // Nothing fits: crop the shortest (the first of equal lengths) to fill the row.
                size_t shortest = 0;
                for (size_t i = 1; i < buffer_.size(); ++i)
                    if (buffer_[i].length < buffer_[shortest].length) shortest = i;
                const Buffered& d = buffer_[shortest];
                shards_->shards()[d.ref.shard].file->copy(d.begin, remaining, row_.data() + pos);
                tokens_ += remaining;
                cropped_ += d.length - remaining;
                pos += remaining;
                buffer_.erase(buffer_.begin() + static_cast<std::ptrdiff_t>(shortest));
            }
        }
        std::copy(row_.begin(), row_.begin() + static_cast<std::ptrdiff_t>(T), out.inputs.begin() + static_cast<std::ptrdiff_t>(r * T));
        std::copy(row_.begin() + 1, row_.end(), out.targets.begin() + static_cast<std::ptrdiff_t>(r * T));
    }
    ++batches_;
    out.epoch = last_epoch_;
}

Batch BestFitLoader::next() {
    Batch b;
    next(b);
    return b;
}

LoaderState BestFitLoader::state() const {
    LoaderState s;
    s.fingerprint = shards_->fingerprint();
    s.rank = options_.rank;
    s.world_size = options_.world_size;
    s.buffer_size = options_.buffer_size;
    s.refill_batch = options_.refill_batch;
    s.row_group_docs = options_.row_group_docs;
    s.shuffle = options_.shuffle;
    s.seed = options_.shuffle ? options_.seed : 0;
    s.epoch = cursor_epoch_;
    s.group = cursor_group_;
    s.doc = cursor_doc_;
    s.last_epoch = last_epoch_;
    s.buffer.reserve(buffer_.size());
    for (const auto& b : buffer_) s.buffer.push_back(b.ref);
    s.batches = batches_;
    s.tokens = tokens_;
    s.cropped = cropped_;
    return s;
}

void BestFitLoader::restore(const LoaderState& s) {
    const std::string where = "loader state";
    if (s.fingerprint != shards_->fingerprint())
        throw DataError(where, "it belongs to other shards than " + shards_->spec() +
                                   " (their names, token or document counts differ)");
    auto same = [&](const char* name, int64_t saved, int64_t now) {
        if (saved != now)
            throw DataError(where, std::string(name) + " was " + std::to_string(saved) + " when it was saved, now " +
                                       std::to_string(now) + ": the document stream would differ");
    };
    same("rank", s.rank, options_.rank);
    same("world_size", s.world_size, options_.world_size);
    same("buffer_size", s.buffer_size, options_.buffer_size);
    same("refill_batch", s.refill_batch, options_.refill_batch);
    same("row_group_docs", s.row_group_docs, options_.row_group_docs);
    same("shuffle", s.shuffle, options_.shuffle);
    if (s.shuffle && s.seed != options_.seed)
        throw DataError(where, "seed was " + std::to_string(s.seed) + " when it was saved, now " + std::to_string(options_.seed));
    if (s.epoch < 1 || s.last_epoch < 1 || s.last_epoch > s.epoch) throw DataError(where, "epoch: out of range");
    std::vector<RowGroup> plan = rank_row_groups(*shards_, options_, s.epoch);
    if (s.group < 0 || s.group > static_cast<int64_t>(plan.size())) throw DataError(where, "group: out of range");
    const int64_t docs_in_group = s.group < static_cast<int64_t>(plan.size()) ? plan[static_cast<size_t>(s.group)].documents : 1;
    if (s.doc < 0 || s.doc >= docs_in_group) throw DataError(where, "doc: out of range");
    std::vector<Buffered> buffer;
    buffer.reserve(std::max<size_t>(s.buffer.size(), static_cast<size_t>(options_.buffer_size + options_.refill_batch)));
    for (const auto& ref : s.buffer) {
        if (ref.shard >= shards_->shards().size() || ref.doc >= shards_->shards()[ref.shard].documents())
            throw DataError(where, "buffer: document (" + std::to_string(ref.shard) + ", " + std::to_string(ref.doc) +
                                       ") is not in the shards");
        buffer.push_back(buffered(ref));
    }
    if (s.batches < 0 || s.tokens < 0 || s.cropped < 0) throw DataError(where, "counters: negative");
    plan_ = std::move(plan);
    cursor_epoch_ = s.epoch;
    cursor_group_ = s.group;
    cursor_doc_ = s.doc;
    last_epoch_ = s.last_epoch;
    buffer_ = std::move(buffer);
    batches_ = s.batches;
    tokens_ = s.tokens;
    cropped_ = s.cropped;
}

std::string LoaderState::to_json() const {
    nlohmann::ordered_json j;
    j["version"] = 1;
    j["fingerprint"] = fingerprint;
    j["rank"] = rank;
    j["world_size"] = world_size;
    j["buffer_size"] = buffer_size;
    j["refill_batch"] = refill_batch;
    j["row_group_docs"] = row_group_docs;
    j["shuffle"] = shuffle;
    j["seed"] = seed;
    j["epoch"] = epoch;
    j["group"] = group;
    j["doc"] = doc;
    j["last_epoch"] = last_epoch;
    j["batches"] = batches;
    j["tokens"] = tokens;
    j["cropped"] = cropped;
    auto refs = nlohmann::ordered_json::array();
    for (const auto& r : buffer) refs.push_back({r.shard, r.doc});
    j["buffer"] = std::move(refs);
    return j.dump();
}

LoaderState LoaderState::from_json(const std::string& text, const std::string& where) {
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
        throw DataError(where, std::string("not valid JSON: ") + e.what());
    }
    if (!j.is_object()) throw DataError(where, "expected a JSON object");
    LoaderState s;
    auto field = [&](const char* key, auto& out) {
        if (!j.contains(key)) throw DataError(where, std::string(key) + ": missing");
        try {
            j.at(key).get_to(out);
        } catch (const nlohmann::json::exception&) {
            throw DataError(where, std::string(key) + ": wrong type (" + j.at(key).type_name() + ")");
        }
    };
    int version = 0;
    field("version", version);
    if (version != 1) throw DataError(where, "version: " + std::to_string(version) + " is not a version this l3lab reads (1)");
    field("fingerprint", s.fingerprint);
    field("rank", s.rank);
    field("world_size", s.world_size);
    field("buffer_size", s.buffer_size);
    field("refill_batch", s.refill_batch);
    field("row_group_docs", s.row_group_docs);
    field("shuffle", s.shuffle);
    field("seed", s.seed);
    field("epoch", s.epoch);
    field("group", s.group);
    field("doc", s.doc);
    field("last_epoch", s.last_epoch);
    field("batches", s.batches);
    field("tokens", s.tokens);
    field("cropped", s.cropped);
    std::vector<std::array<uint32_t, 2>> refs;
    field("buffer", refs);
    for (const auto& r : refs) s.buffer.push_back({r[0], r[1]});
    return s;
}

PrefetchingLoader::PrefetchingLoader(BestFitLoader loader, int depth)
    : loader_(std::move(loader)), depth_(static_cast<size_t>(std::max(1, depth))), taken_(loader_.state()) {
    start();
}

PrefetchingLoader::~PrefetchingLoader() { stop(); }

void PrefetchingLoader::start() {
    stopping_ = false;
    thread_ = std::thread([this] { run(); });
}

void PrefetchingLoader::stop() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void PrefetchingLoader::run() {
    for (;;) {
        Batch batch;
        {
            std::unique_lock lock(mutex_);
            cv_.wait(lock, [&] { return stopping_ || ready_.size() < depth_; });
            if (stopping_) return;
            if (!spare_.empty()) {
                batch = std::move(spare_.back());
                spare_.pop_back();
            }
        }
        LoaderState state;
        try {
            loader_.next(batch);  // only this thread touches loader_ while it runs
            state = loader_.state();
        } catch (...) {
            std::lock_guard lock(mutex_);
            error_ = std::current_exception();
            cv_.notify_all();
            return;
        }
        {
            std::lock_guard lock(mutex_);
            ready_.emplace_back(std::move(batch), std::move(state));
        }
        cv_.notify_all();
    }
}

void PrefetchingLoader::next(Batch& out) {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return !ready_.empty() || error_; });
    if (ready_.empty()) std::rethrow_exception(error_);
    auto& [batch, state] = ready_.front();
    std::swap(out, batch);
    taken_ = std::move(state);
    spare_.push_back(std::move(batch));
    ready_.pop_front();
    lock.unlock();
    cv_.notify_all();
}

Batch PrefetchingLoader::next() {
    Batch b;
    next(b);
    return b;
}

LoaderState PrefetchingLoader::state() const {
    std::lock_guard lock(mutex_);
    return taken_;
}

void PrefetchingLoader::restore(const LoaderState& state) {
    stop();
    ready_.clear();
    error_ = nullptr;
    try {
        loader_.restore(state);
    } catch (...) {
        start();  // keep serving the old stream
        throw;
    }
    taken_ = loader_.state();
    start();
}

}  // namespace l3lab::data
