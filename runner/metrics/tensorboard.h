// TensorBoard event files of a run (docs/tracking.md): <run>/tb/events.out.tfevents.*, written natively.
// A file is a sequence of records: uint64 length, uint32 masked CRC-32C of the length, the data (one
// serialized Event protobuf), uint32 masked CRC-32C of the data; the first Event names the format
// ("brain.Event:2"). Scalars are Summary values with simple_value, texts tensors of the "text" plugin.
// protobuf-c (runner/metrics/tensorboard.proto, compiled by protoc-c) and Boost.CRC stay inside.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "runner/metrics/metrics.h"

namespace l3lab::metrics {

inline constexpr const char* kTensorBoardDir = "tb";

// A record kept from before a resume, with the wall time it was logged at (0: unknown).
struct TimedRecord {
    enum class Kind { Train, Val, Sample, Core } kind = Kind::Train;
    TrainRecord train;
    ValRecord val;
    Sample sample;
    CoreRecord core;
    double wall_time = 0;
};

// The scalars of one train record, as (tag, value) pairs: "train/<column>" for every column.
std::vector<std::pair<std::string, double>> train_scalars(const TrainRecord& record);

class TensorBoardWriter {
public:
    // Writes a new event file into `dir` (made if missing) holding the run's texts (config, provenance,
    // its L3 allocation summary) and every record of `kept` (what a resumed run keeps), fsyncs it, and
    // only then removes the directory's older event files: a reader sees each step once. Throws
    // std::runtime_error naming the file when it cannot.
    TensorBoardWriter(const std::filesystem::path& dir, const Attributes& attributes,
                      const std::vector<TimedRecord>& kept);
    ~TensorBoardWriter();
    TensorBoardWriter(const TensorBoardWriter&) = delete;
    TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

    void train(const TrainRecord& record, double wall_time);
    void val(const ValRecord& record, double wall_time);
    void sample(const Sample& sample, double wall_time);
    // "core/metric", and per task "core/<task>/centered" and "core/<task>/accuracy".
    void core(const CoreRecord& record, double wall_time);
    // Appends what is buffered to the file (write(2), no fsync: a crash may tear the last record, which
    // TensorBoard's reader skips). Throws std::runtime_error on a failed write.
    void flush();
    // flush() when `interval` has passed since the last one (a live TensorBoard sees a step within it).
    void flush_every(std::chrono::milliseconds interval);
    const std::filesystem::path& path() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// The masked CRC-32C of TFRecord framing (exposed for tests).
uint32_t masked_crc32c(const void* data, size_t size);

}  // namespace l3lab::metrics
