// `l3lab sweep status` and `l3lab sweep collect`: every cell's state and numbers, read from the files
// (run directories, attempt records, locks) without disturbing a running sweep. No libtorch here.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "runner/sweep/cell_state.h"
#include "runner/sweep/sweep.h"

namespace l3lab::sweep {

struct CellResult {
    const Cell* cell = nullptr;
    CellStatus status;
    std::optional<double> final_val_bpb, min_val_bpb;  // from summary.json, completed cells only
    std::optional<double> core_score;                  // summary.json's core_metric; empty when CORE did not run
    std::string metric;                                // val_bpb (or val_loss without a tokenizer)
    double wall_time_s = 0;                            // the attempts' wall time (or the training time)
    double train_time_s = 0;                           // summary.json's total_training_time
};

// A completed cell whose final metric is missing is reported failed: never a zero.
std::vector<CellResult> gather_results(const Sweep& sweep);

std::string status_table(const Sweep& sweep, const std::vector<CellResult>& results);
std::string status_json(const Sweep& sweep, const std::vector<CellResult>& results);

// <sweep_dir>/results.csv and results.h5 (group /cells, one dataset per column): one row per cell with
// its swept values, sizes, tokens, FLOPs, final and minimum validation bpb, times and state. Missing
// numbers are empty in the CSV and NaN in HDF5. Returns the two paths.
std::pair<std::string, std::string> write_results(const Sweep& sweep, const std::vector<CellResult>& results);

}  // namespace l3lab::sweep
