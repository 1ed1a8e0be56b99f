// The l3lab command line: one entry point shared by main() and the tests.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace l3lab::cli {

// Exit codes (PRODUCT.md §2).
enum ExitCode : int { kOk = 0, kRuntimeFailure = 1, kUsageOrConfigError = 2, kInterrupted = 3 };

// Runs `l3lab args...` (args excludes the program name). Never throws.
int run(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace l3lab::cli
