#include "runner/dist/launch_env.h"

#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <vector>

#include "runner/config/errors.h"

namespace l3lab::dist {

namespace {

[[noreturn]] void bad(const std::string& variable, const std::string& message) {
    throw config::ConfigException({{{"<environment>", 0, 0}, variable, message}});
}

int integer(const Environment& env, const std::string& name, int min, int max) {
    const std::string text = *env(name);
    size_t used = 0;
    long long v = 0;
    try {
        v = std::stoll(text, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used == 0 || used != text.size()) bad(name, "'" + text + "' is not an integer");
    if (v < min || v > max)
        bad(name, text + " is out of range [" + std::to_string(min) + ", " + std::to_string(max) + "]");
    return static_cast<int>(v);
}

long long integer_or(const Environment& env, const std::string& name, long long fallback) {
    if (!env(name)) return fallback;
    return integer(env, name, 0, 2147483647);
}

bool on_path(const std::string& program) {
    const char* path = std::getenv("PATH");
    if (!path) return false;
    std::string all = path;
    size_t start = 0;
    while (start <= all.size()) {
        size_t end = all.find(':', start);
        if (end == std::string::npos) end = all.size();
        const std::filesystem::path candidate = std::filesystem::path(all.substr(start, end - start)) / program;
        if (::access(candidate.c_str(), X_OK) == 0) return true;
        start = end + 1;
    }
    return false;
}

// `scontrol show hostnames LIST | head -1` when scontrol exists (it knows every form SLURM writes),
// else the parser below.
std::string default_first_host(const std::string& nodelist) {
    bool plain = !nodelist.empty();
    for (char c : nodelist)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == ',' ||
              c == '[' || c == ']'))
            plain = false;
    if (plain && on_path("scontrol")) {
        const std::string command = "scontrol show hostnames '" + nodelist + "' 2>/dev/null";
        if (FILE* pipe = ::popen(command.c_str(), "r")) {
            char line[512];
            std::string first;
            if (std::fgets(line, sizeof line, pipe)) first = line;
            while (std::fgets(line, sizeof line, pipe)) {
            }
            const int status = ::pclose(pipe);
            while (!first.empty() && (first.back() == '\n' || first.back() == '\r')) first.pop_back();
            if (status == 0 && !first.empty()) return first;
        }
    }
    return first_host_of_nodelist(nodelist);
}

}  // namespace

std::optional<std::string> process_environment(const std::string& name) {
    const char* v = std::getenv(name.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
}

std::string LaunchEnv::describe() const {
    if (!distributed()) return "one process";
    return "rank " + std::to_string(rank) + " of " + std::to_string(world_size) + " (" + launcher + ", store " +
           master_addr + ":" + std::to_string(master_port) + ")";
}

std::string first_host_of_nodelist(const std::string& nodelist) {
    // The first entry at bracket depth 0.
    std::string entry;
    int depth = 0;
    for (char c : nodelist) {
        if (c == '[') ++depth;
        if (c == ']') --depth;
        if (depth < 0) throw std::invalid_argument("unbalanced ']' in the node list '" + nodelist + "'");
        if (c == ',' && depth == 0) break;
        entry += c;
    }
    if (depth != 0) throw std::invalid_argument("unbalanced '[' in the node list '" + nodelist + "'");
    if (entry.empty()) throw std::invalid_argument("empty node list");
    // Each bracket group contributes its first value: "n[01-04,7]" -> "n01".
    std::string host;
    for (size_t i = 0; i < entry.size();) {
        if (entry[i] != '[') {
            host += entry[i++];
            continue;
        }
        const size_t close = entry.find(']', i);
        const std::string group = entry.substr(i + 1, close - i - 1);
        const std::string first = group.substr(0, group.find_first_of(",-"));
        if (first.empty()) throw std::invalid_argument("empty range in the node list '" + nodelist + "'");
        host += first;
        i = close + 1;
    }
    return host;
}

int slurm_port(long long job_id, long long step_id) {
    const long long mixed = (31 * (job_id % 1000003) + (step_id % 20000)) % 20000;
    return static_cast<int>(20000 + (mixed < 0 ? mixed + 20000 : mixed));
}

LaunchEnv read_launch_env(const Environment& env, const std::function<std::string(const std::string&)>& first_host) {
    LaunchEnv e;
    if (env("RANK") || env("WORLD_SIZE")) {
        // torchrun (or any launcher speaking its protocol)
        for (const char* name : {"RANK", "WORLD_SIZE"})
            if (!env(name)) bad(name, "is unset while " + std::string(name[0] == 'R' ? "WORLD_SIZE" : "RANK") +
                                          " is set; launch with torchrun, or unset both");
        e.launcher = "torchrun";
        e.world_size = integer(env, "WORLD_SIZE", 1, 1 << 20);
        e.rank = integer(env, "RANK", 0, e.world_size - 1);
        e.local_rank = env("LOCAL_RANK") ? integer(env, "LOCAL_RANK", 0, 1 << 20) : 0;
        if (!e.distributed()) return LaunchEnv{};
        if (!env("MASTER_ADDR") || env("MASTER_ADDR")->empty()) bad("MASTER_ADDR", "is unset (torchrun sets it)");
        if (!env("MASTER_PORT")) bad("MASTER_PORT", "is unset (torchrun sets it)");
        e.master_addr = *env("MASTER_ADDR");
        e.master_port = integer(env, "MASTER_PORT", 1, 65535);
        e.agent_store = env("TORCHELASTIC_USE_AGENT_STORE").value_or("") == "True";
        e.store_prefix = "torchrun/" + env("TORCHELASTIC_RUN_ID").value_or("none") + "/attempt-" +
                         env("TORCHELASTIC_RESTART_COUNT").value_or("0");
        return e;
    }
    // srun: SLURM_STEP_NUM_TASKS marks a task started by srun (a batch script's own shell has SLURM_PROCID
    // and SLURM_NTASKS of the whole job, but it is one process).
    if (env("SLURM_PROCID") && env("SLURM_STEP_NUM_TASKS")) {
        e.launcher = "slurm";
        e.world_size = integer(env, "SLURM_STEP_NUM_TASKS", 1, 1 << 20);
        e.rank = integer(env, "SLURM_PROCID", 0, e.world_size - 1);
        e.local_rank = env("SLURM_LOCALID") ? integer(env, "SLURM_LOCALID", 0, 1 << 20) : 0;
        if (!e.distributed()) return LaunchEnv{};
        const long long job = integer_or(env, "SLURM_JOB_ID", -1), step = integer_or(env, "SLURM_STEP_ID", 0);
        if (env("MASTER_ADDR") && !env("MASTER_ADDR")->empty()) {
            e.master_addr = *env("MASTER_ADDR");
        } else {
            std::string list_var;
            for (const char* name : {"SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"})
                if (env(name) && !env(name)->empty()) {
                    list_var = name;
                    break;
                }
            if (list_var.empty()) bad("SLURM_JOB_NODELIST", "is unset: cannot find rank 0's host (or set MASTER_ADDR)");
            try {
                e.master_addr = first_host ? first_host(*env(list_var)) : default_first_host(*env(list_var));
            } catch (const std::invalid_argument& err) {
                bad(list_var, err.what());
            }
        }
        if (env("MASTER_PORT")) {
            e.master_port = integer(env, "MASTER_PORT", 1, 65535);
        } else {
            if (job < 0) bad("SLURM_JOB_ID", "is unset: cannot derive the rendezvous port (or set MASTER_PORT)");
            e.master_port = slurm_port(job, step);
        }
        e.store_prefix = "slurm/" + std::to_string(job) + "." + std::to_string(step);
        return e;
    }
    return e;
}

}  // namespace l3lab::dist
