// What `l3lab --version` reports: our version and git state, the libtorch we were built against and,
// when the libtorch module can be loaded, what the runtime sees (CUDA devices, cuDNN).
#pragma once

#include <string>

namespace l3lab::version {

extern const char* const kVersion;       // project version, e.g. "0.1.0"
extern const char* const kGitSha;        // commit the binary was built from ("unknown" outside git)
extern const bool kGitDirty;             // uncommitted changes at build time
extern const char* const kTorchVersion;  // libtorch the torch module was built against ("" = none)

std::string describe();

}  // namespace l3lab::version
