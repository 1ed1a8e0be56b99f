// `l3lab sweep slurm`: an sbatch job-array script over a sweep's unfinished cells, one array task per
// cell, each running `l3lab sweep run SWEEP --cells $SLURM_ARRAY_TASK_ID` (so the cell lock, the resume
// and the attempt records are those of a local `sweep run`). Requeue on preemption: SLURM sends USR1
// ahead of the time limit, the script forwards it, the training checkpoints and exits 3, and the task
// requeues itself. No libtorch here.
#pragma once

#include <string>
#include <vector>

#include "runner/sweep/sweep.h"

namespace l3lab::sweep {

struct SlurmOptions {
    std::string out_dir;                  // where the script goes
    int throttle = 0;                     // at most this many tasks at once (--array=...%N); 0: no limit
    std::string partition;
    int gpus_per_cell = 0;                // > 1: the cell's ranks are srun tasks, one GPU each
    int cpus_per_cell = 0;                // --cpus-per-task; 0: SLURM's default
    std::string time_limit;               // --time
    int signal_seconds = 120;             // USR1 this long before the time limit
    std::vector<std::string> sbatch_args; // passed through verbatim, one #SBATCH line each
    bool retry_failed = false;            // include failed cells (and rerun them)
    std::string executable;               // the l3lab to run (default: this one)
};

struct SlurmScript {
    std::string path;
    std::vector<int> cells;  // the array indices (= cell indices)
    std::string array;       // the --array value
};

// Writes <out_dir>/<sweep name>.sbatch over the cells that are not completed (failed ones only with
// retry_failed). With nothing to run, `cells` is empty and no script is written.
SlurmScript write_slurm_script(const Sweep& sweep, const SlurmOptions& options);

// "0-3,5,7-9"
std::string array_ranges(const std::vector<int>& sorted_indices);

}  // namespace l3lab::sweep
