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
// A data-parallel run logs on rank 0 (as the reference's print0). On any other rank only lines starting
// with "error" are printed, to stderr and prefixed "[rank R] "; the rest is dropped.
void set_log_rank(int rank);

}  // namespace l3lab::train
