#include "runner/train/nanochat_files.h"

#include <cstdio>
#include <filesystem>
#include <regex>
#include <stdexcept>

namespace fs = std::filesystem;

namespace l3lab::train {

namespace {
const std::regex kModelFile(R"(model_(\d+)\.pt)");
}

bool nanochat_init_path(const std::string& path) {
    std::error_code ec;
    return (path.size() > 3 && path.compare(path.size() - 3, 3, ".pt") == 0) || fs::is_directory(path, ec);
}

bool is_nanochat_checkpoint(const std::string& path) {
    std::error_code ec;
    if (fs::is_regular_file(path, ec)) return fs::path(path).extension() == ".pt";
    if (!fs::is_directory(path, ec)) return false;
    for (const auto& entry : fs::directory_iterator(path, ec))
        if (std::regex_match(entry.path().filename().string(), kModelFile)) return true;
    return false;
}

std::string nanochat_model_file(const std::string& path, long long step) {
    std::error_code ec;
    if (!fs::is_directory(path, ec)) {
        if (!fs::exists(path, ec)) throw std::runtime_error(path + ": no such file or directory");
        return path;
    }
    if (step >= 0) {
        char name[32];
        std::snprintf(name, sizeof name, "model_%06lld.pt", step);
        const fs::path p = fs::path(path) / name;
        if (!fs::exists(p, ec)) throw std::runtime_error(p.string() + ": no such checkpoint");
        return p.string();
    }
    long long best = -1;
    std::string best_path;
    for (const auto& entry : fs::directory_iterator(path, ec)) {
        std::smatch m;
        const std::string name = entry.path().filename().string();
        if (std::regex_match(name, m, kModelFile) && std::stoll(m[1]) > best) {
            best = std::stoll(m[1]);
            best_path = entry.path().string();
        }
    }
    if (best < 0) throw std::runtime_error(path + ": no model_<step>.pt in this directory (a nanochat checkpoint directory has them)");
    return best_path;
}

std::string nanochat_meta_file(const std::string& model_file) {
    const fs::path p(model_file);
    std::string stem = p.stem().string();  // model_000010
    if (stem.rfind("model_", 0) == 0) stem = stem.substr(6);
    return (p.parent_path() / ("meta_" + stem + ".json")).string();
}

}  // namespace l3lab::train
