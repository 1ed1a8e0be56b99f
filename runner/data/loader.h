// The training/validation batches: BOS-aligned best-fit packing exactly as the reference
// (nanochat/dataloader.py tokenizing_distributed_data_loader_with_state_bos_bestfit), over documents
// read from token shards instead of parquet files, with an exact resumable state.
//
// Document stream (docs/data.md): a shard plays a parquet file; its documents, in order, are cut into
// row groups of `row_group_docs` (the reference's row_group_size, 1024). Rank r of W reads row groups
// r, r+W, r+2W, ... of every shard in turn - the reference's assignment - so ranks read disjoint
// documents, the same part in every epoch; `shuffle` permutes the order of a rank's row groups in each
// epoch from (seed, epoch, rank) (off: the reference's order, the same every epoch). A row group enters the buffer `refill_batch` documents (128) at a time,
// whenever the buffer holds fewer than `buffer_size` (1000). After the last row group the stream starts
// over and the epoch counter goes up: the loader never ends.
//
// Packing, per row of T+1 tokens: take the longest buffered document that fits the space left (the
// first one of that length), repeat; when none fits, crop the shortest (the first one of that length)
// to fill the row. inputs = row[:-1], targets = row[1:].
//
// State: the cursor (epoch, row group, document) and the buffered documents as (shard, document)
// references, in order. k batches + state() + restore() in a new loader + (N-k) batches gives the same
// tokens as N batches, across epochs.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "runner/data/shard_set.h"

namespace l3lab::data {

struct LoaderOptions {
    int batch_size = 32;        // B rows per batch
    int sequence_len = 2048;    // T; a row holds T + 1 tokens
    int buffer_size = 1000;     // documents kept to choose from (the reference's buffer_size)
    int refill_batch = 128;     // documents added per refill (the reference's tokenizer_batch_size)
    int row_group_docs = 1024;  // documents per row group (the reference's parquet row_group_size)
    int rank = 0;
    int world_size = 1;
    bool shuffle = false;       // false: the reference's order, the same every epoch
    uint64_t seed = 0;          // with shuffle: a rank's row-group order in epoch e comes from (seed, e)

    // Throws DataError naming the bad field.
    void validate() const;
};

struct Batch {
    int batch_size = 0;
    int sequence_len = 0;
    std::vector<int64_t> inputs;   // [batch_size * sequence_len], row-major
    std::vector<int64_t> targets;  // same shape: inputs shifted left by one
    int64_t epoch = 1;             // epoch of the last documents read (the reference's state_dict["epoch"])
};

struct DocRef {
    uint32_t shard = 0;
    uint32_t doc = 0;
    bool operator==(const DocRef&) const = default;
};

struct LoaderState {
    // What the state belongs to: restoring into another stream is an error.
    std::string fingerprint;  // ShardSet::fingerprint()
    int rank = 0, world_size = 1, buffer_size = 0, refill_batch = 0, row_group_docs = 0;
    bool shuffle = false;
    uint64_t seed = 0;
    // Cursor: the next refill reads document `doc` of row group `group` of this rank's list for `epoch`
    // (group == the list's size: the epoch is done).
    int64_t epoch = 1;
    int64_t group = 0;
    int64_t doc = 0;
    int64_t last_epoch = 1;  // epoch of the last refill
    std::vector<DocRef> buffer;
    // Counters: batches made, tokens placed in rows, tokens lost to cropping.
    int64_t batches = 0;
    int64_t tokens = 0;
    int64_t cropped = 0;

    double cropped_fraction() const { return tokens + cropped ? double(cropped) / double(tokens + cropped) : 0.0; }
    std::string to_json() const;
    // Throws DataError naming `where` and the bad key.
    static LoaderState from_json(const std::string& text, const std::string& where);
    bool operator==(const LoaderState&) const = default;
};

struct RowGroup {
    uint32_t shard = 0;
    uint32_t first_doc = 0;
    uint32_t documents = 0;
    bool operator==(const RowGroup&) const = default;
};

// This rank's row groups in `epoch`, in reading order.
std::vector<RowGroup> rank_row_groups(const ShardSet& shards, const LoaderOptions& options, int64_t epoch);

class BestFitLoader {
public:
    // Throws DataError for invalid options or when this rank gets no documents.
    BestFitLoader(std::shared_ptr<const ShardSet> shards, LoaderOptions options);

    // The next batch, into `out` (its vectors are reused).
    void next(Batch& out);
    Batch next();

    // The state after the batches returned so far.
    LoaderState state() const;
    // Continues from `state`; throws DataError when it belongs to other shards or stream options.
    void restore(const LoaderState& state);

    const LoaderOptions& options() const { return options_; }
    const ShardSet& shards() const { return *shards_; }

private:
    struct Buffered {
        DocRef ref;
        uint32_t length;
        uint64_t begin;
    };
    void refill();
    Buffered buffered(DocRef ref) const;

    std::shared_ptr<const ShardSet> shards_;
    LoaderOptions options_;
    std::vector<RowGroup> plan_;  // row groups of cursor_epoch_
    int64_t cursor_epoch_ = 1, cursor_group_ = 0, cursor_doc_ = 0, last_epoch_ = 1;
    std::vector<Buffered> buffer_;
    int64_t batches_ = 0, tokens_ = 0, cropped_ = 0;
    std::vector<int64_t> row_;
};

// A BestFitLoader on a background thread that keeps `depth` batches ready. state() describes the
// batches the caller has taken, not the ones prepared ahead, so saving it resumes exactly. An error on
// the background thread is rethrown by next().
class PrefetchingLoader {
public:
    explicit PrefetchingLoader(BestFitLoader loader, int depth = 2);
    ~PrefetchingLoader();
    PrefetchingLoader(const PrefetchingLoader&) = delete;
    PrefetchingLoader& operator=(const PrefetchingLoader&) = delete;

    void next(Batch& out);
    Batch next();
    LoaderState state() const;
    void restore(const LoaderState& state);

private:
    void start();
    void stop();
    void run();

    BestFitLoader loader_;
    const size_t depth_;
    mutable std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<std::pair<Batch, LoaderState>> ready_;
    std::vector<Batch> spare_;  // returned buffers for the producer to fill again
    LoaderState taken_;         // state after the batches the caller took
    std::exception_ptr error_;
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace l3lab::data
