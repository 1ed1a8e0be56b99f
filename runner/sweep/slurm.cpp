#include "runner/sweep/slurm.h"

#include <sys/stat.h>

#include <filesystem>
#include <sstream>
#include <stdexcept>

#include "runner/sweep/cell_state.h"
#include "runner/util/atomic_file.h"

namespace fs = std::filesystem;

namespace l3lab::sweep {

namespace {

// Single-quoted for bash: safe for any path or argument.
std::string sh(const std::string& s) {
    std::string out = "'";
    for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

std::string absolute(const std::string& path) { return fs::absolute(path).lexically_normal().string(); }

}  // namespace

std::string array_ranges(const std::vector<int>& v) {
    std::string out;
    for (size_t i = 0; i < v.size();) {
        size_t j = i;
        while (j + 1 < v.size() && v[j + 1] == v[j] + 1) ++j;
        out += (out.empty() ? "" : ",") + std::to_string(v[i]) + (j > i ? "-" + std::to_string(v[j]) : "");
        i = j + 1;
    }
    return out;
}

SlurmScript write_slurm_script(const Sweep& sweep, const SlurmOptions& o) {
    SlurmScript script;
    for (const auto& cell : sweep.cells) {
        CellState state = read_cell_status(sweep, cell).state;
        if (state == CellState::Completed || (state == CellState::Failed && !o.retry_failed)) continue;
        script.cells.push_back(cell.index);
    }
    if (script.cells.empty()) return script;
    script.array = array_ranges(script.cells) + (o.throttle > 0 ? "%" + std::to_string(o.throttle) : "");

    std::string executable = o.executable;
    if (executable.empty()) executable = fs::read_symlink("/proc/self/exe").string();
    const std::string sweep_dir = absolute(sweep.sweep_dir());
    const int tasks = o.gpus_per_cell > 1 ? o.gpus_per_cell : 1;

    std::ostringstream s;
    s << "#!/bin/bash\n"
      << "# Written by 'l3lab sweep slurm' at " << iso_now() << " for sweep " << sweep.name << ": one array task per\n"
      << "# unfinished cell (" << script.cells.size() << "), each running 'l3lab sweep run --cells <index>'.\n"
      << "#SBATCH --job-name=l3lab-" << sweep.name << "\n"
      << "#SBATCH --array=" << script.array << "\n"
      << "#SBATCH --output=" << sweep_dir << "/slurm/%A_%a.out\n"
      << "#SBATCH --open-mode=append\n"
      << "#SBATCH --requeue\n"
      << "#SBATCH --signal=B:USR1@" << o.signal_seconds << "\n"
      << "#SBATCH --nodes=1\n"
      << "#SBATCH --ntasks=" << tasks << "\n";
    if (o.gpus_per_cell > 0) s << "#SBATCH --gpus-per-task=1\n";
    if (o.cpus_per_cell > 0) s << "#SBATCH --cpus-per-task=" << o.cpus_per_cell << "\n";
    if (!o.partition.empty()) s << "#SBATCH --partition=" << o.partition << "\n";
    if (!o.time_limit.empty()) s << "#SBATCH --time=" << o.time_limit << "\n";
    for (const auto& a : o.sbatch_args) s << "#SBATCH " << a << "\n";
    s << "\nset -u\ncd " << sh(fs::current_path().string()) << " || exit 1\n"
      << "L3LAB=" << sh(executable) << "\n"
      << "SWEEP=" << sh(absolute(sweep.source)) << "\n\n"
      << "# The supervisor claims the cell (its lock), resumes it from its newest checkpoint and records the attempt.\n"
      << "\"$L3LAB\" sweep run \"$SWEEP\" --cells \"$SLURM_ARRAY_TASK_ID\"";
    if (tasks > 1) s << " --srun-tasks " << tasks;
    if (o.retry_failed) s << " --retry-failed";
    s << " &\n"
      << "child=$!\n"
      << "# USR1 (--signal, ahead of the time limit) and TERM (preemption, scancel) go to the supervisor, which\n"
      << "# asks the training to checkpoint and exit 3.\n"
      << "trap 'kill -USR1 \"$child\" 2>/dev/null' USR1\n"
      << "trap 'kill -TERM \"$child\" 2>/dev/null' TERM\n"
      << "while kill -0 \"$child\" 2>/dev/null; do wait \"$child\"; done\n"
      << "wait \"$child\"; rc=$?\n"
      << "if [ \"$rc\" -eq 3 ]; then\n"
      << "  echo \"l3lab: cell $SLURM_ARRAY_TASK_ID checkpointed and stopped; requeueing ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\"\n"
      << "  scontrol requeue \"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\"\n"
      << "fi\n"
      << "exit \"$rc\"\n";

    fs::create_directories(o.out_dir);
    fs::create_directories(fs::path(sweep_dir) / "slurm");
    script.path = (fs::path(o.out_dir) / (sweep.name + ".sbatch")).string();
    util::write_file_atomic(script.path, s.str());
    ::chmod(script.path.c_str(), 0755);
    write_manifest(sweep);
    return script;
}

}  // namespace l3lab::sweep
