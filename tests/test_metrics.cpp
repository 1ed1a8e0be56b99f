// Metrics store: the sidecar and its HDF5 view agree, flushes make records durable, a SIGKILL at any
// moment loses nothing flushed, resume gives one series, and h5py, pandas and the plot script read it.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "runner/metrics/metrics.h"
#include "test_util.h"

using namespace l3lab;
using namespace l3lab::metrics;
namespace fs = std::filesystem;
using std::chrono::milliseconds;

namespace {

// Debian's python3, where python3-h5py, -pandas and -matplotlib are installed (tools/bootstrap.sh); the
// project's .venv is for torch and has none of them.
constexpr const char* kSystemPython = "/usr/bin/python3";

const WriterOptions kNeverAutoFlush{.resume_at_step = std::nullopt, .flush_interval = std::chrono::hours(1)};

WriterOptions resume_at(int64_t step) { return {.resume_at_step = step, .flush_interval = std::chrono::hours(1)}; }

Attributes attributes(const std::string& tag = "first") {
    return {"model:\n  depth: 2\nname: ünïcode-" + tag + "\n",
            R"({"git_sha": "abc123", "pid": 42, "tag": ")" + tag + "\"}"};
}

// Distinct, exactly representable values derived from the step, so a record shows where it came from.
TrainRecord train_record(int64_t step) {
    const double s = static_cast<double>(step);
    return {.step = step,
            .loss = 10.0 / (s + 1),
            .raw_loss = 10.5 / (s + 1),
            .lrm = 1.0 - s / 4096,
            .dt = 0.25,
            .tok_per_sec = 1000 + s,
            .mfu = 42.5,
            .tokens = step * 2048 + 2048,
            .flops = 1.5e18 * (s + 1),
            .epoch = step / 100,
            .elapsed = 0.25 * (s + 1)};
}

std::vector<int64_t> train_steps(const MetricsLog& log) {
    std::vector<int64_t> steps;
    for (const auto& r : log.train) steps.push_back(r.step);
    return steps;
}

std::vector<int64_t> iota_steps(int64_t first, int64_t end) {
    std::vector<int64_t> steps;
    for (int64_t s = first; s < end; ++s) steps.push_back(s);
    return steps;
}

std::vector<int64_t> val_steps(const MetricsLog& log) {
    std::vector<int64_t> steps;
    for (const auto& r : log.val) steps.push_back(r.step);
    return steps;
}

// Train records first..end-1, a val record every `val_every` steps (at the top of the step, before it trains),
// a sample at step 0.
// A CORE evaluation of three tasks (one with a non-ASCII label) whose numbers depend on the step.
CoreRecord core_record(int64_t step) {
    const double s = static_cast<double>(step);
    return {step, 0.01 * s, {{"hellaswag_zeroshot", 0.25 + s / 1000, s / 1000}, {"jeopardy", 0.5, 0.5}, {"wïnograd ✓", 0.75, 0.5 - s / 500}}};
}

void write_steps(MetricsWriter& w, int64_t first, int64_t end, int64_t val_every = 25) {
    for (int64_t step = first; step < end; ++step) {
        if (step % val_every == 0) w.val({step, 1.0 + 1.0 / (step + 1), step % 2 ? std::nullopt : std::optional(3.5)});
        if (step % 50 == 0) w.sample({step, "The capital of France is", "Paris. step " + std::to_string(step)});
        if (step > 0 && step % 40 == 0) w.core(core_record(step));
        w.train(train_record(step));
    }
}

struct CommandResult {
    int exit_code = -1;
    std::string output;
};

CommandResult run_command(const std::string& command) {
    CommandResult result;
    FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
    if (!pipe) return result;
    char buf[4096];
    while (size_t n = std::fread(buf, 1, sizeof buf, pipe)) result.output.append(buf, n);
    int status = ::pclose(pipe);
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return result;
}

std::string shell_arg(const fs::path& p) { return "'" + p.string() + "'"; }

// A child process that writes `records` train records, flushes, reports, then waits to be killed:
// a run that crashed with a known last flushed step. Returns that step.
int64_t write_then_get_killed(const fs::path& run_dir, int64_t records) {
    int fds[2];
    if (::pipe(fds) != 0) return -1;
    pid_t pid = ::fork();
    if (pid == 0) {
        ::close(fds[0]);
        try {
            MetricsWriter w(run_dir, attributes(), kNeverAutoFlush);
            write_steps(w, 0, records);
            w.flush();
            int64_t last = records - 1;
            if (::write(fds[1], &last, sizeof last) != sizeof last) ::_exit(3);
            ::pause();
        } catch (...) {
            ::_exit(2);
        }
        ::_exit(0);
    }
    ::close(fds[1]);
    int64_t last = -1;
    if (::read(fds[0], &last, sizeof last) != sizeof last) last = -1;
    ::close(fds[0]);
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return last;
}

}  // namespace

TEST(Metrics, SidecarAndViewHoldTheSameRecords) {
    test::TempDir dir;
    {
        MetricsWriter w(dir.path(), attributes(), kNeverAutoFlush);
        write_steps(w, 0, 60);
        w.sample({60, "bad \xff bytes", std::string("a NUL \0 inside", 14)});
        w.close();
    }
    const MetricsLog sidecar = read_metrics(dir.path());
    EXPECT_EQ(train_steps(sidecar), iota_steps(0, 60));
    EXPECT_EQ(val_steps(sidecar), (std::vector<int64_t>{0, 25, 50}));
    EXPECT_EQ(sidecar.train[17], train_record(17));
    EXPECT_EQ(sidecar.val[1], (ValRecord{25, 1.0 + 1.0 / 26, std::nullopt}));
    EXPECT_EQ(sidecar.val[2], (ValRecord{50, 1.0 + 1.0 / 51, 3.5}));
    ASSERT_EQ(sidecar.samples.size(), 3u);
    EXPECT_EQ(sidecar.samples[1], (Sample{50, "The capital of France is", "Paris. step 50"}));
    EXPECT_EQ(sidecar.samples[2].prompt, "bad \xEF\xBF\xBD bytes");
    EXPECT_EQ(sidecar.samples[2].text, "a NUL \xEF\xBF\xBD inside");
    ASSERT_EQ(sidecar.core.size(), 1u);
    EXPECT_EQ(sidecar.core[0], core_record(40));
    EXPECT_EQ(sidecar.attributes, attributes());
    EXPECT_EQ(read_view(dir.path() / kViewFile), sidecar);
}

TEST(Metrics, NonFiniteValuesAreStoredAsNaN) {
    test::TempDir dir;
    MetricsWriter w(dir.path(), attributes(), kNeverAutoFlush);
    TrainRecord r = train_record(0);
    r.loss = std::numeric_limits<double>::infinity();
    r.raw_loss = std::nan("");
    w.train(r);
    w.val({0, std::nan(""), -std::numeric_limits<double>::infinity()});
    w.close();
    for (const MetricsLog& log : {read_metrics(dir.path()), read_view(dir.path() / kViewFile)}) {
        ASSERT_EQ(log.train.size(), 1u);
        EXPECT_TRUE(std::isnan(log.train[0].loss));
        EXPECT_TRUE(std::isnan(log.train[0].raw_loss));
        EXPECT_EQ(log.train[0].tokens, 2048);
        ASSERT_EQ(log.val.size(), 1u);
        EXPECT_TRUE(std::isnan(log.val[0].bpb));
        EXPECT_FALSE(log.val[0].loss.has_value());
    }
}

TEST(Metrics, RecordsReachTheFilesAtAFlush) {
    test::TempDir dir;
    MetricsWriter w(dir.path(), attributes(), kNeverAutoFlush);
    for (int64_t s = 0; s < 5; ++s) w.train(train_record(s));
    EXPECT_TRUE(read_metrics(dir.path()).train.empty()) << "buffered until a flush";
    w.flush();
    EXPECT_EQ(train_steps(read_metrics(dir.path())), iota_steps(0, 5));
    w.train(train_record(5));
    w.val({6, 1.25, std::nullopt});  // an eval flushes, with the train records before it
    EXPECT_EQ(train_steps(read_metrics(dir.path())), iota_steps(0, 6));
    EXPECT_EQ(val_steps(read_metrics(dir.path())), std::vector<int64_t>{6});
    w.sample({6, "p", "t"});
    EXPECT_EQ(read_metrics(dir.path()).samples.size(), 1u);
    EXPECT_EQ(w.last_train_step(), 5);
}

TEST(Metrics, FlushesWhenTheIntervalHasPassed) {
    test::TempDir dir;
    MetricsWriter w(dir.path(), attributes(), {.resume_at_step = std::nullopt, .flush_interval = milliseconds(20)});
    w.train(train_record(0));
    std::this_thread::sleep_for(milliseconds(30));
    w.train(train_record(1));  // 30 ms after the last flush: this record flushes both
    EXPECT_EQ(train_steps(read_metrics(dir.path())), iota_steps(0, 2));
}

TEST(Metrics, StepsMustIncrease) {
    test::TempDir dir;
    MetricsWriter w(dir.path(), attributes(), kNeverAutoFlush);
    w.train(train_record(3));
    EXPECT_THROW(w.train(train_record(3)), MetricsError);
    EXPECT_THROW(w.train(train_record(2)), MetricsError);
    w.val({3, 1.0, std::nullopt});
    EXPECT_THROW(w.val({3, 1.0, std::nullopt}), MetricsError);
    w.sample({3, "a", "b"});
    w.sample({3, "c", "d"});  // several prompts at one step
    EXPECT_THROW(w.sample({2, "e", "f"}), MetricsError);
    w.core(core_record(3));
    EXPECT_THROW(w.core(core_record(3)), MetricsError);
    w.close();
    EXPECT_THROW(w.train(train_record(4)), std::logic_error);

    MetricsWriter resumed(dir.path(), attributes(), resume_at(10));
    try {
        resumed.train(train_record(9));
        FAIL() << "a step before the resume step was accepted";
    } catch (const MetricsError& e) {
        EXPECT_NE(std::string(e.what()).find("before the step the run resumed at (10)"), std::string::npos) << e.what();
    }
}

TEST(Metrics, OneWriterPerRunDirectory) {
    test::TempDir dir;
    EXPECT_THROW(MetricsWriter(dir.path() / "missing", attributes()), MetricsError);
    {
        MetricsWriter w(dir.path(), attributes(), kNeverAutoFlush);
        try {
            MetricsWriter second(dir.path(), attributes(), resume_at(0));
            FAIL() << "a second writer opened a locked run directory";
        } catch (const MetricsError& e) {
            EXPECT_NE(std::string(e.what()).find("pid " + std::to_string(::getpid())), std::string::npos) << e.what();
        }
        EXPECT_THROW(recover(dir.path()), MetricsError);
    }
    // Closed: a new run may not reuse the directory, a resumed one may.
    try {
        MetricsWriter again(dir.path(), attributes());
        FAIL() << "a new run opened over existing metrics";
    } catch (const MetricsError& e) {
        EXPECT_NE(std::string(e.what()).find("already holds metrics"), std::string::npos) << e.what();
    }
    MetricsWriter resumed(dir.path(), attributes(), resume_at(0));
}

TEST(Metrics, ResumeDropsTheStepsThatWillBeReplayed) {
    test::TempDir dir;
    {
        MetricsWriter w(dir.path(), attributes("first"), kNeverAutoFlush);
        write_steps(w, 0, 100);  // val at 0, 25, 50, 75; samples at 0, 50
    }
    {
        // The checkpoint of step 60: the loop starts again at step 60, so 60..99 and val 75 go.
        MetricsWriter w(dir.path(), attributes("second"), resume_at(60));
        EXPECT_EQ(w.last_train_step(), 59);
        EXPECT_EQ(train_steps(read_metrics(dir.path())), iota_steps(0, 60)) << "the sidecar is cut at once";
        write_steps(w, 60, 130);  // val at 75, 100, 125; sample at 100
    }
    const MetricsLog log = read_metrics(dir.path());
    EXPECT_EQ(train_steps(log), iota_steps(0, 130));
    EXPECT_EQ(val_steps(log), (std::vector<int64_t>{0, 25, 50, 75, 100, 125}));
    ASSERT_EQ(log.samples.size(), 3u);
    EXPECT_EQ(log.samples[2].step, 100);
    ASSERT_EQ(log.core.size(), 3u);  // 40, then 80 (dropped, logged again) and 120
    EXPECT_EQ(log.core[1], core_record(80));
    EXPECT_EQ(log.core[2].step, 120);
    EXPECT_EQ(log.train[99], train_record(99));
    EXPECT_EQ(log.attributes, attributes("second"));
    EXPECT_EQ(read_view(dir.path() / kViewFile), log);

    // Resuming at 0 starts over; resuming where no metrics were written yet starts empty.
    { MetricsWriter w(dir.path(), attributes(), resume_at(0)); }
    EXPECT_TRUE(read_metrics(dir.path()).train.empty());
    test::TempDir fresh;
    { MetricsWriter w(fresh.path(), attributes(), resume_at(500)); }
    EXPECT_TRUE(read_view(fresh.path() / kViewFile).train.empty());
}

TEST(Metrics, TornLastLineIsIgnoredAndCutOnResume) {
    test::TempDir dir;
    {
        MetricsWriter w(dir.path(), attributes(), kNeverAutoFlush);
        write_steps(w, 0, 10);
    }
    std::ofstream(dir.path() / kSidecarFile, std::ios::app) << R"({"kind":"train","step":10,"lo)";
    EXPECT_EQ(train_steps(read_metrics(dir.path())), iota_steps(0, 10));
    {
        MetricsWriter w(dir.path(), attributes(), resume_at(10));
        write_steps(w, 10, 20);
    }
    EXPECT_EQ(train_steps(read_metrics(dir.path())), iota_steps(0, 20));

    std::ofstream(dir.path() / kSidecarFile, std::ios::app) << "not json\n";
    try {
        read_metrics(dir.path());
        FAIL() << "a corrupt line was accepted";
    } catch (const MetricsError& e) {
        EXPECT_NE(std::string(e.what()).find("metrics.jsonl: line 24: not a JSON object"), std::string::npos)
            << e.what();
    }
}

// The promise: a SIGKILL at any moment loses only what came after the last flush. A child writes and
// flushes as fast as it can and reports each flushed step through a pipe; the parent kills it at a
// random moment (during open, an append, an fsync, an HDF5 flush, ...) and checks every file.
TEST(MetricsCrash, SigkillAtAnyMomentKeepsEveryFlushedStep) {
    std::mt19937 rng(20240520);
    std::uniform_int_distribution<int> kill_after_us(0, 30'000);
    int killed_before_first_flush = 0;
    for (int trial = 0; trial < 12; ++trial) {
        SCOPED_TRACE("trial " + std::to_string(trial));
        test::TempDir dir;
        int fds[2];
        ASSERT_EQ(::pipe(fds), 0);
        pid_t pid = ::fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            ::close(fds[0]);
            try {
                MetricsWriter w(dir.path(), attributes(), kNeverAutoFlush);
                for (int64_t step = 0; step < 1'000'000; ++step) {
                    if (step % 10 == 0) w.val({step, 1.0, std::nullopt});
                    if (step % 25 == 0) w.sample({step, "prompt", "text of step " + std::to_string(step)});
                    w.train(train_record(step));
                    if (step % 3 == 2) {
                        w.flush();
                        if (::write(fds[1], &step, sizeof step) != sizeof step) ::_exit(3);
                    }
                }
            } catch (...) {
                ::_exit(2);
            }
            ::_exit(0);
        }
        ::close(fds[1]);
        std::this_thread::sleep_for(std::chrono::microseconds(kill_after_us(rng)));
        ::kill(pid, SIGKILL);
        int status = 0;
        ::waitpid(pid, &status, 0);
        ASSERT_TRUE(WIFSIGNALED(status)) << "the writer child failed by itself, exit status " << WEXITSTATUS(status);
        int64_t last_flushed = -1, step = 0;
        while (::read(fds[0], &step, sizeof step) == sizeof step) last_flushed = step;
        ::close(fds[0]);

        if (last_flushed < 0) ++killed_before_first_flush;
        if (last_flushed >= 0) {
            // The crashed view, as a reader finds it: opens (SWMR read), a gapless prefix of what was logged.
            const MetricsLog view = read_view(dir.path() / kViewFile);
            ASSERT_GE(static_cast<int64_t>(view.train.size()), last_flushed + 1);
            EXPECT_EQ(train_steps(view), iota_steps(0, static_cast<int64_t>(view.train.size())));
            EXPECT_EQ(view.train.back(), train_record(view.train.back().step));
            EXPECT_EQ(view.attributes, attributes());
        }
        // The sidecar: steps 0..M, M >= the last flushed step (a flush the kill interrupted may have landed).
        MetricsLog sidecar;
        if (fs::exists(dir.path() / kSidecarFile)) sidecar = read_metrics(dir.path());
        const auto last = static_cast<int64_t>(sidecar.train.size()) - 1;
        ASSERT_GE(last, last_flushed);
        EXPECT_EQ(train_steps(sidecar), iota_steps(0, last + 1));
        EXPECT_LE(last, last_flushed + 3) << "more steps than were ever written";
        if (fs::exists(dir.path() / kSidecarFile)) {
            // recover() turns it into a closed view with exactly the sidecar's records.
            EXPECT_EQ(recover(dir.path()), sidecar);
            EXPECT_EQ(read_view(dir.path() / kViewFile), sidecar);
        }

        // Resume from a checkpoint at half the steps: one continuous series again.
        const int64_t checkpoint = (last + 1) / 2;
        {
            MetricsWriter w(dir.path(), attributes(), resume_at(checkpoint));
            write_steps(w, checkpoint, checkpoint + 20, 10);
        }
        const MetricsLog resumed = read_metrics(dir.path());
        EXPECT_EQ(train_steps(resumed), iota_steps(0, checkpoint + 20));
        std::vector<int64_t> vals;
        for (int64_t s = 0; s < checkpoint + 20; s += 10) vals.push_back(s);
        EXPECT_EQ(val_steps(resumed), vals);
        EXPECT_EQ(read_view(dir.path() / kViewFile), resumed);
    }
    EXPECT_LT(killed_before_first_flush, 12) << "no kill landed after a flush: the timing is off";
}

// h5py (and pandas, when installed) read a live run, a killed one and a closed one, as docs/metrics.md
// says they can.
TEST(MetricsPython, H5pyAndPandasReadLiveKilledAndClosedRuns) {
    if (::access(kSystemPython, X_OK) != 0) GTEST_SKIP() << "no " << kSystemPython;
    test::TempDir dir;
    const fs::path live = dir.path() / "live", killed = dir.path() / "killed", closed = dir.path() / "closed";
    for (const auto& d : {live, killed, closed}) fs::create_directories(d);
    ASSERT_EQ(write_then_get_killed(killed, 40), 39);
    {
        MetricsWriter w(closed, attributes(), kNeverAutoFlush);
        write_steps(w, 0, 50);
    }
    MetricsWriter writer(live, attributes(), kNeverAutoFlush);
    write_steps(writer, 0, 30);
    writer.flush();
    writer.train(train_record(30));  // not flushed: a reader may not see it

    const fs::path script = dir.write("read.py", R"PY(
import json, sys
try:
    import h5py
except ImportError as e:
    json.dump({"skip": str(e)}, open(sys.argv[4], "w")); sys.exit(0)
live, killed, closed, result = sys.argv[1:5]
out = {}
def summary(f):
    return {"steps": f["train/step"][:].tolist(), "loss_rows": len(f["train/loss"]),
            "val": f["val/step"][:].tolist(), "samples": list(f["samples/text"].asstr()[:]),
            "config": f.attrs["config_yaml"], "provenance": f.attrs["provenance_json"],
            "columns": list(f["train"].keys()), "core_steps": f["core/step"][:].tolist(),
            "core_metric": f["core/core_metric"][:].tolist(), "core_tasks": list(f["core/tasks/task"].asstr()[:]),
            "core_centered": f["core/tasks/centered"][:].tolist()}
for name, path in (("live", live), ("killed", killed)):
    with h5py.File(path + "/metrics.h5", "r", swmr=True) as f:
        out[name] = summary(f)
with h5py.File(closed + "/metrics.h5", "r") as f:
    out["closed"] = summary(f)
try:
    import pandas as pd
except ImportError:
    pd = None
if pd is not None:
    with h5py.File(live + "/metrics.h5", "r", swmr=True) as f:
        n = min(len(c) for c in f["train"].values())
        df = pd.DataFrame({k: c[:n] for k, c in f["train"].items()})
    out["pandas"] = {"rows": len(df), "columns": list(df.columns), "last_step": int(df.step.iloc[-1]),
                     "tokens_dtype": str(df.tokens.dtype)}
    side = pd.read_json(closed + "/metrics.jsonl", lines=True)
    out["pandas_sidecar_train_rows"] = int((side.kind == "train").sum())
json.dump(out, open(result, "w"))
)PY");
    const fs::path result = dir.path() / "result.json";
    const CommandResult run = run_command(std::string(kSystemPython) + " " + shell_arg(script) + " " + shell_arg(live) +
                                          " " + shell_arg(killed) + " " + shell_arg(closed) + " " + shell_arg(result));
    ASSERT_EQ(run.exit_code, 0) << run.output;
    const auto out = nlohmann::json::parse(std::ifstream(result), nullptr, false);
    ASSERT_FALSE(out.is_discarded()) << run.output;
    if (out.contains("skip")) GTEST_SKIP() << "h5py is not importable by " << kSystemPython << ": " << out["skip"];

    auto steps = [](int64_t n) { return iota_steps(0, n); };
    EXPECT_EQ(out["live"]["steps"].get<std::vector<int64_t>>(), steps(30));
    EXPECT_EQ(out["live"]["loss_rows"], 30);
    EXPECT_EQ(out["live"]["val"].get<std::vector<int64_t>>(), (std::vector<int64_t>{0, 25}));
    EXPECT_EQ(out["live"]["samples"].get<std::vector<std::string>>(), std::vector<std::string>{"Paris. step 0"});
    EXPECT_EQ(out["live"]["config"], attributes().config_yaml);
    EXPECT_EQ(out["live"]["provenance"], attributes().provenance_json);
    EXPECT_EQ(out["killed"]["steps"].get<std::vector<int64_t>>(), steps(40));
    EXPECT_EQ(out["closed"]["steps"].get<std::vector<int64_t>>(), steps(50));
    const std::vector<std::string> columns = {"step", "loss",   "raw_loss", "lrm",   "dt",     "tok_per_sec",
                                              "mfu",  "tokens", "flops",    "epoch", "elapsed", "skipped"};
    EXPECT_EQ(out["closed"]["columns"].get<std::vector<std::string>>(), columns) << "columns in creation order";
    EXPECT_EQ(out["closed"]["core_steps"].get<std::vector<int64_t>>(), std::vector<int64_t>{40});
    EXPECT_EQ(out["closed"]["core_metric"].get<std::vector<double>>(), std::vector<double>{core_record(40).core_metric});
    EXPECT_EQ(out["closed"]["core_tasks"].get<std::vector<std::string>>(),
              (std::vector<std::string>{"hellaswag_zeroshot", "jeopardy", "wïnograd ✓"}));
    EXPECT_EQ(out["closed"]["core_centered"].get<std::vector<double>>(),
              (std::vector<double>{0.04, 0.5, 0.5 - 40.0 / 500}));
    EXPECT_TRUE(out["live"]["core_steps"].empty());
    if (out.contains("pandas")) {
        EXPECT_EQ(out["pandas"]["rows"], 30);
        EXPECT_EQ(out["pandas"]["columns"].get<std::vector<std::string>>(), columns);
        EXPECT_EQ(out["pandas"]["tokens_dtype"], "int64");
        EXPECT_EQ(out["pandas_sidecar_train_rows"], 50);
    } else {
        std::cerr << "[ note ] pandas is not importable by " << kSystemPython << "; its checks were skipped\n";
    }
    writer.close();
}

// tools/plot_metrics.py draws a live run, a killed one, and one whose view is gone (sidecar only).
TEST(MetricsPlot, PlotsLiveKilledAndSidecarOnlyRuns) {
    const fs::path script = test::kSourceDir / "tools" / "plot_metrics.py";
    ASSERT_TRUE(fs::exists(script));
    ASSERT_EQ(::access(script.c_str(), X_OK), 0) << script << " is not executable";
    if (::access(kSystemPython, X_OK) != 0) GTEST_SKIP() << "no " << kSystemPython;

    test::TempDir dir;
    const fs::path live = dir.path() / "runs" / "d2-live", killed = dir.path() / "runs" / "d2-killed",
                   sidecar_only = dir.path() / "runs" / "d2-sidecar-only";
    for (const auto& d : {live, killed, sidecar_only}) fs::create_directories(d);
    ASSERT_EQ(write_then_get_killed(killed, 60), 59);
    {
        MetricsWriter w(sidecar_only, attributes(), kNeverAutoFlush);
        write_steps(w, 0, 80);
    }
    fs::remove(sidecar_only / kViewFile);
    MetricsWriter writer(live, attributes(), kNeverAutoFlush);
    write_steps(writer, 0, 100);
    writer.flush();

    const fs::path png = dir.path() / "plot.png";
    const CommandResult run = run_command(shell_arg(script) + " " + shell_arg(live) + " " + shell_arg(killed) + " " +
                                          shell_arg(sidecar_only) + " --out " + shell_arg(png));
    if (run.output.find("No module named 'matplotlib'") != std::string::npos)
        GTEST_SKIP() << "matplotlib is not importable by " << kSystemPython << " (tools/bootstrap.sh installs it)";
    ASSERT_EQ(run.exit_code, 0) << run.output;
    std::ifstream in(png, std::ios::binary);
    std::string magic(8, '\0');
    in.read(magic.data(), 8);
    EXPECT_EQ(magic, "\x89PNG\r\n\x1a\n") << run.output;
    EXPECT_GT(fs::file_size(png), 10'000u);
    for (const char* line :
         {"d2-live: 100 train, 4 val", "d2-killed: 60 train, 3 val", "d2-sidecar-only: 80 train, 4 val"})
        EXPECT_NE(run.output.find(line), std::string::npos) << line << " not in\n" << run.output;
}
