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
#include "runner/util/fault.h"

namespace fs = std::filesystem;

namespace l3lab::train {

std::string checkpoints_root(const std::string& run_dir) { return (fs::path(run_dir) / "checkpoints").string(); }

std::string checkpoint_name(long long step) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "step-%08lld", step);
    return buf;
}

std::string staging_checkpoint_dir(const std::string& run_dir, long long step) {
    return (fs::path(checkpoints_root(run_dir)) / (".partial-" + checkpoint_name(step))).string();
}

std::string optimizer_file(int rank, int world_size) {
    if (world_size <= 1) return "optimizer.safetensors";
    char buf[64];
    std::snprintf(buf, sizeof buf, "optimizer.rank-%05d-of-%05d.safetensors", rank, world_size);
    return buf;
}

int checkpoint_world_size(const std::string& checkpoint_dir) {
    const fs::path path = fs::path(checkpoint_dir) / "state.json";
    std::ifstream in(path);
    if (!in) throw std::runtime_error(path.string() + ": cannot read");
    try {
        const nlohmann::json state = nlohmann::json::parse(in);
        return state.value("world_size", 1);
    } catch (const std::exception& e) {
        throw std::runtime_error(path.string() + ": " + e.what());
    }
}

std::string begin_checkpoint(const std::string& run_dir, long long step) {
    const fs::path staging = staging_checkpoint_dir(run_dir, step);
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
    fault::point("checkpoint:after-stage");
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
    fault::point("checkpoint:before-done");
    util::write_file_atomic((final_dir / "DONE").string(), done.dump(2) + "\n");
    fault::point("checkpoint:after-done");
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

std::string checkpoint_problem(const std::string& checkpoint_dir) { return check_done(checkpoint_dir, /*verify=*/true); }

std::optional<Checkpoint> newest_checkpoint(const std::string& run_dir, std::vector<std::string>* problems) {
    auto all = complete_checkpoints(run_dir, /*verify=*/true, problems);
    if (all.empty()) return std::nullopt;
    return all.back();
}

void prune_checkpoints(const std::string& run_dir, long long keep_last) {
    auto all = complete_checkpoints(run_dir, /*verify=*/false);
    const size_t keep = static_cast<size_t>(std::max<long long>(1, keep_last));
    for (size_t i = 0; i + keep < all.size(); ++i) {
        // DONE goes first, in one unlink: a crash while the rest is removed leaves an incomplete
        // checkpoint (skipped, removed by the next prune), never a complete-looking one with files missing.
        fs::remove(fs::path(all[i].dir) / "DONE");
        util::fsync_directory(all[i].dir);
        fault::point("checkpoint:mid-prune");
        fs::remove_all(all[i].dir);
    }
    const fs::path root = checkpoints_root(run_dir);
    std::error_code ec;
    if (!fs::is_directory(root, ec)) return;
    // Leftovers of interrupted attempts: staging directories, and step directories without a DONE
    // (renamed into place but never marked, or half pruned). The checkpoint just finished is complete.
    for (const auto& entry : fs::directory_iterator(root)) {
        const std::string name = entry.path().filename().string();
        if (name.rfind(".partial-", 0) == 0 || (step_of(name) && !fs::exists(entry.path() / "DONE")))
            fs::remove_all(entry.path(), ec);
    }
}

}  // namespace l3lab::train
