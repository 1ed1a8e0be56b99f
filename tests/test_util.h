// Helpers shared by the test suites: temporary directories, files, and running the CLI in-process.
#pragma once

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runner/cli/cli.h"
#include "runner/data/parquet.h"

namespace l3lab::test {

inline const std::filesystem::path kSourceDir = L3LAB_SOURCE_DIR;

// splitmix64: reproducible pseudo-random numbers for generated data and seeded fuzzing, the same on
// every machine.
struct Rng {
    uint64_t state;
    uint64_t next() {
        uint64_t z = (state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    uint64_t below(uint64_t n) { return n == 0 ? 0 : next() % n; }
    template <class T>
    const T& pick(const std::vector<T>& v) { return v[below(v.size())]; }
};

// A fresh directory under the system temp dir, removed when the object dies.
class TempDir {
public:
    TempDir() {
        std::string pattern = (std::filesystem::temp_directory_path() / "l3lab-test-XXXXXX").string();
        path_ = mkdtemp(pattern.data());
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    const std::filesystem::path& path() const { return path_; }
    std::string write(const std::string& name, const std::string& text) const {
        auto p = path_ / name;
        std::filesystem::create_directories(p.parent_path());
        std::ofstream(p) << text;
        return p.string();
    }

private:
    std::filesystem::path path_;
};

struct CliResult {
    int code;
    std::string out, err;
};

inline CliResult run_cli(const std::vector<std::string>& args) {
    std::ostringstream out, err;
    int code = cli::run(args, out, err);
    return {code, out.str(), err.str()};
}

#ifdef L3LAB_PYTHON
struct ToolResult {
    int code;
    std::string output;  // stdout and stderr together
};

// Runs the project's Python tool `script` (relative to the source tree) with the .venv's python, which
// has the PyPI packages the tools need (tensorboard, torch).
inline ToolResult run_python_tool(const std::string& script, const std::vector<std::string>& args) {
    std::string command = std::string(L3LAB_PYTHON) + " '" + (kSourceDir / script).string() + "'";
    for (const auto& a : args) command += " '" + a + "'";
    command += " 2>&1";
    ToolResult r{-1, ""};
    FILE* pipe = ::popen(command.c_str(), "r");
    if (!pipe) return r;
    char buf[4096];
    while (size_t n = std::fread(buf, 1, sizeof buf, pipe)) r.output.append(buf, n);
    const int status = ::pclose(pipe);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}
#endif

#ifdef L3LAB_BINARY
// For suites that train: in-process commands (run_cli) find the torch module next to the real
// executable, and one OpenMP thread per training keeps suites that CTest runs side by side on 2 cores from
// spinning against each other (no result depends on it: the runs a test compares use the same count).
inline void prepare_training_suite() {
    setenv("L3LAB_TORCH_MODULE", (std::filesystem::path(L3LAB_BINARY).parent_path() / "libl3lab_torch.so").c_str(), 1);
    setenv("OMP_NUM_THREADS", "1", 1);
    unsetenv("L3LAB_FAULT");
}

// Starts the real executable with `args`, stdout and stderr to `log` (truncated); returns the pid.
// `in_child` runs in the forked child just before exec (environment, limits, capabilities).
inline pid_t spawn_l3lab(const std::vector<std::string>& args, const std::string& log,
                         const std::function<void()>& in_child = {}) {
    pid_t pid = fork();
    if (pid == 0) {
        int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        if (in_child) in_child();
        std::vector<char*> argv{const_cast<char*>(L3LAB_BINARY)};
        for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
        argv.push_back(nullptr);
        execv(L3LAB_BINARY, argv.data());
        _exit(127);
    }
    return pid;
}

// The exit code of `pid`, or 128 + the signal that ended it.
inline int wait_exit(pid_t pid) {
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
#endif

inline std::string slurp(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

// Parquet input needs Arrow, which a build without the pyarrow wheel lacks (runner/data/no_parquet.cpp).
#define L3LAB_REQUIRE_PARQUET()                                                                        \
    do {                                                                                               \
        if (!::l3lab::data::parquet_supported()) GTEST_SKIP() << "built without parquet input (no pyarrow)"; \
    } while (0)

// The experiment of a curve golden (tests/fixtures/curves/<name>.json, compare_curves.py --golden) on
// `dir`/shards, tokenized here from the parquet fixture with nanochat's split; returns the YAML's path.
inline std::string reference_curve_experiment(const std::string& name, const TempDir& dir) {
    const std::filesystem::path fixtures = kSourceDir / "tests" / "fixtures";
    const std::string shards = (dir.path() / "shards").string();
    const CliResult r = run_cli({"data", "tokenize", "--tokenizer", (fixtures / "bpe" / "full").string(), "--input",
                                 (fixtures / "parquet" / "base_data").string(), "--split", "nanochat", "--output", shards});
    if (r.code != 0) throw std::runtime_error("tokenizing the parquet fixture failed: " + r.err);
    const std::string golden = slurp(fixtures / "curves" / (name + ".json"));
    std::string yaml = nlohmann::json::parse(golden)["yaml"];
    for (const auto& [from, to] : {std::pair<std::string, std::string>{"{BASE}", (kSourceDir / "experiments" / "base.yaml").string()},
                                   {"{TOKENIZER}", (fixtures / "bpe" / "full").string()},
                                   {"{SHARDS}", shards}})
        for (size_t p = 0; (p = yaml.find(from, p)) != std::string::npos; p += to.size()) yaml.replace(p, from.size(), to);
    return dir.write(name + ".yaml", yaml);
}

inline std::string base_yaml() { return (kSourceDir / "experiments" / "base.yaml").string(); }

}  // namespace l3lab::test
