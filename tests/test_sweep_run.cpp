// `l3lab sweep run | status | collect | slurm` end to end through the real executable, on the shipped
// tiny sweep shrunk to a 512-token vocabulary: plan -> run -> interrupt -> rerun (skips and resumes) ->
// collect -> fit; two supervisors and an array of per-cell runs on one sweep (no cell runs twice, none
// is lost); failures, --retry-failed and on_failure: abort; the sbatch script.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "runner/sweep/cell_state.h"
#include "runner/sweep/slurm.h"
#include "runner/sweep/supervisor.h"
#include "runner/sweep/sweep.h"
#include "test_data_util.h"
#include "test_util.h"

using namespace l3lab;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

int count(const std::string& text, const std::string& what) {
    int n = 0;
    for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
}

// Steps logged in a run's metrics.jsonl: step -> how many train records it has.
std::map<int64_t, int> train_steps(const fs::path& run) {
    std::map<int64_t, int> steps;
    std::ifstream in(run / "metrics.jsonl");
    std::string line;
    while (std::getline(in, line)) {
        try {
            json r = json::parse(line);
            if (r.contains("raw_loss")) steps[r["step"].get<int64_t>()]++;
        } catch (const json::exception&) {
        }
    }
    return steps;
}

// Every cell completed, each with exactly `attempts` attempts and every step logged exactly once.
void expect_all_completed_once(const sweep::Sweep& s, size_t attempts = 1) {
    for (const auto& cell : s.cells) {
        auto st = sweep::read_cell_status(s, cell);
        EXPECT_EQ(st.state, sweep::CellState::Completed) << cell.dir << ": " << st.last_error;
        if (attempts) {
            EXPECT_EQ(st.attempts.size(), attempts) << cell.dir;
        }
        auto steps = train_steps(st.run_dir);
        EXPECT_EQ(steps.size(), static_cast<size_t>(cell.plan.num_iterations)) << cell.dir;
        for (const auto& [step, n] : steps) EXPECT_EQ(n, 1) << cell.dir << " step " << step;
    }
}

class SweepRun : public ::testing::Test {
protected:
    static inline test::TempDir* dir = nullptr;
    static inline std::string tok, shards;

    static void SetUpTestSuite() {
        test::prepare_training_suite();
        // `sweep run` started in-process (run_cli) would otherwise start this test binary as the trainer.
        setenv("L3LAB_SWEEP_EXECUTABLE", L3LAB_BINARY, 1);
        dir = new test::TempDir();
        const test::TinyData data = test::make_tiny_data(dir->path(), 7000, 300, 600);
        tok = data.tokenizer;
        shards = data.shards;
    }
    static void TearDownTestSuite() { delete dir; }

    // The shipped tiny sweep on the test's data, with a 512-token vocabulary and its own output.
    // `val_in_set`: false when the test sweeps data.val itself.
    static std::string sweep_file(const std::string& name, const std::string& extra = "", int checkpoint_every = 20,
                                  bool val_in_set = true) {
        return dir->write(name + ".yaml",
                          "extends: [" + (test::kSourceDir / "sweeps" / "tiny.yaml").string() + "]\n"
                          "name: " + name + "\n"
                          "set: {model.vocab_size: 512, eval.tokens: 512, checkpoint.every: " +
                              std::to_string(checkpoint_every) + ",\n"
                          "      data.tokenizer: " + tok + ", data.train: " + shards + (val_in_set ? ", data.val: " + shards : "") + "}\n" +
                          extra + "output: " + (dir->path() / "out").string() + "\n");
    }
    static std::string log(const std::string& name) { return (dir->path() / (name + ".log")).string(); }
};

// ---- plan -> run -> interrupt -> rerun -> collect -> fit ----------------------------------------------

TEST_F(SweepRun, RunInterruptResumeCollectFit) {
    const std::string file = sweep_file("e2e", "grid: {horizon.target_flops: [4.0e10, 1.2e11]}\n");
    auto plan = test::run_cli({"sweep", "plan", file});
    ASSERT_EQ(plan.code, 0) << plan.err;
    EXPECT_NE(plan.out.find("total: 12 cells"), std::string::npos) << plan.out;
    sweep::Sweep s = sweep::load_sweep(file);

    // Interrupt once a cell has completed and the next ones are training (past their first checkpoint).
    // Progress lines every 0.5 s (docs/progress.md): the supervisor's count of cells, on its clock.
    pid_t pid = test::spawn_l3lab({"sweep", "run", file, "--jobs", "2"}, log("e2e-run1"),
                                  [] { setenv("L3LAB_PROGRESS_INTERVAL", "0.5", 1); });
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
    bool interrupted = false;
    while (std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        const std::string out = test::slurp(log("e2e-run1"));
        if (count(out, "completed in") < 1) continue;
        // Wait for a running cell with a complete checkpoint, so that the rerun really resumes.
        bool checkpointed = false;
        for (const auto& cell : s.cells)
            if (sweep::cell_locked(s, cell) && fs::exists(fs::path(sweep::cell_run_dir(s, cell)) / "checkpoints" / "step-00000020" / "DONE"))
                checkpointed = true;
        if (!checkpointed) continue;
        ::kill(pid, SIGTERM);
        interrupted = true;
        break;
    }
    ASSERT_TRUE(interrupted) << test::slurp(log("e2e-run1"));
    ASSERT_EQ(test::wait_exit(pid), 3) << test::slurp(log("e2e-run1"));
    const std::string first = test::slurp(log("e2e-run1"));
    EXPECT_NE(first.find("asking"), std::string::npos) << first;
    EXPECT_NE(first.find("sweep e2e: "), std::string::npos) << first;
    EXPECT_NE(first.find("/12 cells, "), std::string::npos) << first;

    std::map<int, size_t> completed_before;
    std::vector<int> interrupted_cells;
    for (const auto& cell : s.cells) {
        auto st = sweep::read_cell_status(s, cell);
        EXPECT_NE(st.state, sweep::CellState::Running) << cell.dir;
        EXPECT_NE(st.state, sweep::CellState::Failed) << cell.dir << ": " << st.last_error;
        if (st.state == sweep::CellState::Completed) completed_before[cell.index] = st.attempts.size();
        if (st.state == sweep::CellState::Interrupted) interrupted_cells.push_back(cell.index);
    }
    ASSERT_FALSE(completed_before.empty());
    ASSERT_FALSE(interrupted_cells.empty()) << first;

    auto status = test::run_cli({"sweep", "status", file});
    ASSERT_EQ(status.code, 0) << status.err;
    EXPECT_NE(status.out.find("interrupted"), std::string::npos) << status.out;

    // The rerun skips completed cells, resumes the interrupted ones from their checkpoints, runs the rest.
    pid = test::spawn_l3lab({"sweep", "run", file, "--jobs", "2"}, log("e2e-run2"));
    ASSERT_EQ(test::wait_exit(pid), 0) << test::slurp(log("e2e-run2"));
    const std::string second = test::slurp(log("e2e-run2"));
    EXPECT_EQ(count(second, "completed, skipped"), static_cast<int>(completed_before.size())) << second;
    for (int index : interrupted_cells) {
        const auto& cell = s.cells[index];
        EXPECT_NE(second.find("cell " + cell.dir + ": resuming (interrupted"), std::string::npos) << second;
        const std::string cell_log = test::slurp(sweep::cell_log_path(s, cell));
        EXPECT_NE(cell_log.find("resumed from"), std::string::npos) << cell_log;
    }
    for (const auto& cell : s.cells) {
        auto st = sweep::read_cell_status(s, cell);
        ASSERT_EQ(st.state, sweep::CellState::Completed) << cell.dir << ": " << st.last_error;
        size_t expected = completed_before.count(cell.index) ? completed_before[cell.index]
                          : std::count(interrupted_cells.begin(), interrupted_cells.end(), cell.index) ? 2u
                                                                                                        : 1u;
        EXPECT_EQ(st.attempts.size(), expected) << cell.dir;
        auto steps = train_steps(st.run_dir);
        EXPECT_EQ(steps.size(), static_cast<size_t>(cell.plan.num_iterations)) << cell.dir;
        for (const auto& [step, n] : steps) EXPECT_EQ(n, 1) << cell.dir << " step " << step;
    }

    // A third run has nothing to do.
    auto third = test::run_cli({"sweep", "run", file});
    EXPECT_EQ(third.code, 0);
    EXPECT_EQ(count(third.out, "completed, skipped"), 12) << third.out;

    // The sweep directory is a TensorBoard log directory of 12 runs, one per cell (docs/tracking.md).
    const test::ToolResult logdir = test::run_python_tool(
        "tools/tensorboard/check_events.py", {"--logdir", s.sweep_dir(), "--runs", "12"});
    EXPECT_EQ(logdir.code, 0) << logdir.output;

    // collect: one row per cell, every number present.
    auto collect = test::run_cli({"sweep", "collect", file});
    ASSERT_EQ(collect.code, 0) << collect.err;
    const fs::path sweep_dir = s.sweep_dir();
    std::ifstream csv(sweep_dir / "results.csv");
    std::string header, line;
    std::getline(csv, header);
    EXPECT_EQ(header.rfind("index,id,dir,state,horizon.target_flops,model.depth,l3_at_fraction,depth,n_l3_layers,", 0), 0u)
        << header;
    std::vector<std::string> names;
    {
        std::stringstream h(header);
        for (std::string name; std::getline(h, name, ',');) names.push_back(name);
    }
    int rows = 0;
    while (std::getline(csv, line)) {
        ++rows;
        // Split on commas outside quotes (dir is quoted).
        std::vector<std::string> fields(1);
        bool quoted = false;
        for (char ch : line) {
            if (ch == '"') quoted = !quoted;
            else if (ch == ',' && !quoted) fields.emplace_back();
            else fields.back() += ch;
        }
        ASSERT_EQ(fields.size(), names.size()) << line;
        std::map<std::string, std::string> row;
        for (size_t i = 0; i < names.size(); ++i) row[names[i]] = fields[i];
        EXPECT_EQ(row["state"], "completed") << line;
        for (const char* number : {"final_val_bpb", "min_val_bpb", "params_scaling", "tokens", "total_flops", "wall_time_s"})
            EXPECT_GT(std::atof(row[number].c_str()), 0) << number << ": " << line;
        EXPECT_EQ(row["last_error"], "") << line;
        EXPECT_EQ(row["core_score"], "") << line;  // CORE off (debug.yaml): empty, never 0
    }
    EXPECT_EQ(rows, 12);
    EXPECT_TRUE(fs::exists(sweep_dir / "results.h5"));
    EXPECT_TRUE(fs::exists(sweep_dir / "manifest.yaml"));
    const std::string manifest = test::slurp(sweep_dir / "manifest.yaml");
    EXPECT_EQ(count(manifest, "  - index: "), 12);
    EXPECT_NE(manifest.find(s.cells[5].id), std::string::npos);

    // results.h5 as h5py reads it: the same rows.
    const std::string py = "import h5py,sys; f=h5py.File(sys.argv[1],'r'); c=f['cells']; "
                           "print(len(c['index']), sum(1 for s in c['state'][()] if s==b'completed'), "
                           "int((c['final_val_bpb'][()]>0).sum()))";
    FILE* pipe = popen(("/usr/bin/python3 -c \"" + py + "\" " + (sweep_dir / "results.h5").string()).c_str(), "r");
    char buf[256] = {};
    std::string h5out = fgets(buf, sizeof buf, pipe) ? buf : "";
    pclose(pipe);
    EXPECT_EQ(h5out, "12 12 12\n");

    // The scaling-law fit runs on the collected sweep and writes its report.
    const std::string fit = "/usr/bin/python3 " + (test::kSourceDir / "tools/scaling/fit.py").string() + " " +
                            sweep_dir.string() + " > " + log("e2e-fit") + " 2>&1";
    EXPECT_EQ(std::system(fit.c_str()), 0) << test::slurp(log("e2e-fit"));
    EXPECT_TRUE(fs::exists(sweep_dir / "analysis" / "report.md")) << test::slurp(log("e2e-fit"));
    EXPECT_TRUE(fs::exists(sweep_dir / "analysis" / "isoflop.png"));
}

// ---- concurrency: two supervisors and a SLURM-style array of per-cell runs ---------------------------

TEST_F(SweepRun, ConcurrentRunnersNeverRunACellTwice) {
    const std::string file =
        sweep_file("concurrent", "grid: {horizon.target_flops: [1.0e10], model.depth: [1, 2], l3_at_fraction: [[], [0.5]]}\n"
                                 "seeds: [1, 2]\n");
    sweep::Sweep s = sweep::load_sweep(file);
    ASSERT_EQ(s.cells.size(), 8u);
    std::vector<pid_t> pids = {test::spawn_l3lab({"sweep", "run", file}, log("conc-a")),
                               test::spawn_l3lab({"sweep", "run", file, "--jobs", "2"}, log("conc-b"))};
    // An array task per cell, as `sweep slurm` submits them, started at the same time.
    for (const auto& cell : s.cells)
        pids.push_back(test::spawn_l3lab({"sweep", "run", file, "--cells", std::to_string(cell.index)},
                                         log("conc-cell" + std::to_string(cell.index))));
    for (pid_t pid : pids) EXPECT_EQ(test::wait_exit(pid), 0);
    std::string all;
    for (const char* n : {"conc-a", "conc-b"}) all += test::slurp(log(n));
    for (const auto& cell : s.cells) all += test::slurp(log("conc-cell" + std::to_string(cell.index)));
    for (const auto& cell : s.cells)
        EXPECT_EQ(count(all, "cell " + cell.dir + ": starting"), 1) << cell.dir << "\n" << all;
    expect_all_completed_once(s);
}

// ---- failures ---------------------------------------------------------------------------------------

TEST_F(SweepRun, FailedCellsAreKeptFailedUntilRetried) {
    // The second validation set does not exist: that cell is refused before its run directory is made.
    const std::string file = sweep_file(
        "failing", "grid: {horizon.target_flops: [1.0e10], model.depth: [1], l3_at_fraction: [[]],\n"
                   "       data.val: [" + shards + ", " + (dir->path() / "missing").string() + "]}\n", 20, false);
    sweep::Sweep s = sweep::load_sweep(file);
    ASSERT_EQ(s.cells.size(), 2u);
    auto first = test::run_cli({"sweep", "run", file});
    EXPECT_EQ(first.code, 1) << first.out;
    EXPECT_NE(first.out.find("cell " + s.cells[1].dir + ": FAILED (exit 2)"), std::string::npos) << first.out;
    auto st = sweep::read_cell_status(s, s.cells[1]);
    EXPECT_EQ(st.state, sweep::CellState::Failed);
    EXPECT_NE(st.last_error.find("missing"), std::string::npos) << st.last_error;
    EXPECT_EQ(sweep::read_cell_status(s, s.cells[0]).state, sweep::CellState::Completed);

    auto again = test::run_cli({"sweep", "run", file});
    EXPECT_EQ(again.code, 1);
    EXPECT_NE(again.out.find("failed earlier"), std::string::npos) << again.out;
    EXPECT_EQ(sweep::read_cell_status(s, s.cells[1]).attempts.size(), 1u);
    auto retry = test::run_cli({"sweep", "run", file, "--retry-failed"});
    EXPECT_EQ(retry.code, 1);
    EXPECT_EQ(sweep::read_cell_status(s, s.cells[1]).attempts.size(), 2u);

    // collect: the failed cell is a row with its state and no numbers, never a zero.
    ASSERT_EQ(test::run_cli({"sweep", "collect", file}).code, 0);
    std::ifstream csv(fs::path(s.sweep_dir()) / "results.csv");
    std::string header, row0, row1;
    std::getline(csv, header);
    std::getline(csv, row0);
    std::getline(csv, row1);
    EXPECT_NE(row1.find(",failed,"), std::string::npos) << row1;
    EXPECT_NE(row1.find(",,"), std::string::npos) << "final_val_bpb should be empty: " << row1;
    EXPECT_EQ(row1.find(",0.0,"), std::string::npos) << row1;

    auto status = test::run_cli({"sweep", "status", file, "--json"});
    ASSERT_EQ(status.code, 0);
    json j = json::parse(status.out);
    EXPECT_EQ(j["cells"][1]["state"], "failed");
    EXPECT_TRUE(j["cells"][1]["final_val_bpb"].is_null());
    EXPECT_EQ(j["cells"][0]["state"], "completed");
}

TEST_F(SweepRun, AbortStopsStartingCells) {
    const std::string file = sweep_file(
        "aborting", "on_failure: abort\n"
                    "grid: {horizon.target_flops: [1.0e10], model.depth: [1], l3_at_fraction: [[]],\n"
                    "       data.val: [" + (dir->path() / "missing").string() + ", " + shards + "]}\n", 20, false);
    sweep::Sweep s = sweep::load_sweep(file);
    auto r = test::run_cli({"sweep", "run", file});
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.out.find("on_failure: abort"), std::string::npos) << r.out;
    EXPECT_EQ(sweep::read_cell_status(s, s.cells[1]).state, sweep::CellState::Pending);
    EXPECT_NE(r.out.find("1 not started"), std::string::npos) << r.out;
}

TEST_F(SweepRun, BadOptionsExit2) {
    const std::string file = sweep_file("options");
    EXPECT_EQ(test::run_cli({"sweep", "run", file, "--cells", "12"}).code, 2);
    EXPECT_EQ(test::run_cli({"sweep", "run", file, "--cells", "3-1"}).code, 2);
    EXPECT_EQ(test::run_cli({"sweep", "run", file, "--jobs", "0"}).code, 2);
    EXPECT_EQ(test::run_cli({"sweep", "run", file, "--jobs", "2", "--devices", "0"}).code, 2);
    EXPECT_EQ(test::run_cli({"sweep", "slurm", file}).code, 2);  // --out is required
    EXPECT_EQ(test::run_cli({"sweep", "status"}).code, 2);
    EXPECT_EQ(test::run_cli({"sweep", "launch", file}).code, 2);
    EXPECT_FALSE(fs::exists(dir->path() / "out" / "options"));
}

// ---- the sbatch script ------------------------------------------------------------------------------

TEST_F(SweepRun, SlurmScriptCoversUnfinishedCells) {
    EXPECT_EQ(sweep::array_ranges({0, 1, 2, 3, 5, 7, 8}), "0-3,5,7-8");
    EXPECT_EQ(sweep::parse_cell_list("5,0-2,2", 12), (std::vector<int>{0, 1, 2, 5}));
    const std::string file = sweep_file("slurmgen");
    sweep::Sweep s = sweep::load_sweep(file);
    // Mark cell 4 completed as a finished run directory would.
    const fs::path run4 = sweep::cell_run_dir(s, s.cells[4]);
    fs::create_directories(run4);
    std::ofstream(run4 / "config.yaml") << "x: 1\n";
    std::ofstream(run4 / "STATUS") << R"({"state": "completed", "step": 3})";
    auto r = test::run_cli({"sweep", "slurm", file, "--out", (dir->path() / "slurm").string(), "--throttle", "3",
                            "--partition", "gpu", "--time", "01:00:00", "--sbatch-arg", "--account=lab",
                            "--gpus-per-cell", "2"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("sbatch "), std::string::npos) << r.out;
    const std::string script = test::slurp(dir->path() / "slurm" / "slurmgen.sbatch");
    for (const char* expected :
         {"#SBATCH --array=0-3,5-11%3\n", "#SBATCH --requeue\n", "#SBATCH --signal=B:USR1@120\n",
          "#SBATCH --partition=gpu\n", "#SBATCH --time=01:00:00\n", "#SBATCH --account=lab\n", "#SBATCH --ntasks=2\n",
          "#SBATCH --gpus-per-task=1\n", "--cells \"$SLURM_ARRAY_TASK_ID\" --srun-tasks 2", "scontrol requeue",
          "trap 'kill -USR1"})
        EXPECT_NE(script.find(expected), std::string::npos) << expected << "\n" << script;
    const std::string check = "bash -n " + (dir->path() / "slurm" / "slurmgen.sbatch").string();
    EXPECT_EQ(std::system(check.c_str()), 0);
}

// ---- a real SLURM: the array on a single-node cluster of this machine ---------------------------------

TEST_F(SweepRun, SlurmArrayOnLocalCluster) {
    const std::string harness = (test::kSourceDir / "tools" / "slurm" / "local_cluster.sh").string();
    const fs::path cluster = dir->path() / "slurm-cluster";
    const std::string env = (dir->path() / "slurm.env").string(), err = (dir->path() / "slurm.err").string();
    const std::string start = "L3LAB_SLURM_OWNER_PID=" + std::to_string(::getpid()) + " L3LAB_SLURM_MAX_LIFETIME=900 " +
                              harness + " start " + cluster.string() + " > " + env + " 2> " + err;
    const int started = std::system(start.c_str());
    if (WIFEXITED(started) && WEXITSTATUS(started) == 77)
        GTEST_SKIP() << "SLURM cannot start on this machine: " << test::slurp(err);
    ASSERT_EQ(started, 0) << test::slurp(err);
    struct Stop {
        std::string command;
        ~Stop() { (void)std::system(command.c_str()); }
    } stop{harness + " stop " + cluster.string() + " > /dev/null 2>&1"};
    auto in_cluster = [&](const std::string& command) { return std::system((". " + env + " && " + command).c_str()); };

    // Two cells: a short one, and a long one that is preempted (USR1, as --signal sends it) and requeued.
    const std::string file = sweep_file(
        "slurm", "grid: {horizon.target_flops: [1.0e10, 4.0e11], model.depth: [1], l3_at_fraction: [[]]}\n", 50);
    sweep::Sweep s = sweep::load_sweep(file);
    ASSERT_EQ(s.cells.size(), 2u);
    const std::string submit_log = log("slurm-submit");
    ASSERT_EQ(in_cluster(std::string(L3LAB_BINARY) + " sweep slurm " + file + " --out " + (dir->path() / "sbatch").string() +
                         " --throttle 2 --submit > " + submit_log + " 2>&1"),
              0)
        << test::slurp(submit_log);
    std::smatch m;
    const std::string submitted = test::slurp(submit_log);
    ASSERT_TRUE(std::regex_search(submitted, m, std::regex("Submitted batch job ([0-9]+)"))) << submitted;
    const std::string job = m[1];

    auto wait_until = [&](auto done, int seconds) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
        while (std::chrono::steady_clock::now() < deadline) {
            if (done()) return true;
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        return false;
    };
    const auto& long_cell = s.cells[1];
    const fs::path first_checkpoint = fs::path(sweep::cell_run_dir(s, long_cell)) / "checkpoints" / "step-00000050" / "DONE";
    ASSERT_TRUE(wait_until([&] { return fs::exists(first_checkpoint); }, 240))
        << "the long cell never checkpointed\n" << test::slurp(sweep::cell_log_path(s, long_cell));
    ASSERT_EQ(in_cluster("scancel --signal=USR1 --batch " + job + "_1"), 0);

    const bool finished = wait_until(
        [&] {
            for (const auto& cell : s.cells)
                if (sweep::read_cell_status(s, cell).state != sweep::CellState::Completed) return false;
            return true;
        },
        300);
    std::string slurm_logs;
    for (const auto& entry : fs::directory_iterator(fs::path(s.sweep_dir()) / "slurm"))
        slurm_logs += "--- " + entry.path().string() + "\n" + test::slurp(entry.path());
    ASSERT_TRUE(finished) << slurm_logs;
    EXPECT_EQ(sweep::read_cell_status(s, s.cells[0]).attempts.size(), 1u) << slurm_logs;
    auto preempted = sweep::read_cell_status(s, long_cell);
    ASSERT_EQ(preempted.attempts.size(), 2u) << slurm_logs;
    EXPECT_EQ(preempted.attempts[0].exit_code, 3);
    EXPECT_EQ(preempted.attempts[1].exit_code, 0);
    EXPECT_NE(slurm_logs.find("requeueing " + job + "_1"), std::string::npos) << slurm_logs;
    EXPECT_NE(test::slurp(sweep::cell_log_path(s, long_cell)).find("resumed from"), std::string::npos);
    expect_all_completed_once(s, 0);  // attempts checked above; steps: each exactly once

    auto collect = test::run_cli({"sweep", "collect", file});
    ASSERT_EQ(collect.code, 0);
    EXPECT_NE(collect.out.find("2 completed, 0 failed"), std::string::npos) << collect.out;
}

}  // namespace
