// metrics.h5, the HDF5 view of the sidecar: groups /train (one column per TrainRecord field, see
// columns.h), /val (step, bpb, loss), /samples (step, prompt, text) and /core (step, core_metric: a row
// per CORE evaluation; /core/tasks: step, task, accuracy, centered: a row per task of each evaluation),
// each column a 1-D chunked dataset with an unlimited dimension (step, tokens, epoch: int64; the rest
// float64; strings variable-length UTF-8); root attributes config_yaml, provenance_json (strings) and l3lab_metrics_version (int).
// Files use the latest format (superblock 3), which HDF5 1.10's SWMR needs.
#pragma once

#include <filesystem>
#include <memory>
#include <span>

#include "runner/metrics/metrics.h"

namespace l3lab::metrics::detail {

class H5View {
public:
    // Creates (truncating) `path` with the schema, the attributes and every record of `log`.
    static std::unique_ptr<H5View> create(const std::filesystem::path& path, const MetricsLog& log);
    ~H5View();  // closes without reporting errors; call close() to see them

    // From here on the file takes appends only, and SWMR readers may open it while it is written.
    void start_swmr_write();
    // Extends every column by the new rows, then flushes the file so readers see them.
    void append(std::span<const TrainRecord> train, std::span<const ValRecord> val, std::span<const Sample> samples,
                std::span<const CoreRecord> core);
    void close();

private:
    struct Handles;
    explicit H5View(const std::filesystem::path& path);
    std::filesystem::path path_;
    std::unique_ptr<Handles> h_;
};

}  // namespace l3lab::metrics::detail
