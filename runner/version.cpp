#include "runner/version.h"

#include "runner/torch_module.h"

namespace l3lab::version {

std::string describe() {
    std::string out = std::string("l3lab ") + kVersion + "\n";
    out += std::string("git: ") + kGitSha + (kGitDirty ? " (dirty)" : "") + "\n";
    if (kTorchVersion[0] == '\0') {
        out += "libtorch: not built (configure with L3LAB_WITH_TORCH=ON)\n";
        return out;
    }
    out += std::string("libtorch (built against): ") + kTorchVersion + "\n";
    std::string error;
    if (const TorchModule* module = torch_module(&error)) {
        out += module->runtime_info();
    } else {
        out += "libtorch runtime: unavailable (" + error + ")\n";
    }
    return out;
}

}  // namespace l3lab::version
