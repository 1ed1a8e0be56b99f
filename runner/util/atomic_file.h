// Durable whole-file writes: write a temporary sibling, fsync it, rename it over the target, fsync the
// directory. A crash leaves either the old file or the new one, never a torn one.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace l3lab::util {

// Throws std::runtime_error("<path>: <reason>") on failure; the target is then unchanged and no
// temporary file is left behind.
void write_file_atomic(const std::string& path, std::string_view content);
// The same for content given in pieces (written in order, never concatenated in memory).
void write_file_atomic(const std::string& path, const std::vector<std::string_view>& pieces);

// fsync a directory, so that entries created or renamed in it survive a crash.
void fsync_directory(const std::string& dir);

}  // namespace l3lab::util
