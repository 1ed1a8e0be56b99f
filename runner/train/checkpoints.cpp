#include "runner/train/checkpoints.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "runner/data/sha256.h"
#include "runner/util/atomic_file.h"

namespace fs = std::filesystem;

namespace l3lab::train {

std::string checkpoints_root(const std::string& run_dir) { return (fs::path(run_dir) / "checkpoints").string(); }

std::string checkpoint_name(long long step) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "step-%08lld", step);
    return buf;
}

std::string begin_checkpoint(const std::string& run_dir, long long step) {
    fs::path staging = fs::path(checkpoints_root(run_dir)) / (".partial-" + checkpoint_name(step));
    fs::remove_all(staging);
    fs::create_directories(staging);
    return staging.string();
}

static void fsync_file(const fs::path& file) {
    int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ::fsync(fd) != 0) {
        if (fd >= 0) ::close(fd);
        throw std::runtime_error(file.string() + ": cannot fsync");
    }
    ::close(fd);
}

std::string finish_checkpoint(const std::string& run_dir, long long step, const std::string& staging_dir) {
    const fs::path root = checkpoints_root(run_dir);
    const fs::path final_dir = root / checkpoint_name(step);
    nlohmann::ordered_json done;
    done["step"] = step;
    done["files"] = nlohmann::ordered_json::object();
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(staging_dir))
        if (entry.is_regular_file()) files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    for (const auto& file : files) {
        fsync_file(file);
        done["files"][file.filename().string()] = data::sha256_file(file.string());
    }
    util::fsync_directory(staging_dir);
    // A checkpoint of the same step left by an interrupted attempt is replaced whole.
    if (fs::exists(final_dir)) fs::remove_all(final_dir);
    fs::rename(staging_dir, final_dir);
    util::fsync_directory(root.string());
    util::write_file_atomic((final_dir / "DONE").string(), done.dump(2) + "\n");
    return final_dir.string();
}

static std::optional<long long> step_of(const std::string& name) {
    if (name.rfind("step-", 0) != 0 || name.size() <= 5) return std::nullopt;
    const std::string digits = name.substr(5);
    if (digits.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
    return std::stoll(digits);
}

// Empty when the checkpoint is good; otherwise what is wrong with it.
static std::string check_done(const fs::path& dir, bool verify) {
    std::ifstream in(dir / "DONE");
    if (!in) return "no DONE marker (incomplete)";
    nlohmann::json done;
    try {
        done = nlohmann::json::parse(in);
    } catch (const std::exception& e) {
        return std::string("unreadable DONE marker: ") + e.what();
    }
    if (!done.contains("files") || !done["files"].is_object() || done["files"].empty()) return "DONE lists no files";
    for (const auto& [file, sha] : done["files"].items()) {
        const fs::path path = dir / file;
        if (!fs::exists(path)) return file + " is missing";
        if (verify) {
            try {
                if (data::sha256_file(path.string()) != sha.get<std::string>()) return file + " does not match its checksum";
            } catch (const std::exception& e) {
                return file + ": " + e.what();
            }
        }
    }
    return "";
}

std::vector<Checkpoint> complete_checkpoints(const std::string& run_dir, bool verify, std::vector<std::string>* problems) {
    std::vector<Checkpoint> out;
    const fs::path root = checkpoints_root(run_dir);
    std::error_code ec;
    if (!fs::is_directory(root, ec)) return out;
    for (const auto& entry : fs::directory_iterator(root)) {
        auto step = step_of(entry.path().filename().string());
        if (!step || !entry.is_directory()) continue;
        const std::string problem = check_done(entry.path(), verify);
        if (problem.empty()) out.push_back({*step, entry.path().string()});
        else if (problems) problems->push_back(entry.path().string() + ": " + problem);
    }
    std::sort(out.begin(), out.end(), [](const Checkpoint& a, const Checkpoint& b) { return a.step < b.step; });
    return out;
}

std::optional<Checkpoint> newest_checkpoint(const std::string& run_dir, std::vector<std::string>* problems) {
    auto all = complete_checkpoints(run_dir, /*verify=*/true, problems);
    if (all.empty()) return std::nullopt;
    return all.back();
}

void prune_checkpoints(const std::string& run_dir, long long keep_last) {
    auto all = complete_checkpoints(run_dir, /*verify=*/false);
    const size_t keep = static_cast<size_t>(std::max<long long>(1, keep_last));
    for (size_t i = 0; i + keep < all.size(); ++i) fs::remove_all(all[i].dir);
    const fs::path root = checkpoints_root(run_dir);
    std::error_code ec;
    if (!fs::is_directory(root, ec)) return;
    for (const auto& entry : fs::directory_iterator(root))
        if (entry.path().filename().string().rfind(".partial-", 0) == 0) fs::remove_all(entry.path(), ec);
}

}  // namespace l3lab::train
