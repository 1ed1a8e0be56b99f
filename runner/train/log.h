// The trainer's console and train.log (spdlog), behind a plain interface so that libtorch translation
// units never include fmt or spdlog headers (the torch wheel bundles its own, incompatible fmt).
#pragma once

#include <string>

namespace l3lab::train {

// Opens <run_dir>/train.log (appending) next to stdout. Safe to call again after close_log().
void open_log(const std::string& run_dir);
void close_log();
// One line to stdout and train.log, flushed. Before open_log() it goes to stdout only.
void log_line(const std::string& line);
void log_warning(const std::string& line);
// A fatal error, printed by every rank: in a data-parallel run prefixed "[rank R] " (to stderr on ranks
// other than 0, to stdout and train.log on rank 0); otherwise as log_line.
void log_error(const std::string& line);
// A data-parallel run logs on rank 0 (as the reference's print0). On any other rank only lines starting
// with "error" (and log_error's) are printed, to stderr and prefixed "[rank R] "; the rest is dropped.
// `world_size` > 1 marks a data-parallel run (its errors carry the rank on rank 0 too).
void set_log_rank(int rank, int world_size = 2);

}  // namespace l3lab::train
