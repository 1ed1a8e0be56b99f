// A sweep cell's state lives on disk, so that no process has to stay alive for a sweep to be resumable
// (docs/sweeps.md, "Running"):
//   <sweep_dir>/<cell dir>/                   the cell's run directory (STATUS, checkpoints, metrics)
//   <sweep_dir>/.sweep/<cell dir>.lock        held (an open-file-description lock) while a process runs
//                                             the cell; the kernel drops it when that process dies
//   <sweep_dir>/.sweep/<cell dir>.attempts    one JSON line per attempt: start, end, exit code, error
//   <sweep_dir>/logs/<cell dir>.log           the output of every attempt, appended
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "runner/sweep/sweep.h"

namespace l3lab::sweep {

// pending: never attempted (or its run directory is missing); running: a process holds its lock;
// interrupted: started, not finished, nobody running it (resumable from its checkpoints);
// completed: finished with its final metric; failed: the last attempt failed.
enum class CellState { Pending, Running, Interrupted, Completed, Failed };
const char* to_string(CellState state);

struct Attempt {
    std::string start, end;  // ISO-8601 UTC
    double seconds = 0;
    std::optional<int> exit_code;  // none while running or when the supervisor died first
    std::string host, error;
    long long pid = 0;
};

struct CellStatus {
    CellState state = CellState::Pending;
    long long step = 0;  // last completed optimizer step
    long long num_iterations = 0;
    std::string last_error;
    std::string run_dir;
    bool config_changed = false;  // the run directory's frozen config is not this cell's (id differs)
    std::vector<Attempt> attempts;
};

std::string cell_run_dir(const Sweep& sweep, const Cell& cell);
std::string cell_log_path(const Sweep& sweep, const Cell& cell);

// The state as the files say it, without taking or disturbing any lock. `holding_lock`: the caller holds
// the cell's lock, so nobody else is running it (its state is never Running).
CellStatus read_cell_status(const Sweep& sweep, const Cell& cell, bool holding_lock = false);

// An exclusive claim on one cell: an open-file-description lock on its lock file, released when every
// descriptor of it is closed (the claim is inherited by the training process the supervisor starts, so
// it lasts as long as the training does, even if the supervisor is killed).
class CellLock {
public:
    // Tries to claim the cell; nullopt when another process holds it.
    static std::optional<CellLock> try_acquire(const Sweep& sweep, const Cell& cell);
    CellLock(CellLock&&) noexcept;
    CellLock& operator=(CellLock&&) noexcept;
    CellLock(const CellLock&) = delete;
    ~CellLock();
    int fd() const { return fd_; }

private:
    explicit CellLock(int fd) : fd_(fd) {}
    int fd_ = -1;
};

// True when some process holds the cell's lock (F_OFD_GETLK: asks without taking it).
bool cell_locked(const Sweep& sweep, const Cell& cell);

// Attempt records: a start line when a training process is launched, an end line when it has exited.
void record_attempt_start(const Sweep& sweep, const Cell& cell, long long pid);
void record_attempt_end(const Sweep& sweep, const Cell& cell, int exit_code, double seconds, const std::string& error);
std::string iso_now();

// The sweep's manifest.yaml: cell index -> id, run directory, overrides (written atomically; the same
// content from every writer of the same sweep).
void write_manifest(const Sweep& sweep);

}  // namespace l3lab::sweep
