// The reliability suite (docs/reliability.md): faults injected into real `l3lab train` processes of a
// tiny config (depth 2, sequence 64, 16 steps, evaluation every 3 steps, a checkpoint every 4):
//   Kill anywhere     SIGKILL at named points (the L3LAB_FAULT test hooks) and at seeded random moments,
//   Preemption        SIGTERM / SIGUSR1 at exact and at random moments,
//   Storage faults    a full disk (tmpfs), a file-size limit, read-only directories, damaged checkpoints,
//   Numerical faults  NaN / inf in the loss or the gradients, a genuinely unstable learning rate, the
//                     skip guard.
// After each fault the run is resumed to its end and compared with an uninterrupted run: the final weights
// and optimizer state byte for byte, every metric of every step (present exactly once), the HDF5 view, and
// the checkpoint the resume chose (the newest complete one, never a partial one). Every trial is one row
// of <build>/reliability/results.md, which each test rewrites and prints.
//
// L3LAB_RELIABILITY_SEED sets the seed of the random moments (default 20240520); L3LAB_RELIABILITY_LONG=1
// runs more random trials (30 kills and 12 signals instead of 8 and 4).
#include <gtest/gtest.h>

#include <fcntl.h>
#include <linux/capability.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <thread>

#include "runner/io/safetensors.h"
#include "runner/metrics/metrics.h"
#include "runner/run/run_dir.h"
#include "runner/train/checkpoints.h"
#include "test_data_util.h"
#include "test_util.h"

using namespace l3lab;
using nlohmann::json;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr long long kSteps = 16;
const std::string kFinal = "checkpoints/step-00000016";

std::string read(const fs::path& p) { return test::slurp(p); }

bool contains(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

std::string util_seconds(double s) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f s", s);
    return buf;
}

long env_long(const char* name, long fallback) {
    const char* v = std::getenv(name);
    return v && *v ? std::strtol(v, nullptr, 10) : fallback;
}

// ---------------------------------------------------------------------------------------------
// child processes

struct ChildOptions {
    std::vector<std::pair<std::string, std::string>> env;  // added to the environment
    std::optional<rlim_t> file_size_limit;                   // RLIMIT_FSIZE, bytes
    bool without_dac_override = false;  // root that obeys file permissions (no CAP_DAC_OVERRIDE etc.)
};

pid_t spawn(const std::vector<std::string>& args, const std::string& log, const ChildOptions& options = {}) {
    return test::spawn_l3lab(args, log, [&options] {
        for (const auto& [k, v] : options.env) setenv(k.c_str(), v.c_str(), 1);
        if (options.file_size_limit) {
            struct rlimit limit {*options.file_size_limit, *options.file_size_limit};
            setrlimit(RLIMIT_FSIZE, &limit);
        }
        if (options.without_dac_override)  // dropped from the bounding set, so the exec'd root lacks them
            for (int cap : {CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER}) prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
    });
}

// True while the child has not exited (its status is left for wait_child).
bool running(pid_t pid) {
    siginfo_t info{};
    return waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == 0;
}

// How a child ended (exit code, or 128 + signal), or that it stopped itself (SIGSTOP: a `=stop` hook).
struct Ended {
    bool stopped = false;
    int code = -1;
};

Ended wait_child(pid_t pid, bool until_stopped = false, std::chrono::seconds limit = 300s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (true) {
        int status = 0;
        pid_t r = waitpid(pid, &status, WNOHANG | (until_stopped ? WUNTRACED : 0));
        if (r == pid) {
            if (WIFSTOPPED(status)) return {true, -1};
            return {false, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status)};
        }
        if (std::chrono::steady_clock::now() > deadline) {
            ::kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            ADD_FAILURE() << "child " << pid << " did not finish within " << limit.count() << " s";
            return {false, -1};
        }
        std::this_thread::sleep_for(2ms);
    }
}

ChildOptions with_fault(const std::string& fault) {
    ChildOptions options;
    options.env.emplace_back("L3LAB_FAULT", fault);
    return options;
}

int run_to_end(const std::vector<std::string>& args, const std::string& log, const ChildOptions& options = {}) {
    return wait_child(spawn(args, log, options)).code;
}

std::string status_state(const fs::path& run) {
    try {
        return json::parse(read(run / "STATUS")).value("state", "");
    } catch (...) {
        return "";
    }
}

// ---------------------------------------------------------------------------------------------
// the results table

const char* const kSections[] = {"Kill anywhere", "Preemption", "Stopping", "Storage faults", "Numerical faults"};

struct Row {
    std::string id, fault, point, outcome, checks;
};

fs::path results_dir() { return fs::path(L3LAB_BINARY).parent_path() / "reliability"; }

std::string cell(std::string s) {
    for (auto& ch : s)
        if (ch == '|' || ch == '\n' || ch == '\t') ch = ch == '|' ? '/' : ' ';
    return s;
}

// The rows of one test, written to reliability/<test>.tsv when it ends (failed or not); then
// results.md is rebuilt from every test's rows, under a lock (ctest runs tests side by side).
class Report {
public:
    Report(std::string section, std::string test) : section_(std::move(section)), test_(std::move(test)) {}
    ~Report() { write(); }
    void add(Row row) {
        std::cout << "[ trial ] " << row.id << " | " << row.fault << " | " << row.point << " | " << row.outcome << " | "
                  << row.checks << std::endl;
        rows_.push_back(std::move(row));
    }

private:
    void write() const {
        std::error_code ec;
        fs::create_directories(results_dir(), ec);
        {
            std::ofstream out(results_dir() / (test_ + ".tsv"));
            out << section_ << "\n";
            for (const auto& r : rows_)
                out << cell(r.id) << "\t" << cell(r.fault) << "\t" << cell(r.point) << "\t" << cell(r.outcome) << "\t"
                    << cell(r.checks) << "\n";
        }
        int lock = ::open((results_dir() / ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        ::flock(lock, LOCK_EX);
        std::map<std::string, std::vector<std::vector<std::string>>> by_section;
        for (const auto& entry : fs::directory_iterator(results_dir(), ec)) {
            if (entry.path().extension() != ".tsv") continue;
            std::ifstream in(entry.path());
            std::string section, line;
            std::getline(in, section);
            while (std::getline(in, line)) {
                std::vector<std::string> fields;
                std::stringstream ss(line);
                for (std::string f; std::getline(ss, f, '\t');) fields.push_back(f);
                if (fields.size() == 5) by_section[section].push_back(fields);
            }
        }
        std::ostringstream md;
        md << "# l3lab reliability suite: results\n\n"
           << "Written by tests/test_reliability.cpp (`ctest -R Reliability`), seed "
           << env_long("L3LAB_RELIABILITY_SEED", 20240520) << ". Every trial resumes the faulted run to its end "
           << "and compares it with an uninterrupted run of the same config (16 steps, depth 2, CPU).\n";
        for (const char* section : kSections) {
            auto& rows = by_section[section];
            std::sort(rows.begin(), rows.end());
            size_t passed = 0;
            for (const auto& r : rows) passed += !contains(r[4], "FAILED");
            md << "\n## " << section << "\n\n" << rows.size() << " trials, " << passed << " passed.\n\n"
               << "| trial | fault | injection point | outcome | checks |\n|---|---|---|---|---|\n";
            for (const auto& r : rows) md << "| " << r[0] << " | " << r[1] << " | " << r[2] << " | " << r[3] << " | " << r[4] << " |\n";
        }
        util_write(results_dir() / "results.md", md.str());
        ::close(lock);
        std::cout << "[ table ] " << (results_dir() / "results.md").string() << std::endl;
    }
    static void util_write(const fs::path& path, const std::string& text) {
        const fs::path tmp = path.string() + ".tmp";
        std::ofstream(tmp) << text;
        fs::rename(tmp, path);
    }
    std::string section_, test_;
    std::vector<Row> rows_;
};

// Named checks of one trial: each one a gtest expectation and a word in the table's checks column.
class Checks {
public:
    bool expect(bool ok, const std::string& name, const std::string& detail = "") {
        if (!ok) ADD_FAILURE() << trial_ << ": " << name << " failed" << (detail.empty() ? "" : ": " + detail);
        failed_ = failed_ || !ok;
        text_ += (text_.empty() ? "" : ", ") + name + (ok ? " ✓" : " ✗ FAILED");
        return ok;
    }
    void trial(const std::string& id) { trial_ = id; }
    const std::string& text() const { return text_; }
    // The checks of `sub` as one word when all passed ("exact ✓"), else each of them.
    void group(const std::string& name, const Checks& sub) {
        text_ += (text_.empty() ? "" : ", ") + (sub.failed_ ? sub.text_ : name + " ✓");
        failed_ = failed_ || sub.failed_;
    }

private:
    std::string trial_, text_;
    bool failed_ = false;
};

// ---------------------------------------------------------------------------------------------
// what is on disk

// The checkpoints directory before a resume: complete (DONE present, every checksum right) and damaged
// ones, and staging leftovers.
struct Disk {
    std::optional<long long> newest_complete;
    std::vector<std::string> damaged;  // paths of step directories that must be skipped
    std::string summary;               // "4 ok, 8 ok, 12 (no DONE marker (incomplete)), .partial-step-00000016"
};

Disk inspect(const fs::path& run) {
    Disk d;
    std::vector<std::pair<std::string, std::string>> items;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(run / "checkpoints", ec)) {
        const std::string name = entry.path().filename().string();
        if (name.rfind("step-", 0) == 0) {
            const long long step = std::stoll(name.substr(5));
            const std::string problem = train::checkpoint_problem(entry.path().string());
            if (problem.empty()) d.newest_complete = std::max(d.newest_complete.value_or(-1), step);
            else d.damaged.push_back(entry.path().string());
            items.emplace_back(name, std::to_string(step) + (problem.empty() ? " ok" : " (" + problem + ")"));
        } else if (name.rfind(".partial-", 0) == 0) {
            items.emplace_back(name, name);
        }
    }
    std::sort(items.begin(), items.end());
    for (const auto& [name, text] : items) d.summary += (d.summary.empty() ? "" : ", ") + text;
    if (d.summary.empty()) d.summary = "no checkpoint";
    return d;
}

// The checkpoint a resume's log says it loaded: its step, or -1 for "no complete checkpoint".
std::optional<long long> resumed_step(const std::string& log) {
    std::smatch m;
    static const std::regex resumed("resumed from (\\S+) \\(step ([0-9]+)\\)");
    if (std::regex_search(log, m, resumed)) return std::stoll(m[2].str());
    if (contains(log, "no complete checkpoint: starting from step 0")) return -1;
    return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// the fixture: data, the config, and the uninterrupted run every trial is compared with

bool same_train(const metrics::TrainRecord& a, const metrics::TrainRecord& b) {
    auto eq = [](double x, double y) { return x == y || (std::isnan(x) && std::isnan(y)); };
    return a.step == b.step && eq(a.loss, b.loss) && eq(a.raw_loss, b.raw_loss) && eq(a.lrm, b.lrm) &&
           a.tokens == b.tokens && a.flops == b.flops && a.epoch == b.epoch;
}

class Reliability : public ::testing::Test {
protected:
    static inline test::TempDir* dir = nullptr;
    static inline std::string experiment;
    static inline std::mt19937_64 rng;

    static void SetUpTestSuite() {
        test::prepare_training_suite();
        rng.seed(static_cast<uint64_t>(env_long("L3LAB_RELIABILITY_SEED", 20240520)));
        dir = new test::TempDir();
        const test::TinyData data = test::make_tiny_data(dir->path(), 5000, 300, 500);
        experiment = dir->write("tiny.yaml", test::tiny_experiment_yaml(data, (dir->path() / "runs").string(),
                                                                        "batch: {device_batch_size: 2, total_batch_size: 256}\n"  // 2 micro-batches per step
                                                                        "eval: {every: 3, tokens: 256}\n"));
        fs::create_directories(dir->path() / "runs");
    }
    static void TearDownTestSuite() {
        delete dir;
        dir = nullptr;
    }

    static std::string run_dir(const std::string& name) { return (dir->path() / "runs" / name).string(); }
    static std::vector<std::string> train_args(const std::string& run, std::vector<std::string> extra = {}) {
        std::vector<std::string> args{"train", experiment, "--run-dir", run};
        args.insert(args.end(), extra.begin(), extra.end());
        return args;
    }

    // Trains into `run` until the process stops itself at the L3LAB_FAULT hook(s) `fault`, sends `signal`
    // and lets it go on. Returns its exit code and the seconds from then to its exit.
    struct Reaction {
        int code;
        double seconds;
    };
    static Reaction signal_at_hook(const fs::path& run, const std::string& fault, int signal, Checks& c) {
        pid_t pid = spawn(train_args(run.string()), run.string() + ".log", with_fault(fault));
        c.expect(wait_child(pid, /*until_stopped=*/true).stopped, "stopped at the point");
        ::kill(pid, signal);
        const auto t0 = std::chrono::steady_clock::now();
        ::kill(pid, SIGCONT);
        const int code = wait_child(pid).code;
        return {code, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()};
    }

    struct Straight {
        fs::path dir;
        std::string model, optimizer;
        metrics::MetricsLog log;
        double seconds_after_status = 0;  // from STATUS appearing to the end of the process
        double seconds_after_running = 0;  // from STATUS "running" (training started) to the end
    };
    static const Straight& straight() {
        static Straight s = [] {
            Straight out;
            out.dir = run_dir("straight");
            pid_t pid = spawn(train_args(out.dir.string()), out.dir.string() + ".log");
            while (!fs::exists(out.dir / "STATUS") && running(pid)) std::this_thread::sleep_for(2ms);
            const auto t0 = std::chrono::steady_clock::now();
            while (status_state(out.dir) != "running" && running(pid)) std::this_thread::sleep_for(2ms);
            const auto t1 = std::chrono::steady_clock::now();
            EXPECT_EQ(wait_child(pid).code, 0) << read(out.dir.string() + ".log");
            const auto t2 = std::chrono::steady_clock::now();
            out.seconds_after_status = std::chrono::duration<double>(t2 - t0).count();
            out.seconds_after_running = std::chrono::duration<double>(t2 - t1).count();
            out.model = read(out.dir / kFinal / "model.safetensors");
            out.optimizer = read(out.dir / kFinal / "optimizer.safetensors");
            out.log = metrics::read_metrics(out.dir);
            EXPECT_EQ(out.log.train.size(), static_cast<size_t>(kSteps));
            EXPECT_FALSE(out.model.empty());
            return out;
        }();
        return s;
    }

    // The run ended as the straight one did: weights and optimizer state byte for byte, every step's
    // metrics exactly once with the same values, the HDF5 view equal to the sidecar, STATUS completed.
    // In the table: "exact ✓" when all of them pass.
    static void expect_exact(const fs::path& run, Checks& outer) {
        Checks c;
        c.trial(run.filename().string());
        check_exact(run, c);
        outer.group("exact", c);
    }
    static void check_exact(const fs::path& run, Checks& c) {
        const Straight& ref = straight();
        c.expect(status_state(run) == "completed", "STATUS", read(run / "STATUS"));
        c.expect(read(run / kFinal / "model.safetensors") == ref.model, "weights =");
        c.expect(read(run / kFinal / "optimizer.safetensors") == ref.optimizer, "optimizer =");
        metrics::MetricsLog log;
        try {
            log = metrics::read_metrics(run);
        } catch (const std::exception& e) {
            c.expect(false, "metrics readable", e.what());
            return;
        }
        bool once = log.train.size() == static_cast<size_t>(kSteps);
        for (size_t i = 0; once && i < log.train.size(); ++i) once = log.train[i].step == static_cast<int64_t>(i);
        c.expect(once, "steps once", std::to_string(log.train.size()) + " train records");
        bool equal = once;
        for (size_t i = 0; equal && i < log.train.size(); ++i) equal = same_train(log.train[i], ref.log.train[i]);
        c.expect(equal, "metrics =");
        c.expect(log.val == ref.log.val && log.samples == ref.log.samples, "val+samples =",
                 std::to_string(log.val.size()) + " val records, straight " + std::to_string(ref.log.val.size()));
        try {
            metrics::MetricsLog view = metrics::read_view(run / "metrics.h5");
            c.expect(view.train == log.train && view.val == log.val && view.samples == log.samples, "h5 = jsonl");
        } catch (const std::exception& e) {
            c.expect(false, "h5 = jsonl", e.what());
        }
    }

    // Resumes `run` (l3lab resume) and checks the checkpoint it chose: the newest complete one on disk,
    // every damaged one reported as skipped. Returns the exit code; `chosen` gets the step (-1: none).
    // With `train_auto`, as a requeued job does it: `l3lab train EXP --run-dir RUN --resume auto`.
    static int resume(const fs::path& run, Checks& c, std::optional<long long>* chosen = nullptr,
                      const ChildOptions& options = {}, const std::string& name = "resume", bool train_auto = false) {
        const Disk before = inspect(run);
        const std::string log = run.string() + "." + name + ".log";
        const int code = run_to_end(train_auto ? train_args(run.string(), {"--resume", "auto"})
                                               : std::vector<std::string>{"resume", run.string()},
                                    log, options);
        const std::string text = read(log);
        const auto step = resumed_step(text);
        if (chosen) *chosen = step;
        if (!step) {
            c.expect(false, "checkpoint chosen", "no 'resumed from' line: " + text.substr(0, 2000));
            return code;
        }
        const long long expected = before.newest_complete.value_or(-1);
        bool skipped_all = true;
        for (const auto& d : before.damaged) skipped_all = skipped_all && contains(text, "skipping checkpoint " + d);
        c.expect(*step == expected && skipped_all, "newest complete",
                 "resumed from " + std::to_string(*step) + ", expected " + std::to_string(expected) + " (" + before.summary + ")");
        return code;
    }

    // An error message for the table: the temporary directory elided, the middle cut when long (the
    // reason is at the end).
    static std::string brief(std::string text) {
        const std::string root = dir->path().string();
        for (size_t at; (at = text.find(root)) != std::string::npos;) text.replace(at, root.size(), "…");
        if (text.size() > 360) text = text.substr(0, 180) + " … " + text.substr(text.size() - 170);
        return text;
    }

    static void run_hook_trials(const std::string& test, size_t first, size_t last);

    static std::string landed(const fs::path& run) {
        // The last step the killed process logged, from its train.log.
        const std::string log = read(run / "train.log");
        std::string last = "before step 0";
        static const std::regex step_line("step ([0-9]{5})/");
        for (auto it = std::sregex_iterator(log.begin(), log.end(), step_line); it != std::sregex_iterator(); ++it)
            last = "after step " + std::to_string(std::stoll((*it)[1].str()));
        return last;
    }
};

// A point of the L3LAB_FAULT hooks, and where the resume must pick up.
struct HookTrial {
    const char* fault;        // L3LAB_FAULT of the training process
    const char* window;       // what the moment is
    long long resume_from;    // the newest complete checkpoint then (-1: none)
    const char* on_disk;      // text the checkpoints directory must show (a partial or unmarked one), "torn"
                              // (metrics.jsonl ends in half a line), or ""
    const char* resume_fault = nullptr;  // L3LAB_FAULT of a first resume, killed as well
};

// One step trains 2 micro-batches, so step s passes step:after-backward as occurrences 2s+1 and 2s+2.
// Evaluations run at steps 0, 3, 6, 9, 12, 15, 16; checkpoints at 4, 8, 12, 16 (keep_last 2).
// Metrics flushes that append: val 0, val 3, checkpoint 4, val 6, checkpoint 8, val 9, val 12, ...
const HookTrial kHookTrials[] = {
    {"step:after-backward@3", "step 1, between its two micro-batches", -1, ""},
    {"step:after-backward@20", "step 9, after the last backward, before the update", 8, ""},
    {"step:after-optimizer@11", "step 10 applied in memory, not logged", 8, ""},
    {"eval:mid@2", "evaluation at step 3", -1, ""},
    {"eval:mid@5", "evaluation at step 12, before its checkpoint", 8, ""},
    {"eval:mid@7", "final evaluation, after the final checkpoint", 16, ""},
    {"checkpoint:begin@2", "checkpoint 8: staging directory made, nothing written", 4, ".partial-step-00000008"},
    {"checkpoint:mid-write@3", "checkpoint 12: optimizer written, model not", 8, ".partial-step-00000012"},
    {"checkpoint:after-stage@1", "checkpoint 4: every file staged, not renamed", -1, ".partial-step-00000004"},
    {"checkpoint:before-done@2", "checkpoint 8 renamed into place, no DONE", 4, "8 (no DONE marker"},
    {"checkpoint:before-done@4", "final checkpoint 16 renamed, no DONE", 12, "16 (no DONE marker"},
    {"checkpoint:after-done@3", "checkpoint 12 complete, before pruning", 12, "4 ok"},
    {"checkpoint:mid-prune@1", "pruning checkpoint 4: DONE removed, files not", 12, "4 (no DONE marker"},
    {"metrics:mid-sidecar@6", "metrics flush at step 9: half a line appended", 8, "torn"},
    {"metrics:after-sidecar@7", "metrics flush at step 12: sidecar durable, HDF5 view not appended", 8, ""},
    {"step:after-backward@12", "step 5; the resume killed after loading its checkpoint", 4, "", "resume:after-load@1"},
    {"step:after-optimizer@14", "step 13; the resume killed while rewriting the metrics", 12, "", "metrics:resume-rewrite@1"},
    {"checkpoint:before-done@3", "checkpoint 12 without DONE; the resume killed in the same window again", 8,
     "12 (no DONE marker", "checkpoint:before-done@1"},
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Kill anywhere

// Trials first..last (1-based) of kHookTrials: each killed at its point, then resumed to the end.
void Reliability::run_hook_trials(const std::string& test, size_t first, size_t last) {
    Report report("Kill anywhere", test);
    straight();
    for (size_t n = first; n <= last; ++n) {
        const HookTrial& t = kHookTrials[n - 1];
        const std::string id = "K" + std::string(n < 10 ? "0" : "") + std::to_string(n);
        Checks c;
        c.trial(id + " " + t.fault);
        const fs::path run = run_dir("kill-" + id);
        const int killed = run_to_end(train_args(run.string()), run.string() + ".log", with_fault(t.fault));
        c.expect(killed == 128 + SIGKILL, "killed", "exit " + std::to_string(killed) + "\n" + read(run.string() + ".log"));
        const Disk disk = inspect(run);
        std::string outcome = "on disk: " + disk.summary;
        if (std::string(t.on_disk) == "torn") {
            const std::string sidecar = read(run / "metrics.jsonl");
            c.expect(!sidecar.empty() && sidecar.back() != '\n', "window", "metrics.jsonl ends with a complete line");
            outcome += ", metrics.jsonl ends in a torn line";
        } else if (*t.on_disk) {
            c.expect(contains(disk.summary, t.on_disk), "window", disk.summary);
        }
        if (t.resume_fault) {
            std::optional<long long> first_resume;
            const int code = resume(run, c, &first_resume, with_fault(t.resume_fault), "resume-killed");
            c.expect(code == 128 + SIGKILL, "resume killed at " + std::string(t.resume_fault));
            outcome += "; resume killed at " + std::string(t.resume_fault) + " (" + inspect(run).summary + ")";
        }
        std::optional<long long> chosen;
        const int code = resume(run, c, &chosen);
        c.expect(code == 0, "resume exit 0", read(run.string() + ".resume.log").substr(0, 3000));
        c.expect(chosen == t.resume_from, t.resume_from < 0 ? "from scratch" : "from " + std::to_string(t.resume_from));
        outcome += "; resumed from " + (chosen && *chosen >= 0 ? "step " + std::to_string(*chosen) : "scratch");
        expect_exact(run, c);
        report.add({id, "SIGKILL", std::string(t.fault) + ": " + t.window, outcome, c.text()});
    }
}

// Three tests, so that CTest runs them side by side.
TEST_F(Reliability, KillInAStepOrAnEvaluationThenResumeIsExact) { run_hook_trials("kill_hooks_steps", 1, 6); }
TEST_F(Reliability, KillInACheckpointWriteOrPruneThenResumeIsExact) { run_hook_trials("kill_hooks_checkpoints", 7, 13); }
TEST_F(Reliability, KillInAMetricsFlushOrTheResumeItselfThenResumeIsExact) { run_hook_trials("kill_hooks_resume", 14, 18); }

TEST_F(Reliability, KillAtRandomMomentsThenResumeIsExact) {
    Report report("Kill anywhere", "kill_random");
    // A moment timed by the run itself, so that every kill lands while it runs however busy the machine
    // is (a fraction of the straight run's duration, measured under another load, could let most kills
    // come after the end; docs/reliability.md): before training (a random part of the straight run's
    // time from STATUS to "running"), or a random part of one of this run's steps after step k's line.
    const Straight& ref = straight();
    const double before_training = ref.seconds_after_status - ref.seconds_after_running;
    const int trials = env_long("L3LAB_RELIABILITY_LONG", 0) ? 30 : 8;
    std::uniform_real_distribution<double> fraction(0.0, 1.0);
    int kills = 0;
    for (int n = 1; n <= trials; ++n) {
        const std::string id = "R" + std::string(n < 10 ? "0" : "") + std::to_string(n);
        Checks c;
        c.trial(id);
        const fs::path run = run_dir("random-" + id);
        pid_t pid = spawn(train_args(run.string()), run.string() + ".log");
        while (!fs::exists(run / "STATUS") && running(pid)) std::this_thread::sleep_for(1ms);
        const long long k = std::uniform_int_distribution<long long>(-1, kSteps - 2)(rng);
        double after = 0;
        char when[96];
        if (k < 0) {
            after = fraction(rng) * before_training;
            std::snprintf(when, sizeof when, "%.2f s after STATUS", after);
        } else {
            while (status_state(run) != "running" && running(pid)) std::this_thread::sleep_for(1ms);
            const auto running_at = std::chrono::steady_clock::now();
            char line[32];
            std::snprintf(line, sizeof line, "step %05lld/", k);
            while (!contains(read(run.string() + ".log"), line) && running(pid)) std::this_thread::sleep_for(1ms);
            after = fraction(rng) * std::chrono::duration<double>(std::chrono::steady_clock::now() - running_at).count() /
                    static_cast<double>(k + 1);
            std::snprintf(when, sizeof when, "%.3f s after step %lld's line", after, k);
        }
        std::this_thread::sleep_for(std::chrono::duration<double>(after));
        ::kill(pid, SIGKILL);
        const int code = wait_child(pid).code;
        if (code != 128 + SIGKILL) {  // finished before the kill landed: nothing to check but the run
            c.expect(code == 0, "finished cleanly");
            expect_exact(run, c);
            report.add({id, "SIGKILL (random)", when, "the run had finished", c.text()});
            continue;
        }
        ++kills;
        if (status_state(run) == "completed") {  // killed while the finished process was exiting
            const int again = run_to_end({"resume", run.string()}, run.string() + ".resume.log");
            c.expect(again == 0 && contains(read(run.string() + ".resume.log"), "nothing to resume"), "resume: nothing to do");
            expect_exact(run, c);
            report.add({id, "SIGKILL (random)", when, "STATUS already completed; resume: nothing to resume", c.text()});
            continue;
        }
        const Disk disk = inspect(run);
        const std::string where = landed(run) + "; on disk: " + disk.summary;
        std::optional<long long> chosen;
        c.expect(resume(run, c, &chosen) == 0, "resume exit 0", read(run.string() + ".resume.log").substr(0, 3000));
        expect_exact(run, c);
        report.add({id, "SIGKILL (random)", when,
                    where + "; resumed from " + (chosen && *chosen >= 0 ? "step " + std::to_string(*chosen) : "scratch"),
                    c.text()});
    }
    EXPECT_GE(kills, trials / 2) << "most random kills should land before the run ends";
}

// ---------------------------------------------------------------------------------------------
// Preemption

TEST_F(Reliability, PreemptionSignalsCheckpointExitThreeAndResumeExactly) {
    Report report("Preemption", "preemption");
    straight();
    // Exact moments: the process stops itself at a hook, gets the signal while stopped, and goes on.
    struct Exact {
        const char* id;
        int signal;
        const char* fault;
        const char* window;
        long long step;  // the step boundary the run stops at
    };
    // A signal during an evaluation abandons it (redone by the resume); one during a checkpoint lets it
    // finish and stops at that step (docs/stopping.md).
    for (const Exact& t : {Exact{"P01", SIGTERM, "eval:mid@3=stop", "during the evaluation at step 6", 6},
                           Exact{"P02", SIGUSR1, "checkpoint:mid-write@2=stop", "while checkpoint 8 is written", 8},
                           Exact{"P03", SIGTERM, "checkpoint:before-done@1=stop", "checkpoint 4 renamed, before DONE", 4}}) {
        Checks c;
        c.trial(t.id);
        const fs::path run = run_dir(std::string("preempt-") + t.id);
        const auto [code, took] = signal_at_hook(run, t.fault, t.signal, c);
        std::printf("[ measured ] %s: exit %d %.3f s after the signal (%s)\n", t.id, code, took, t.window);
        c.expect(code == 3, "exit 3", read(run.string() + ".log").substr(0, 3000));
        json status = json::parse(read(run / "STATUS"));
        c.expect(status["state"] == "interrupted" && status["step"] == t.step, "STATUS interrupted at " + std::to_string(t.step),
                 status.dump());
        c.expect(inspect(run).newest_complete == t.step, "checkpoint " + std::to_string(t.step) + " complete");
        std::optional<long long> chosen;
        c.expect(resume(run, c, &chosen) == 0, "resume exit 0");
        expect_exact(run, c);
        report.add({t.id, t.signal == SIGTERM ? "SIGTERM" : "SIGUSR1", std::string(t.fault) + " (" + t.window + ")",
                    "exit 3 at step " + std::to_string(t.step) + "; resumed from step " + std::to_string(chosen.value_or(-1)),
                    c.text()});
    }

    // Random moments, requeue style: signal, exit 3, `train --resume auto`, again. Until `signals` have
    // landed in training; a chain whose run completes first is checked and a new one started.
    const int signals = env_long("L3LAB_RELIABILITY_LONG", 0) ? 12 : 4;
    // The moment is timed by the leg itself: a random step k before the last, then a random part of one
    // of this leg's steps after k's log line. (It used to be a random part of the straight run's
    // duration, measured once when the test began: when the machine was busier then than during the
    // legs, most signals came after a leg had finished and the test failed with "too few signals
    // landed" - reproduced under load, docs/reliability.md. Now every signal lands while the leg runs.)
    std::uniform_real_distribution<double> fraction(0.0, 1.0);
    int landed = 0, chain = 1, n = 3;
    bool chain_done = false;
    auto id_of = [](int k) { return "P" + std::string(k < 10 ? "0" : "") + std::to_string(k); };
    for (int legs = 0; landed < signals && legs < 3 * signals; ++legs) {
        if (chain_done) ++chain, chain_done = false;
        const fs::path run = run_dir("preempt-chain-" + std::to_string(chain));
        const std::string id = id_of(++n);
        Checks c;
        c.trial(id);
        const std::string log = run.string() + ".leg" + std::to_string(legs) + ".log";
        pid_t pid = spawn(train_args(run.string(), {"--resume", "auto"}), log);
        const int sig = landed % 2 ? SIGUSR1 : SIGTERM;
        const char* name = sig == SIGTERM ? "SIGTERM (random)" : "SIGUSR1 (random)";
        // The handler is installed once training starts; wait for STATUS "running" from this process.
        while (status_state(run) != "running" && running(pid)) std::this_thread::sleep_for(1ms);
        const auto running_at = std::chrono::steady_clock::now();
        long long start = 0;
        try {
            start = json::parse(read(run / "STATUS")).value("step", 0LL);
        } catch (...) {
        }
        double after = 0;  // seconds after step k's line (or after STATUS running when no step is left)
        long long k = -1;
        if (start <= kSteps - 2) {
            k = std::uniform_int_distribution<long long>(start, kSteps - 2)(rng);
            char line[32];
            std::snprintf(line, sizeof line, "step %05lld/", k);
            while (!contains(read(log), line) && running(pid)) std::this_thread::sleep_for(1ms);
            const double per_step = std::chrono::duration<double>(std::chrono::steady_clock::now() - running_at).count() /
                                    static_cast<double>(k - start + 1);
            after = fraction(rng) * per_step;
            std::this_thread::sleep_for(std::chrono::duration<double>(after));
        }
        ::kill(pid, sig);
        const int code = wait_child(pid).code;
        json status = json::parse(read(run / "STATUS"));
        const long long step = status.value("step", -1LL);
        char when[128];
        if (k >= 0)
            std::snprintf(when, sizeof when, "chain %d: %.3f s after step %lld's line (from step %lld)", chain, after, k, start);
        else
            std::snprintf(when, sizeof when, "chain %d: at STATUS running (from step %lld)", chain, start);
        if (code == 0 || (code == 128 + sig && status_state(run) == "completed")) {
            // The run ended first; a signal that lands while the finished process exits (its handler
            // already removed) ends it with the signal's default action, STATUS staying completed.
            c.expect(status_state(run) == "completed", "completed before the signal");
            expect_exact(run, c);
            report.add({id, name, when,
                        code == 0 ? "the run had finished (exit 0)"
                                  : "the run had finished; the signal ended the exiting process (" + std::to_string(code) + ")",
                        c.text()});
            chain_done = true;
            continue;
        }
        ++landed;
        c.expect(code == 3, "exit 3", read(log).substr(0, 3000));
        c.expect(status["state"] == "interrupted", "STATUS interrupted", status.dump());
        c.expect(inspect(run).newest_complete == step, "checkpoint at the STATUS step", inspect(run).summary);
        report.add({id, name, when, "exit 3 at step " + std::to_string(step) + "; requeued with train --resume auto", c.text()});
    }
    EXPECT_EQ(landed, signals) << "too few signals landed while the runs trained";
    if (!chain_done) {  // the last leg of the chain runs to the end
        const fs::path run = run_dir("preempt-chain-" + std::to_string(chain));
        const std::string id = id_of(++n);
        Checks c;
        c.trial(id);
        c.expect(run_to_end(train_args(run.string(), {"--resume", "auto"}), run.string() + ".last.log") == 0, "exit 0");
        expect_exact(run, c);
        report.add({id, "(none)", "chain " + std::to_string(chain) + ": the requeued run, left alone", "completed", c.text()});
    }
}

// ---------------------------------------------------------------------------------------------
// Stopping (docs/stopping.md): a stop signal acts within seconds in every phase of a run, not only at a
// step boundary, and the resume gives the straight run exactly; a second signal ends the process at once.

namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Every temporary of an atomic write (name.tmp-PID) under `run`: none may be left by a stop.
std::vector<std::string> temporaries(const fs::path& run) {
    std::vector<std::string> found;
    std::error_code ec;
    for (const auto& e : fs::recursive_directory_iterator(run, ec))
        if (contains(e.path().filename().string(), ".tmp-")) found.push_back(e.path().string());
    return found;
}

}  // namespace

TEST_F(Reliability, StopSignalsActWithinSecondsInEveryPhaseAndResumeExactly) {
    Report report("Stopping", "stopping");
    straight();
    constexpr double kReactionLimit = 20;  // seconds; measured well under 1 s on an idle 2-core machine

    // S01, the case that was reported: the default eval.tokens (20,971,520 = 163,840 batches here) before
    // a 16-step run, SIGTERM during the evaluation at step 0. The plan warns; the signal stops it in
    // seconds with exit 3 and a checkpoint of step 0; the resume (eval.tokens back to 256, a change a
    // resume accepts) redoes the evaluation and ends as the straight run.
    {
        Checks c;
        c.trial("S01");
        const fs::path run = run_dir("stop-S01");
        ChildOptions progress;  // plain progress lines every 0.2 s (docs/progress.md)
        progress.env.emplace_back("L3LAB_PROGRESS_INTERVAL", "0.2");
        pid_t pid = spawn(train_args(run.string(), {"eval.tokens=20971520"}), run.string() + ".log", progress);
        while (status_state(run) != "running" && running(pid)) std::this_thread::sleep_for(1ms);
        std::this_thread::sleep_for(1s);  // well inside the evaluation (minutes long)
        const auto t0 = std::chrono::steady_clock::now();
        ::kill(pid, SIGTERM);
        const int code = wait_child(pid).code;
        const double took = seconds_since(t0);
        const std::string log = read(run.string() + ".log");
        c.expect(contains(log, "warning: evaluation is") && contains(log, "lower eval.tokens"), "plan warned", log.substr(0, 3000));
        c.expect(code == 3, "exit 3", log.substr(log.size() > 3000 ? log.size() - 3000 : 0));
        c.expect(took < kReactionLimit, "reacted in " + util_seconds(took));
        c.expect(contains(log, "SIGTERM during the evaluation (batch"), "evaluation abandoned");
        c.expect(contains(log, "/163,840 batches, ") && contains(log, " left"), "progress shown");
        json status = json::parse(read(run / "STATUS"));
        c.expect(status["state"] == "interrupted" && status["step"] == 0, "STATUS interrupted at 0", status.dump());
        c.expect(inspect(run).newest_complete == 0, "checkpoint 0 complete", inspect(run).summary);
        std::optional<long long> chosen;
        c.expect(resume(run, c, &chosen, {}, "resume", /*train_auto=*/true) == 0, "resume exit 0");
        expect_exact(run, c);
        report.add({"S01", "SIGTERM", "1 s into the step-0 evaluation of eval.tokens 20,971,520 (163,840 batches)",
                    "exit 3 after " + util_seconds(took) + "; resumed from step " + std::to_string(chosen.value_or(-1)) +
                        " with eval.tokens 256",
                    c.text()});
        std::printf("[ measured ] S01: SIGTERM during a 163,840-batch evaluation: exit %d after %.2f s\n", code, took);
    }

    // Exact moments: the process stops itself at a hook, gets the signal while stopped, and goes on; the
    // reaction is timed from SIGCONT to its exit.
    struct Phase {
        const char* id;
        int signal;
        const char* fault;
        const char* window;
        long long step;       // the step STATUS reports
        bool checkpoint;      // a checkpoint of that step is made (no: nothing trained yet, resume starts over)
        const char* message;  // what the log says about the abandoned work
    };
    for (const Phase& t : {Phase{"S02", SIGTERM, "sample:mid@1=stop", "while sampling at the last step", 16, true,
                                 "SIGTERM during sampling"},
                           Phase{"S03", SIGUSR1, "allocation:sample@1=stop", "while the L3 allocation reads its sample", 0,
                                 false, "SIGUSR1 during the L3 allocation"},
                           Phase{"S04", SIGTERM, "data:open@1=stop", "while the data is opened", 0, false,
                                 "SIGTERM during opening the data"},
                           Phase{"S05", SIGINT, "step:after-backward@3=stop", "step 1, between its two micro-batches", 1, true,
                                 "SIGINT during step 1 (abandoned between micro-batches"}}) {
        Checks c;
        c.trial(t.id);
        const fs::path run = run_dir(std::string("stop-") + t.id);
        const auto [code, took] = signal_at_hook(run, t.fault, t.signal, c);
        const std::string log = read(run.string() + ".log");
        c.expect(code == 3, "exit 3", log.substr(log.size() > 3000 ? log.size() - 3000 : 0));
        c.expect(took < kReactionLimit, "reacted in " + util_seconds(took));
        c.expect(contains(log, t.message), "work abandoned", log.substr(log.size() > 2000 ? log.size() - 2000 : 0));
        json status = json::parse(read(run / "STATUS"));
        c.expect(status["state"] == "interrupted" && status["step"] == t.step,
                 "STATUS interrupted at " + std::to_string(t.step), status.dump());
        if (t.checkpoint)
            c.expect(inspect(run).newest_complete == t.step, "checkpoint " + std::to_string(t.step) + " complete",
                     inspect(run).summary);
        else
            c.expect(!inspect(run).newest_complete, "no checkpoint", inspect(run).summary);
        c.expect(temporaries(run).empty(), "no temporaries");
        std::optional<long long> chosen;
        c.expect(resume(run, c, &chosen) == 0, "resume exit 0");
        expect_exact(run, c);
        const char* name = t.signal == SIGTERM ? "SIGTERM" : t.signal == SIGUSR1 ? "SIGUSR1" : "SIGINT";
        report.add({t.id, name, std::string(t.fault) + " (" + t.window + ")",
                    "exit 3 after " + util_seconds(took) + " at step " + std::to_string(t.step) + "; resumed from " +
                        (chosen && *chosen >= 0 ? "step " + std::to_string(*chosen) : "scratch"),
                    c.text()});
        std::printf("[ measured ] %s: %s %s: exit %d after %.3f s\n", t.id, name, t.window, code, took);
    }

    // S06: a second SIGTERM while the first one's checkpoint is being written ends the process at once
    // (128 + 15), leaving no temporary file and no incomplete checkpoint taken for a complete one.
    {
        Checks c;
        c.trial("S06");
        const fs::path run = run_dir("stop-S06");
        pid_t pid = spawn(train_args(run.string()), run.string() + ".log",
                          with_fault("eval:mid@2=stop,checkpoint:mid-write@1=stop"));
        c.expect(wait_child(pid, /*until_stopped=*/true).stopped, "stopped in the evaluation at step 3");
        ::kill(pid, SIGTERM);
        ::kill(pid, SIGCONT);
        c.expect(wait_child(pid, /*until_stopped=*/true).stopped, "stopped while checkpoint 3 is written");
        ::kill(pid, SIGTERM);
        const auto t0 = std::chrono::steady_clock::now();
        ::kill(pid, SIGCONT);
        const int code = wait_child(pid).code;
        const double took = seconds_since(t0);
        const std::string log = read(run.string() + ".log");
        c.expect(code == 128 + SIGTERM, "exit 143", std::to_string(code) + ": " + log.substr(log.size() > 2000 ? log.size() - 2000 : 0));
        c.expect(took < kReactionLimit, "reacted in " + util_seconds(took));
        c.expect(contains(log, "a second stop signal: stopping now"), "said so");
        c.expect(temporaries(run).empty(), "no temporaries");
        const Disk left = inspect(run);
        c.expect(!left.newest_complete, "no complete checkpoint", left.summary);
        std::optional<long long> chosen;
        c.expect(resume(run, c, &chosen) == 0, "resume exit 0");
        expect_exact(run, c);
        report.add({"S06", "SIGTERM twice", "eval:mid@2, then checkpoint:mid-write@1 (the stop's checkpoint of step 3)",
                    "exit " + std::to_string(code) + " after " + util_seconds(took) + "; on disk: " + left.summary +
                        "; resumed from " + (chosen && *chosen >= 0 ? "step " + std::to_string(*chosen) : "scratch"),
                    c.text()});
        std::printf("[ measured ] S06: a second SIGTERM during the stop's checkpoint: exit %d after %.3f s\n", code, took);
    }
}

// ---------------------------------------------------------------------------------------------
// Storage faults

namespace {

// A tmpfs of `bytes` mounted at `path` while the object lives (root and CAP_SYS_ADMIN needed).
class Tmpfs {
public:
    Tmpfs(const fs::path& path, size_t bytes) : path_(path) {
        fs::create_directories(path);
        const std::string options = "size=" + std::to_string(bytes);
        if (::mount("tmpfs", path.c_str(), "tmpfs", 0, options.c_str()) == 0) mounted_ = true;
        else error_ = std::strerror(errno);
    }
    ~Tmpfs() {
        if (mounted_) ::umount2(path_.c_str(), MNT_DETACH);
    }
    bool mounted() const { return mounted_; }
    const std::string& error() const { return error_; }
    bool remount(bool read_only) {
        return ::mount("tmpfs", path_.c_str(), "tmpfs", MS_REMOUNT | (read_only ? MS_RDONLY : 0), nullptr) == 0;
    }

private:
    fs::path path_;
    bool mounted_ = false;
    std::string error_;
};

// Fills the file system holding `file` until a write fails with ENOSPC; returns the bytes written.
size_t fill_disk(const fs::path& file) {
    int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<char> block(1 << 20, 'x');
    size_t total = 0;
    for (size_t chunk : {size_t{1} << 20, size_t{4096}, size_t{1}})
        while (true) {
            ssize_t n = ::write(fd, block.data(), chunk);
            if (n <= 0) break;
            total += static_cast<size_t>(n);
        }
    ::fsync(fd);
    ::close(fd);
    return total;
}

}  // namespace

// A run that fails on storage must fail cleanly: exit 1 (not a crash), STATUS failed with the error, the
// previous checkpoint intact and verified, no staging left, the metrics sidecar parseable.
class StorageFault : public Reliability {
protected:
    static void expect_clean_failure(const fs::path& run, int code, const std::string& log, const std::string& error,
                                     long long previous, Checks& c, bool status_writable = true) {
        c.expect(code == 1, "exit 1", "exit " + std::to_string(code) + "\n" + log.substr(0, 3000));
        c.expect(!contains(log, "terminate called") && !contains(log, "Aborted") && !contains(log, "Segmentation"),
                 "no crash", log.substr(0, 3000));
        if (status_writable) {
            json status = json::parse(read(run / "STATUS"));
            c.expect(status["state"] == "failed" && status["exit_code"] == 1 && contains(status["last_error"], error),
                     "STATUS failed: " + error, status.dump());
        } else {
            c.expect(contains(log, error), "error printed: " + error, log.substr(0, 3000));
        }
        const Disk disk = inspect(run);
        c.expect(disk.newest_complete == previous && disk.damaged.empty(),
                 "checkpoint " + std::to_string(previous) + " verified", disk.summary);
        c.expect(!contains(disk.summary, ".partial"), "no staging left", disk.summary);
        try {
            metrics::read_metrics(run);
            c.expect(read(run / "metrics.jsonl").back() == '\n', "sidecar parses");
        } catch (const std::exception& e) {
            c.expect(false, "sidecar parses", e.what());
        }
    }
};

TEST_F(StorageFault, DiskFullWhileWritingACheckpointOrResuming) {
    Report report("Storage faults", "storage_disk_full");
    straight();
    struct Case {
        const char* id;
        const char* fault;  // the first process: stops itself (the disk is filled then) or is killed
        bool at_resume;     // the disk is full when the killed run is resumed
        const char* what;
    };
    int n = 0;
    for (const Case& t : {Case{"S01", "checkpoint:begin@2=stop", false, "disk full while checkpoint 8 is written"},
                          Case{"S03", "checkpoint:after-done@1", true, "disk full when the run is resumed"}}) {
        Checks c;
        c.trial(t.id);
        const fs::path mount = dir->path() / ("tmpfs-" + std::to_string(++n));
        Tmpfs tmpfs(mount, 64 << 20);
        if (!tmpfs.mounted()) {
            report.add({t.id, "ENOSPC (tmpfs)", t.fault,
                        std::string("not run: mounting a tmpfs failed (") + tmpfs.error() + "); S02 and S04 fail writes with EFBIG",
                        "skipped"});
            continue;
        }
        const fs::path run = mount / "run";
        const std::string first_log = mount.string() + ".log";
        pid_t pid = spawn(train_args(run.string()), first_log, with_fault(t.fault));
        size_t ballast = 0;
        int code = -1;
        std::string log;
        if (!t.at_resume) {
            c.expect(wait_child(pid, true).stopped, "stopped at the point");
            ballast = fill_disk(mount / "ballast");
            ::kill(pid, SIGCONT);
            code = wait_child(pid).code;
            log = read(first_log);
        } else {
            c.expect(wait_child(pid).code == 128 + SIGKILL, "killed after checkpoint 4");
            ballast = fill_disk(mount / "ballast");
            const std::string resume_log = mount.string() + ".full.log";
            code = run_to_end({"resume", run.string()}, resume_log);
            log = read(resume_log);
        }
        expect_clean_failure(run, code, log, "No space left on device", 4, c);
        const std::string error = json::parse(read(run / "STATUS")).value("last_error", "");
        fs::remove(mount / "ballast");
        std::optional<long long> chosen;
        c.expect(resume(run, c, &chosen) == 0, "resume exit 0", read(run.string() + ".resume.log").substr(0, 3000));
        expect_exact(run, c);
        report.add({t.id, "ENOSPC (64 MiB tmpfs, " + std::to_string(ballast >> 20) + " MiB ballast)",
                    std::string(t.fault) + ": " + t.what,
                    "exit " + std::to_string(code) + ", STATUS failed: \"" + brief(error) +
                        "\"; ballast removed, resumed from step " + std::to_string(chosen.value_or(-1)),
                    c.text()});
    }
}

TEST_F(StorageFault, FileSizeLimitAndReadOnlyDirectories) {
    Report report("Storage faults", "storage_limits");
    const Straight& ref = straight();
    // Every case starts from a run killed right after its first checkpoint (step 4) is complete.
    auto killed_after_first_checkpoint = [&](const fs::path& run) {
        return run_to_end(train_args(run.string()), run.string() + ".log", with_fault("checkpoint:after-done@1"));
    };

    {  // S02: a file-size limit reached by a metrics flush: the stopped process gets RLIMIT_FSIZE = the
       // current size of metrics.jsonl, so the flush of step 6 fails with EFBIG (SIGXFSZ ignored).
        Checks c;
        c.trial("S02");
        const fs::path run = run_dir("fsize-metrics");
        pid_t pid = spawn(train_args(run.string()), run.string() + ".log", with_fault("eval:mid@3=stop"));
        c.expect(wait_child(pid, true).stopped, "stopped at the point");
        const rlim_t size = static_cast<rlim_t>(fs::file_size(run / "metrics.jsonl"));
        struct rlimit limit {size, size};
        c.expect(prlimit(pid, RLIMIT_FSIZE, &limit, nullptr) == 0, "prlimit");
        ::kill(pid, SIGCONT);
        const int code = wait_child(pid).code;
        expect_clean_failure(run, code, read(run.string() + ".log"), "File too large", 4, c);
        const std::string error = json::parse(read(run / "STATUS")).value("last_error", "");
        c.expect(contains(error, "metrics.jsonl"), "names metrics.jsonl", error);
        c.expect(fs::file_size(run / "metrics.jsonl") == size, "sidecar cut back to its last flush");
        std::optional<long long> chosen;
        c.expect(resume(run, c, &chosen) == 0, "resume exit 0");
        expect_exact(run, c);
        report.add({"S02", "EFBIG (RLIMIT_FSIZE = metrics.jsonl's size, set on the stopped process)",
                    "eval:mid@3=stop, then the metrics flush of step 6",
                    "exit " + std::to_string(code) + ", STATUS failed: \"" + brief(error) + "\"; resumed from step " +
                        std::to_string(chosen.value_or(-1)) + " without the limit",
                    c.text()});
    }

    {  // S04: RLIMIT_FSIZE below the size of model.safetensors: the write fails with EFBIG (SIGXFSZ ignored).
        Checks c;
        c.trial("S04");
        const fs::path run = run_dir("fsize");
        c.expect(killed_after_first_checkpoint(run) == 128 + SIGKILL, "killed after checkpoint 4");
        const rlim_t limit = ref.model.size() / 2;
        const std::string log = run.string() + ".limited.log";
        ChildOptions limited;
        limited.file_size_limit = limit;
        const int code = run_to_end({"resume", run.string()}, log, limited);
        expect_clean_failure(run, code, read(log), "File too large", 4, c);
        const std::string error = json::parse(read(run / "STATUS")).value("last_error", "");
        std::optional<long long> chosen;
        c.expect(resume(run, c, &chosen) == 0, "resume exit 0");
        expect_exact(run, c);
        report.add({"S04", "EFBIG (RLIMIT_FSIZE " + std::to_string(limit) + " bytes)", "the resumed run's checkpoint 8",
                    "exit " + std::to_string(code) + ", STATUS failed: \"" + brief(error) + "\"; resumed from step " +
                        std::to_string(chosen.value_or(-1)) + " without the limit",
                    c.text()});
    }

    {  // S05: the checkpoints directory becomes read-only mid-run (root without CAP_DAC_OVERRIDE obeys modes).
        Checks c;
        c.trial("S05");
        const fs::path run = run_dir("ro-checkpoints");
        ChildOptions options{{{"L3LAB_FAULT", "eval:mid@3=stop"}}, std::nullopt, /*without_dac_override=*/true};
        pid_t pid = spawn(train_args(run.string()), run.string() + ".log", options);
        c.expect(wait_child(pid, true).stopped, "stopped at the point");
        fs::permissions(run / "checkpoints", fs::perms::owner_write | fs::perms::group_write | fs::perms::others_write,
                        fs::perm_options::remove);
        ::kill(pid, SIGCONT);
        const int code = wait_child(pid).code;
        fs::permissions(run / "checkpoints", fs::perms::owner_write, fs::perm_options::add);
        expect_clean_failure(run, code, read(run.string() + ".log"), "Permission denied", 4, c);
        const std::string error = json::parse(read(run / "STATUS")).value("last_error", "");
        std::optional<long long> chosen;
        c.expect(resume(run, c, &chosen) == 0, "resume exit 0");
        expect_exact(run, c);
        report.add({"S05", "EACCES (chmod a-w checkpoints/, no CAP_DAC_OVERRIDE)", "eval:mid@3=stop, then checkpoint 8",
                    "exit " + std::to_string(code) + ", STATUS failed: \"" + brief(error) + "\"; mode restored, resumed from step " +
                        std::to_string(chosen.value_or(-1)),
                    c.text()});
    }

    {  // S06: the whole run directory read-only when the run is resumed: a read-only tmpfs (EROFS) when
       // mounting is allowed, else chmod -R a-w with the child lacking CAP_DAC_OVERRIDE (EACCES).
        Checks c;
        c.trial("S06");
        const fs::path mount = dir->path() / "tmpfs-ro";
        Tmpfs tmpfs(mount, 64 << 20);
        const fs::path run = tmpfs.mounted() ? mount / "run" : fs::path(run_dir("ro-run"));
        c.expect(killed_after_first_checkpoint(run) == 128 + SIGKILL, "killed after checkpoint 4");
        std::map<std::string, std::string> before;
        for (const auto& e : fs::recursive_directory_iterator(run))
            if (e.is_regular_file()) before[e.path().string()] = read(e.path());
        std::string how;
        ChildOptions options;
        if (tmpfs.mounted() && tmpfs.remount(true)) {
            how = "EROFS (tmpfs remounted read-only)";
        } else {
            how = "EACCES (chmod -R a-w, no CAP_DAC_OVERRIDE)";
            options.without_dac_override = true;
            for (const auto& e : fs::recursive_directory_iterator(run))
                fs::permissions(e.path(), fs::perms::owner_write | fs::perms::group_write | fs::perms::others_write,
                                fs::perm_options::remove);
            fs::permissions(run, fs::perms::owner_write | fs::perms::group_write | fs::perms::others_write, fs::perm_options::remove);
        }
        const std::string log = dir->path().string() + "/ro-resume.log";
        const int code = run_to_end({"resume", run.string()}, log, options);
        const std::string text = read(log);
        expect_clean_failure(run, code, text, how[1] == 'R' ? "Read-only file system" : "Permission denied", 4, c,
                             /*status_writable=*/false);
        std::map<std::string, std::string> after;
        for (const auto& e : fs::recursive_directory_iterator(run))
            if (e.is_regular_file()) after[e.path().string()] = read(e.path());
        c.expect(after == before, "nothing changed");
        std::string message;
        for (std::istringstream in(text); std::getline(in, message);)
            if (contains(message, "error")) break;
        if (how[1] == 'R') {
            c.expect(tmpfs.remount(false), "remounted read-write");
        } else {
            for (const auto& e : fs::recursive_directory_iterator(run)) fs::permissions(e.path(), fs::perms::owner_write, fs::perm_options::add);
            fs::permissions(run, fs::perms::owner_write, fs::perm_options::add);
        }
        std::optional<long long> chosen;
        c.expect(resume(run, c, &chosen) == 0, "resume exit 0", read(run.string() + ".resume.log").substr(0, 3000));
        expect_exact(run, c);
        report.add({"S06", how, "l3lab resume on a read-only run directory",
                    "exit " + std::to_string(code) + ": \"" + brief(message) + "\"; made writable, resumed from step " +
                        std::to_string(chosen.value_or(-1)),
                    c.text()});
    }
}

TEST_F(StorageFault, DamagedCheckpointsAreRefusedAndResumeFallsBack) {
    Report report("Storage faults", "storage_damaged");
    straight();
    // One run killed right after checkpoint 8 is complete (4 and 8 on disk), copied once per damage.
    const fs::path base = run_dir("damaged-base");
    ASSERT_EQ(run_to_end(train_args(base.string()), base.string() + ".log", with_fault("checkpoint:after-done@2")),
              128 + SIGKILL);
    ASSERT_EQ(inspect(base).summary, "4 ok, 8 ok");
    auto flip = [](const fs::path& file, size_t offset) {
        std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
        f.seekg(static_cast<std::streamoff>(offset));
        char b = 0;
        f.get(b);
        f.seekp(static_cast<std::streamoff>(offset));
        f.put(static_cast<char>(b ^ 0x5a));
    };
    struct Case {
        const char* id;
        const char* damage;
        std::function<void(const fs::path&)> apply;  // on the run directory
        const char* message;
        long long resume_from;
    };
    const std::vector<Case> cases = {
        {"S07", "one byte flipped in checkpoint 8's model.safetensors",
         [&](const fs::path& r) { flip(r / "checkpoints/step-00000008/model.safetensors", fs::file_size(r / "checkpoints/step-00000008/model.safetensors") / 2); },
         "model.safetensors does not match its checksum", 4},
        {"S08", "checkpoint 8's optimizer.safetensors truncated to half",
         [](const fs::path& r) {
             const fs::path f = r / "checkpoints/step-00000008/optimizer.safetensors";
             fs::resize_file(f, fs::file_size(f) / 2);
         },
         "optimizer.safetensors does not match its checksum", 4},
        {"S09", "one byte flipped in checkpoint 8's state.json",
         [&](const fs::path& r) { flip(r / "checkpoints/step-00000008/state.json", 40); }, "state.json does not match its checksum", 4},
        {"S10", "checkpoint 8's DONE marker garbled",
         [](const fs::path& r) { std::ofstream(r / "checkpoints/step-00000008/DONE") << "{\"step\": 8, \"files\": {"; },
         "unreadable DONE marker", 4},
        {"S11", "both checkpoints damaged (8 truncated, 4's model flipped)",
         [&](const fs::path& r) {
             fs::resize_file(r / "checkpoints/step-00000008/model.safetensors", 100);
             flip(r / "checkpoints/step-00000004/model.safetensors", 1000);
         },
         "model.safetensors does not match its checksum", -1},
    };
    for (const Case& t : cases) {
        Checks c;
        c.trial(t.id);
        const fs::path run = run_dir(std::string("damaged-") + t.id);
        fs::copy(base, run, fs::copy_options::recursive);
        t.apply(run);
        std::string outcome;
        if (std::string(t.id) == "S07") {  // a damaged checkpoint given by name is refused
            auto r = test::run_cli({"eval", (run / "checkpoints/step-00000008").string()});
            c.expect(r.code == 2 && contains(r.err, t.message), "eval refuses it (exit 2)", r.err);
            outcome = "l3lab eval: exit " + std::to_string(r.code) + " \"" + brief(r.err.substr(0, r.err.find('\n'))) + "\"; ";
        }
        // Odd cases resume with `l3lab resume`, even ones with `train --resume auto`.
        const bool train_auto = (t.id[2] - '0') % 2 == 0;
        std::optional<long long> chosen;
        const int code = resume(run, c, &chosen, {}, "resume", train_auto);
        const std::string log = read(run.string() + ".resume.log");
        c.expect(code == 0, "resume exit 0", log.substr(0, 3000));
        c.expect(contains(log, "skipping checkpoint " + (run / "checkpoints/step-00000008").string() + ": " + t.message),
                 "refused naming the file", log.substr(0, 3000));
        c.expect(chosen == t.resume_from, t.resume_from < 0 ? "fell back to scratch" : "fell back to " + std::to_string(t.resume_from));
        expect_exact(run, c);
        outcome += std::string(train_auto ? "train --resume auto" : "resume") + ": \"skipping checkpoint …/step-00000008: " +
                   std::string(t.message) + "\", resumed from " +
                   (chosen && *chosen >= 0 ? "step " + std::to_string(*chosen) : "scratch");
        report.add({t.id, "damaged checkpoint", t.damage, outcome, c.text()});
    }
}

// ---------------------------------------------------------------------------------------------
// Numerical faults

TEST_F(Reliability, NonFiniteStepsStopWithAPreFaultCheckpointOrAreSkipped) {
    Report report("Numerical faults", "numerical");
    straight();
    struct Case {
        const char* id;
        const char* fault;
        long long step;
        std::vector<std::string> message;  // what STATUS's error must name
    };
    for (const Case& t :
         {Case{"N01", "grad:nan@5=transformer.h.1.mlp.c_fc.weight", 5,
               {"non-finite values at step 5", "group 'matrices' (muon): transformer.h.1.mlp.c_fc.weight (1 of 65536 values: 1 NaN, 0 inf)"}},
          Case{"N02", "grad:inf@10=lm_head.weight", 10, {"non-finite values at step 10", "group 'lm_head' (adamw): lm_head.weight (1 of 65536 values: 0 NaN, 1 inf)"}},
          Case{"N03", "loss:nan@9", 9, {"non-finite values at step 9: training loss nan", "group 'wte' (adamw)", "group 'matrices' (muon)"}},
          Case{"N04", "loss:inf@2", 2, {"non-finite values at step 2: training loss inf", "group 'lm_head' (adamw)"}}}) {
        Checks c;
        c.trial(t.id);
        const fs::path run = run_dir(std::string("nonfinite-") + t.id);
        const int code = run_to_end(train_args(run.string()), run.string() + ".log", with_fault(t.fault));
        c.expect(code == 1, "exit 1", read(run.string() + ".log").substr(0, 3000));
        json status = json::parse(read(run / "STATUS"));
        const std::string error = status.value("last_error", "");
        bool named = status["state"] == "failed";
        for (const auto& m : t.message) named = named && contains(error, m);
        c.expect(named, "STATUS failed with the diagnostic", error);
        const std::string ckpt = "checkpoints/step-" + std::string(8 - std::to_string(t.step).size(), '0') + std::to_string(t.step);
        c.expect(contains(error, ckpt + " holds the state before it"), "message names the checkpoint", error);
        c.expect(train::checkpoint_problem((run / ckpt).string()).empty(), "pre-fault checkpoint complete");
        const auto log = metrics::read_metrics(run);
        c.expect(!log.train.empty() && log.train.back().step == t.step - 1, "metrics end at step " + std::to_string(t.step - 1));
        // The checkpoint holds the state before the bad step: resumed without the fault, the run is the
        // straight one, bit for bit (had the bad update been applied, the weights would hold NaN).
        std::optional<long long> chosen;
        c.expect(resume(run, c, &chosen) == 0, "resume exit 0");
        c.expect(chosen == t.step, "resumed from the pre-fault checkpoint");
        expect_exact(run, c);
        report.add({t.id, std::string(t.fault).substr(0, std::string(t.fault).find('@')), t.fault,
                    "exit 1, STATUS failed: \"" + brief(error) + "\"; resumed without the fault from step " +
                        std::to_string(chosen.value_or(-1)),
                    c.text()});
    }

    {  // N05: a genuinely unstable run: every learning rate 1e6 (the schema's maximum).
        Checks c;
        c.trial("N05");
        const fs::path run = run_dir("unstable");
        std::string groups = "optimizer.groups=[";
        for (const char* g : {"{name: lm_head, kind: adamw, roles: [lm_head]", "{name: wte, kind: adamw, roles: [token_embedding]",
                              "{name: value_embeds, kind: adamw, roles: [value_embedding]",
                              "{name: resid_lambdas, kind: adamw, roles: [resid_lambda]", "{name: x0_lambdas, kind: adamw, roles: [x0_lambda]",
                              "{name: l3_tables, kind: adamw, roles: [l3_table]", "{name: matrices, kind: muon, roles: [matrix, l3_matrix]"})
            groups += std::string(groups.back() == '[' ? "" : ", ") + g + ", lr: 1.0e6}";
        groups += "]";
        const int code = run_to_end(train_args(run.string(), {groups}), run.string() + ".log");
        json status = json::parse(read(run / "STATUS"));
        const std::string error = status.value("last_error", "");
        c.expect(code == 1 && status["state"] == "failed", "exit 1, STATUS failed", error);
        c.expect(contains(error, "non-finite values at step") && contains(error, "non-finite gradients in group"),
                 "diagnostic names the groups", error);
        std::smatch m;
        const bool found = std::regex_search(error, m, std::regex("step ([0-9]+):"));
        const std::string ckpt = found ? "checkpoints/step-" + std::string(8 - m[1].str().size(), '0') + m[1].str() : "?";
        c.expect(found && train::checkpoint_problem((run / ckpt).string()).empty(), "pre-fault checkpoint complete", ckpt);
        // The bad update was not applied: every F32 weight of the pre-fault checkpoint is finite.
        size_t nonfinite = 0, checked = 0;
        if (found)
            for (const auto& t : io::read_safetensors((run / ckpt / "model.safetensors").string()).tensors) {
                if (t.dtype != io::DType::F32) continue;
                for (size_t i = 0; i + 4 <= t.data.size(); i += 4, ++checked) {
                    float v;
                    std::memcpy(&v, t.data.data() + i, 4);
                    nonfinite += !std::isfinite(v);
                }
            }
        c.expect(checked > 0 && nonfinite == 0, "pre-fault weights finite", std::to_string(nonfinite) + " non-finite");
        report.add({"N05", "NaN gradients (real)", "every lr 1e6 (no hook)",
                    "exit " + std::to_string(code) + ", STATUS failed: \"" + brief(error) + "\"", c.text()});
    }

    {  // N06: the skip guard: train.skip_nonfinite_steps: 1 skips one bad step and stops at the second.
        Checks c;
        c.trial("N06");
        const fs::path run = run_dir("skip-one");
        int code = run_to_end(train_args(run.string(), {"train.skip_nonfinite_steps=1"}), run.string() + ".log",
                              with_fault("grad:nan@3"));
        c.expect(code == 0, "one bad step: exit 0", read(run.string() + ".log").substr(0, 3000));
        json summary = json::parse(read(run / "summary.json"));
        c.expect(summary["skipped_steps"] == 1, "summary skipped_steps 1", summary.dump());
        const auto log = metrics::read_metrics(run);
        size_t skipped = 0;
        for (const auto& r : log.train) skipped += static_cast<size_t>(r.skipped);
        c.expect(log.train.size() == static_cast<size_t>(kSteps) && log.train[3].skipped == 1 && skipped == 1,
                 "step 3 logged with skipped 1");
        c.expect(contains(read(run / "train.log"), "step skipped (1 of train.skip_nonfinite_steps 1)"), "warning logged");
        const fs::path run2 = run_dir("skip-two");
        code = run_to_end(train_args(run2.string(), {"train.skip_nonfinite_steps=1"}), run2.string() + ".log",
                          with_fault("grad:nan@3,grad:nan@7"));
        const std::string error = json::parse(read(run2 / "STATUS")).value("last_error", "");
        c.expect(code == 1 && contains(error, "non-finite values at step 7") &&
                     contains(error, "checkpoints/step-00000007 holds the state before it (train.skip_nonfinite_steps: 1)"),
                 "second bad step: exit 1 with a checkpoint", error);
        report.add({"N06", "skip guard", "train.skip_nonfinite_steps=1; grad:nan@3 (and @7)",
                    "one bad step: completed, summary skipped_steps 1, metrics skipped=1 at step 3 only; two: exit 1 at step 7", c.text()});
    }
}
