// The run directory (PRODUCT.md §4): runs/<name>/<YYYYmmdd-HHMMSS>-<cfghash8>/ made with an exclusive
// mkdir, holding the frozen config, overrides, provenance, STATUS and everything the run writes.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace l3lab::run {

// Lifecycle written to STATUS (JSON): created -> running -> completed | failed | interrupted.
struct Status {
    std::string state;         // created, running, completed, failed, interrupted
    long long step = 0;        // last completed optimizer step
    std::optional<int> exit_code;
    std::string last_error;
};

std::string sha256_hex(const std::string& text);
std::string timestamp_now();  // local time, YYYYmmdd-HHMMSS

// Creates the directory for a new run. With `explicit_dir` it is exactly that path (which must not
// exist yet); otherwise <output_dir>/<name>/<timestamp>-<sha256(resolved_yaml)[:8]>, with -2, -3, ...
// appended if another run took the name in the same second. Throws std::runtime_error.
std::string create_run_dir(const std::string& output_dir, const std::string& name, const std::string& resolved_yaml,
                           const std::optional<std::string>& explicit_dir);

// Writes config.yaml, overrides.yaml, provenance.json and STATUS (created) into a fresh run dir.
void initialise_run_dir(const std::string& run_dir, const std::string& resolved_yaml,
                        const std::vector<std::string>& overrides, const std::string& experiment_path,
                        const std::vector<std::string>& command_line);

void write_status(const std::string& run_dir, const Status& status);
// For failure paths: never throws. Tries write_status, then (a full disk has no room for its temporary
// file) rewrites STATUS in place. Returns "" once STATUS holds `status`, else why it could not be written.
std::string write_status_best_effort(const std::string& run_dir, const Status& status);
std::optional<Status> read_status(const std::string& run_dir);

// True when `dir` looks like a run directory (has config.yaml and STATUS).
bool is_run_dir(const std::string& dir);

}  // namespace l3lab::run
