#include "runner/run/run_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "runner/data/sha256.h"
#include "runner/util/atomic_file.h"
#include "runner/version.h"

namespace fs = std::filesystem;

namespace l3lab::run {

std::string sha256_hex(const std::string& text) { return data::sha256_hex(text); }

std::string timestamp_now() {
    std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", &local);
    return buf;
}

static bool make_dir_exclusive(const fs::path& dir) {
    if (::mkdir(dir.c_str(), 0755) == 0) return true;
    if (errno == EEXIST) return false;
    throw std::runtime_error(dir.string() + ": cannot create the run directory: " + std::strerror(errno));
}

std::string create_run_dir(const std::string& output_dir, const std::string& name, const std::string& resolved_yaml,
                           const std::optional<std::string>& explicit_dir) {
    if (explicit_dir) {
        fs::path dir(*explicit_dir);
        if (dir.has_parent_path()) fs::create_directories(dir.parent_path());
        if (!make_dir_exclusive(dir))
            throw std::runtime_error(dir.string() + ": already exists (resume it with 'l3lab resume " + dir.string() +
                                     "' or choose another --run-dir)");
        return dir.string();
    }
    fs::path parent = fs::path(output_dir) / name;
    fs::create_directories(parent);
    const std::string base = timestamp_now() + "-" + sha256_hex(resolved_yaml).substr(0, 8);
    for (int attempt = 1; attempt < 1000; ++attempt) {
        fs::path dir = parent / (attempt == 1 ? base : base + "-" + std::to_string(attempt));
        if (make_dir_exclusive(dir)) return dir.string();
    }
    throw std::runtime_error(parent.string() + ": could not find a free run directory name");
}

static std::string env(const char* name) {
    const char* v = std::getenv(name);
    return v ? v : "";
}

void initialise_run_dir(const std::string& run_dir, const std::string& resolved_yaml,
                        const std::vector<std::string>& overrides, const std::string& experiment_path,
                        const std::vector<std::string>& command_line) {
    const fs::path dir(run_dir);
    util::write_file_atomic((dir / "config.yaml").string(), resolved_yaml);
    std::string overrides_yaml = "# the command-line overrides of this run, in order\n";
    if (overrides.empty()) overrides_yaml += "[]\n";
    for (const auto& o : overrides) {
        nlohmann::json quoted = o;  // a JSON string is a valid YAML double-quoted scalar
        overrides_yaml += "- " + quoted.dump() + "\n";
    }
    util::write_file_atomic((dir / "overrides.yaml").string(), overrides_yaml);

    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    nlohmann::ordered_json p;
    p["l3lab_version"] = version::kVersion;
    p["git_sha"] = version::kGitSha;
    p["git_dirty"] = version::kGitDirty;
    p["libtorch_version"] = version::kTorchVersion;
    p["created"] = timestamp_now();
    p["host"] = host;
    p["pid"] = ::getpid();
    p["cwd"] = fs::current_path().string();
    p["experiment"] = experiment_path;
    p["command_line"] = command_line;
    p["config_sha256"] = sha256_hex(resolved_yaml);
    p["slurm"] = {{"job_id", env("SLURM_JOB_ID")},
                  {"array_job_id", env("SLURM_ARRAY_JOB_ID")},
                  {"array_task_id", env("SLURM_ARRAY_TASK_ID")},
                  {"procid", env("SLURM_PROCID")}};
    util::write_file_atomic((dir / "provenance.json").string(), p.dump(2) + "\n");
    write_status(run_dir, {"created", 0, std::nullopt, ""});
}

static std::string status_json(const Status& s) {
    nlohmann::ordered_json j;
    j["state"] = s.state;
    j["step"] = s.step;
    j["exit_code"] = s.exit_code ? nlohmann::ordered_json(*s.exit_code) : nlohmann::ordered_json(nullptr);
    j["last_error"] = s.last_error;
    j["updated"] = timestamp_now();
    return j.dump(2) + "\n";
}

void write_status(const std::string& run_dir, const Status& s) {
    util::write_file_atomic((fs::path(run_dir) / "STATUS").string(), status_json(s));
}

std::string write_status_best_effort(const std::string& run_dir, const Status& s) {
    const std::string text = status_json(s);
    const fs::path path = fs::path(run_dir) / "STATUS";
    try {
        util::write_file_atomic(path.string(), text);
        return "";
    } catch (const std::exception& e) {
        // A full disk has no room for the temporary copy; truncating STATUS frees its own blocks, which
        // the rewrite then takes again. Not atomic, but only taken when the atomic write is impossible.
        int fd = ::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
        bool ok = fd >= 0;
        for (size_t done = 0; ok && done < text.size();) {
            ssize_t n = ::write(fd, text.data() + done, text.size() - done);
            if (n < 0 && errno == EINTR) continue;
            ok = n > 0;
            if (ok) done += static_cast<size_t>(n);
        }
        ok = ok && ::fsync(fd) == 0;
        if (fd >= 0) ::close(fd);
        return ok ? "" : e.what();
    }
}

std::optional<Status> read_status(const std::string& run_dir) {
    std::ifstream in(fs::path(run_dir) / "STATUS");
    if (!in) return std::nullopt;
    try {
        nlohmann::json j = nlohmann::json::parse(in);
        Status s;
        s.state = j.at("state").get<std::string>();
        s.step = j.value("step", 0LL);
        if (j.contains("exit_code") && !j["exit_code"].is_null()) s.exit_code = j["exit_code"].get<int>();
        s.last_error = j.value("last_error", "");
        return s;
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

bool is_run_dir(const std::string& dir) {
    return fs::exists(fs::path(dir) / "config.yaml") && fs::exists(fs::path(dir) / "STATUS");
}

}  // namespace l3lab::run
