// A training run's metrics, in two files of the run directory (docs/metrics.md):
//   metrics.jsonl  append-only JSON lines, written with write(2) and fsync'd at every flush: the source
//                  of truth, from which everything else is rebuilt;
//   metrics.h5     an HDF5 view of it (groups /train, /val, /samples, /core; config and provenance as root
//                  attributes), written in SWMR mode so h5py/pandas read it while the run is live and
//                  after a crash (`h5py.File(path, "r", swmr=True)`).
// Records are buffered in memory and reach both files at a flush: at least every flush_interval while
// records arrive, at every val(), core() and sample(), at flush() and close(). A SIGKILL at any moment loses
// only the records since the last flush; both files then still hold every record before it.
// No HDF5 type appears here: the HDF5 C API stays inside the library.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace l3lab::metrics {

inline constexpr const char* kSidecarFile = "metrics.jsonl";
inline constexpr const char* kViewFile = "metrics.h5";
inline constexpr const char* kLockFile = "metrics.lock";  // flock'd by the one writer of a run directory

// One optimizer step, as nanochat's base_train.py logs it. Counters are totals since step 0.
struct TrainRecord {
    int64_t step = 0;
    double loss = 0;      // debiased EMA of the training loss (beta 0.9), what the log prints
    double raw_loss = 0;  // this step's loss
    double lrm = 0;       // learning-rate multiplier of the schedule
    double dt = 0;        // seconds this step took
    double tok_per_sec = 0;
    double mfu = 0;      // percent of the device's peak bf16 FLOP/s
    int64_t tokens = 0;  // tokens trained on, this step included
    double flops = 0;    // training FLOPs, this step included (can pass 2^63, hence a double)
    int64_t epoch = 0;
    double elapsed = 0;  // seconds of training, this step included
    int64_t skipped = 0;  // 1: a step with a NaN/inf loss or gradient, not applied (train.skip_nonfinite_steps)
    bool operator==(const TrainRecord&) const = default;
};

// One evaluation on the validation tokens, at the top of loop step `step` (before that step trains).
struct ValRecord {
    int64_t step = 0;
    double bpb = 0;              // bits per byte
    std::optional<double> loss;  // mean per-token loss, when the evaluator computed it (NaN in HDF5)
    bool operator==(const ValRecord&) const = default;
};

// One task of a CORE evaluation: its accuracy (the mean of the examples' verdicts) and its accuracy
// centred against the task's random baseline, as nanochat's evaluate_core reports them.
struct CoreTaskRecord {
    std::string task;  // the bundle's label, e.g. "hellaswag_zeroshot"
    double accuracy = 0, centered = 0;
    bool operator==(const CoreTaskRecord&) const = default;
};

// One CORE evaluation at the top of loop step `step`: the metric (the mean of the centred accuracies)
// and every task, in the bundle's order.
struct CoreRecord {
    int64_t step = 0;
    double core_metric = 0;
    std::vector<CoreTaskRecord> tasks;
    bool operator==(const CoreRecord&) const = default;
};

// One generated text. Strings are stored as UTF-8: invalid bytes and NULs become U+FFFD.
struct Sample {
    int64_t step = 0;
    std::string prompt, text;
    bool operator==(const Sample&) const = default;
};

// Root attributes of metrics.h5 (and the first line of metrics.jsonl): the run's resolved config.yaml
// and provenance.json, verbatim.
struct Attributes {
    std::string config_yaml, provenance_json;
    bool operator==(const Attributes&) const = default;
};

// Everything a run has logged, in the order it was logged.
struct MetricsLog {
    Attributes attributes;
    std::vector<TrainRecord> train;
    std::vector<ValRecord> val;
    std::vector<Sample> samples;
    std::vector<CoreRecord> core;
    bool operator==(const MetricsLog&) const = default;
};

// Every failure: "<path>: <problem>", with the step or line where one applies.
class MetricsError : public std::runtime_error {
public:
    MetricsError(const std::filesystem::path& path, const std::string& problem);
};

struct WriterOptions {
    // nullopt: a new run; the run directory must not hold metrics yet.
    // k: a resumed run whose loop starts again at step k (the step of the checkpoint it loaded). Every
    // record with step >= k (train, val, CORE and samples) is dropped, because the resumed loop logs it again;
    // k = 0 starts over. Checkpoint saving must flush() first so that no step below k is missing.
    std::optional<int64_t> resume_at_step;
    std::chrono::milliseconds flush_interval{10'000};
    // TensorBoard event files in <run_dir>/tb (docs/tracking.md): rebuilt from the kept records at open,
    // then appended to as records arrive, written at least every tensorboard_flush_interval.
    bool tensorboard = false;
    std::chrono::milliseconds tensorboard_flush_interval{2'000};
};

// The one writer of a run directory's metrics (rank 0). Opening takes an exclusive flock on
// metrics.lock, rewrites metrics.jsonl atomically (header with `attributes`, then the kept records)
// and rebuilds metrics.h5 from it, so a view damaged or left stale by a crash is replaced.
// Steps must increase: train, val and CORE strictly, samples weakly (several prompts per step).
class MetricsWriter {
public:
    MetricsWriter(const std::filesystem::path& run_dir, const Attributes& attributes,
                  const WriterOptions& options = {});
    ~MetricsWriter();  // close(), reporting nothing: call close() to see its errors
    MetricsWriter(MetricsWriter&&) noexcept;
    MetricsWriter& operator=(MetricsWriter&&) noexcept;

    void train(const TrainRecord& record);  // flushes when flush_interval has passed since the last flush
    void val(const ValRecord& record);      // flushes
    void sample(const Sample& sample);      // flushes
    void core(const CoreRecord& record);    // flushes
    // Writes the buffered records to metrics.jsonl (fsync'd), then to metrics.h5 (HDF5-flushed). After an
    // HDF5 failure (reported once, as a MetricsError) the view is abandoned and only the sidecar goes on;
    // recover() rebuilds the view later.
    void flush();
    void close();  // flush, close metrics.h5 (plain HDF5 readers can open it from then on), unlock

    std::optional<int64_t> last_train_step() const;  // including records kept from before a resume

private:
    struct Impl;
    Impl& live() const;  // throws once closed
    std::unique_ptr<Impl> impl_;
};

// The records of metrics.jsonl that reached the file completely (a line torn by a crash is ignored).
MetricsLog read_metrics(const std::filesystem::path& run_dir);

// The records of an HDF5 view. Opens with SWMR read access, so it reads a live, crashed or closed file;
// columns that a live writer has extended unevenly are cut to the shortest.
MetricsLog read_view(const std::filesystem::path& h5_path);

// Rebuilds RUN_DIR/metrics.h5 from metrics.jsonl as a closed file that any HDF5 reader opens. Refuses
// while a writer holds the run directory. Returns what the view now holds.
MetricsLog recover(const std::filesystem::path& run_dir);

}  // namespace l3lab::metrics
