// `l3lab sweep run`: trains a sweep's cells, K at a time, each as its own `l3lab train` process
// (--run-dir <cell dir> --resume auto), claiming each cell with its lock first. Idempotent: completed
// cells are skipped, interrupted ones resume from their newest complete checkpoint, failed ones are
// retried only when asked, and a cell another process holds is left to it. No libtorch here.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "runner/sweep/sweep.h"

namespace l3lab::sweep {

struct RunOptions {
    int jobs = 1;                      // cells trained at the same time
    bool retry_failed = false;         // rerun failed cells (from their newest checkpoint, if any)
    std::vector<int> cells;            // these cell indices only; empty: every cell
    std::vector<std::string> devices;  // CUDA_VISIBLE_DEVICES of each job slot; empty: left alone
    int srun_tasks = 0;                // > 0: launch each cell with `srun --ntasks=N` (multi-GPU cells in SLURM)
    std::string executable;            // the l3lab executable to start (default: this one)
};

// 0: every selected cell is completed (or being run by another process); 1: a cell failed (or stays
// failed); 3: stopped by SIGTERM/SIGINT/SIGUSR1, forwarded to the training processes, which checkpoint.
int run_sweep(const Sweep& sweep, const RunOptions& options, std::ostream& out);

// "0,3,5-7" -> {0, 3, 5, 6, 7}; throws std::invalid_argument naming the bad part.
std::vector<int> parse_cell_list(const std::string& text, int num_cells);

// The devices to spread `jobs` over when none are given: CUDA_VISIBLE_DEVICES or the GPUs the NVIDIA
// driver lists, when cells train on CUDA; empty otherwise.
std::vector<std::string> detect_devices(const Sweep& sweep);

}  // namespace l3lab::sweep
