// `l3lab train` and `l3lab resume` end to end, through the real executable, on a tiny config (depth 2,
// sequence 64, a 512-token tokenizer on generated text): run directory contents, exact kill/resume,
// SIGTERM, config changes on resume, --init-from, and bad input before any run directory exists.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "runner/torch_module.h"
#include "test_data_util.h"
#include "test_util.h"

using namespace l3lab;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

using test::slurp;

pid_t spawn(const std::vector<std::string>& args, const std::string& log) { return test::spawn_l3lab(args, log); }
int wait_for(pid_t pid) { return test::wait_exit(pid); }

// Per-step raw training losses and per-step validation values from metrics.jsonl.
struct Series {
    std::map<int64_t, std::vector<double>> train, val;
};

Series series(const fs::path& run) {
    Series s;
    std::ifstream in(run / "metrics.jsonl");
    std::string line;
    while (std::getline(in, line)) {
        json r;
        try {
            r = json::parse(line);
        } catch (...) {
            continue;
        }
        if (r.contains("raw_loss")) s.train[r["step"]].push_back(r["raw_loss"]);
        else if (r.contains("bpb")) s.val[r["step"]].push_back(r["bpb"].is_null() ? NAN : r["bpb"].get<double>());
    }
    return s;
}

class Train : public ::testing::Test {
protected:
    static inline test::TempDir* dir = nullptr;
    static inline std::string experiment;

    // One small corpus, tokenizer and shard set for the whole suite, made with the data commands.
    static void SetUpTestSuite() {
        test::prepare_training_suite();
        dir = new test::TempDir();
        const test::TinyData data = test::make_tiny_data(dir->path(), 1000, 400, 600);
        experiment = dir->write("tiny.yaml", test::tiny_experiment_yaml(data, (dir->path() / "runs").string(),
                                                                        "batch: {device_batch_size: 4, total_batch_size: 512}\n"
                                                                        "eval: {every: 4, tokens: 512}\n"));
    }
    static void TearDownTestSuite() { delete dir; }

    static std::string run_dir(const std::string& name) { return (dir->path() / "runs" / name).string(); }

    static int train(const std::string& name, std::vector<std::string> extra = {}) {
        std::vector<std::string> args{"train", experiment, "--run-dir", run_dir(name)};
        args.insert(args.end(), extra.begin(), extra.end());
        return wait_for(spawn(args, run_dir(name) + ".log"));
    }

    // The straight run every interrupted run is compared with (made once).
    static const fs::path& straight() {
        static fs::path path = [] {
            EXPECT_EQ(train("straight"), 0) << slurp(run_dir("straight") + ".log");
            return fs::path(run_dir("straight"));
        }();
        return path;
    }

    static void expect_same_as_straight(const fs::path& run) {
        Series a = series(straight()), b = series(run);
        EXPECT_EQ(a.train, b.train) << "per-step training losses differ (or a step is missing or duplicated)";
        EXPECT_EQ(a.val, b.val);
        const std::string last = "checkpoints/step-00000016/model.safetensors";
        EXPECT_TRUE(slurp(straight() / last) == slurp(run / last)) << "final weights are not bit-identical";
    }
};

}  // namespace

TEST_F(Train, RunDirectoryHoldsEverythingPromised) {
    const fs::path run = straight();
    for (const char* file : {"config.yaml", "overrides.yaml", "provenance.json", "STATUS", "train.log", "metrics.jsonl",
                             "metrics.h5", "summary.json", "checkpoints/step-00000016/DONE",
                             "checkpoints/step-00000016/model.safetensors", "checkpoints/step-00000016/optimizer.safetensors",
                             "checkpoints/step-00000016/state.json"})
        EXPECT_TRUE(fs::exists(run / file)) << file;
    json status = json::parse(slurp(run / "STATUS"));
    EXPECT_EQ(status["state"], "completed");
    EXPECT_EQ(status["step"], 16);
    json summary = json::parse(slurp(run / "summary.json"));
    EXPECT_TRUE(summary["final_val"].is_number()) << summary.dump();
    EXPECT_EQ(summary["metric"], "val_bpb");
    json prov = json::parse(slurp(run / "provenance.json"));
    for (const char* key : {"git_sha", "git_dirty", "l3lab_version", "libtorch_version", "device", "host", "pid",
                            "command_line", "slurm", "data_fingerprint", "l3_allocation_sha256", "world_size"})
        EXPECT_TRUE(prov.contains(key)) << key;
    // keep_last: 2 -> the two newest complete checkpoints remain.
    EXPECT_FALSE(fs::exists(run / "checkpoints/step-00000004"));
    EXPECT_TRUE(fs::exists(run / "checkpoints/step-00000012/DONE"));
    Series s = series(run);
    EXPECT_EQ(s.train.size(), 16u);
    EXPECT_EQ(s.val.size(), 5u);  // steps 0, 4, 8, 12, 16
    EXPECT_LT(s.val.rbegin()->second[0], s.val.begin()->second[0]) << "validation bpb did not improve";
    const std::string log = slurp(run / "train.log");
    EXPECT_NE(log.find("step 00015/00016"), std::string::npos);
    EXPECT_NE(log.find("Validation bpb"), std::string::npos);
    EXPECT_NE(log.find("The kernel"), std::string::npos);  // the final sample
}

TEST_F(Train, KillAnywhereThenResumeIsBitExact) {
    const std::string run = run_dir("killed");
    pid_t pid = spawn({"train", experiment, "--run-dir", run}, run + ".log");
    // SIGKILL soon after the first checkpoint is complete: mid-step, mid-flush or mid-checkpoint.
    for (int i = 0; i < 2000 && !fs::exists(fs::path(run) / "checkpoints/step-00000004/DONE"); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    kill(pid, SIGKILL);
    EXPECT_EQ(wait_for(pid), 128 + SIGKILL);
    ASSERT_EQ(wait_for(spawn({"resume", run}, run + ".resume.log")), 0) << slurp(run + ".resume.log");
    EXPECT_NE(slurp(run + ".resume.log").find("resumed from"), std::string::npos) << slurp(run + ".resume.log");
    expect_same_as_straight(run);
}

TEST_F(Train, SigtermCheckpointsExitsThreeAndResumesExactly) {
    const std::string run = run_dir("sigterm");
    pid_t pid = spawn({"train", experiment, "--run-dir", run}, run + ".log");
    for (int i = 0; i < 2000 && !fs::exists(fs::path(run) / "checkpoints/step-00000004/DONE"); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    kill(pid, SIGTERM);
    ASSERT_EQ(wait_for(pid), 3) << slurp(run + ".log");
    EXPECT_EQ(json::parse(slurp(fs::path(run) / "STATUS"))["state"], "interrupted");
    // `train --resume auto` on the same directory continues it (as a requeued job would).
    ASSERT_EQ(train("sigterm", {"--resume", "auto"}), 0) << slurp(run + ".log");
    expect_same_as_straight(run);
}

TEST_F(Train, ResumeRefusesAChangedConfigButTakesAllowedChanges) {
    const std::string run = run_dir("changed");
    pid_t pid = spawn({"train", experiment, "--run-dir", run}, run + ".log");
    for (int i = 0; i < 2000 && !fs::exists(fs::path(run) / "checkpoints/step-00000004/DONE"); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    kill(pid, SIGTERM);
    ASSERT_EQ(wait_for(pid), 3);
    auto r = test::run_cli({"train", experiment, "--run-dir", run, "--resume", "auto", "model.depth=3", "seed=7"});
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("cannot resume with a changed config: model.depth: 2 -> 3"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("seed: 42 -> 7"), std::string::npos) << r.err;
    // Evaluation cadence may change: the trained model stays the same.
    ASSERT_EQ(train("changed", {"--resume", "auto", "eval.every=8"}), 0) << slurp(run + ".log");
    EXPECT_NE(slurp(fs::path(run) / "resume_changes.log").find("eval.every: 4 -> 8"), std::string::npos);
    EXPECT_EQ(series(run).train, series(straight()).train);
}

TEST_F(Train, InitFromLoadsEveryTensorAndChecksShapes) {
    const std::string weights = (straight() / "checkpoints/step-00000016/model.safetensors").string();
    ASSERT_EQ(train("init", {"--init-from", weights, "horizon.num_iterations=4"}), 0) << slurp(run_dir("init") + ".log");
    // Starting from trained weights, the first evaluation is the straight run's last one.
    EXPECT_EQ(series(run_dir("init")).val.begin()->second, series(straight()).val.rbegin()->second);
    // Weights of another shape: every mismatch listed, exit 2, no run directory.
    auto r = test::run_cli({"train", experiment, "--run-dir", run_dir("init-bad"), "--init-from", weights, "model.depth=3"});
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("transformer.h.2.attn.c_q.weight: missing"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(run_dir("init-bad")));
}

TEST_F(Train, BadConfigOrDataExitsTwoBeforeAnyRunDirectory) {
    auto r = test::run_cli({"train", experiment, "--run-dir", run_dir("bad1"), "data.train=" + dir->path().string() + "/nope"});
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("data.train"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(run_dir("bad1")));
    r = test::run_cli({"train", experiment, "--run-dir", run_dir("bad2"), "model.vocab_size=600"});
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("differs from the tokenizer's 512"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(run_dir("bad2")));
    r = test::run_cli({"train", experiment, "--run-dir", run_dir("bad3"), "model.dpeth=3"});
    EXPECT_EQ(r.code, 2);
    EXPECT_FALSE(fs::exists(run_dir("bad3")));
    // An existing run directory is never overwritten.
    r = test::run_cli({"train", experiment, "--run-dir", straight().string()});
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("already exists"), std::string::npos) << r.err;
    EXPECT_EQ(json::parse(slurp(straight() / "STATUS"))["state"], "completed");
}

TEST_F(Train, ReproduceCheckFindsTheSameMetrics) {
    auto r = test::run_cli({"reproduce", straight().string(), "--check", "--run-dir", run_dir("reproduced")});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("largest difference: training loss 0, validation 0"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("identical"), std::string::npos);
    json prov = json::parse(slurp(fs::path(run_dir("reproduced")) / "provenance.json"));
    EXPECT_NE(prov["command_line"].dump().find("reproduce"), std::string::npos);
}

TEST_F(Train, EvalAndSampleACheckpoint) {
    auto r = test::run_cli({"eval", straight().string(), "--json"});
    ASSERT_EQ(r.code, 0) << r.err;
    // The last validation of the run, recomputed from its final checkpoint.
    const double logged = series(straight()).val.rbegin()->second[0];
    EXPECT_NE(r.out.find(std::to_string(logged).substr(0, 6)), std::string::npos) << r.out << " vs " << logged;
    r = test::run_cli({"sample", (straight() / "checkpoints/step-00000016").string(), "--prompt", "The kernel",
                       "--max-tokens", "5", "--temperature", "0.8", "--top-k", "10", "--seed", "1"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out.rfind("The kernel", 0), 0u) << r.out;
    auto again = test::run_cli({"sample", (straight() / "checkpoints/step-00000016").string(), "--prompt", "The kernel",
                                "--max-tokens", "5", "--temperature", "0.8", "--top-k", "10", "--seed", "1"});
    EXPECT_EQ(again.out, r.out);  // seeded
    EXPECT_EQ(test::run_cli({"eval", (dir->path() / "no-such-checkpoint").string()}).code, 2);
    EXPECT_EQ(test::run_cli({"sample", straight().string()}).code, 2);  // no --prompt
}

// device: cuda on a machine where CUDA cannot train (no GPU here, or a build without the CUDA kernels):
// exit 2 with the reason, before any run directory exists (docs/cuda.md). On a GPU machine it trains.
TEST_F(Train, DeviceCudaWithoutAGpuExitsTwoBeforeAnyRunDirectory) {
    std::string error;
    const l3lab::TorchModule* module = l3lab::torch_module(&error);
    ASSERT_NE(module, nullptr) << error;
    const int devices = module->cuda_devices();
    if (devices > 0) GTEST_SKIP() << devices << " CUDA device(s) visible: device: cuda trains here (tests/torch/test_cuda.cpp)";
    for (const char* command : {"train", "resume"}) {
        SCOPED_TRACE(command);
        test::CliResult r;
        if (std::string(command) == "train") {
            r = test::run_cli({"train", experiment, "--run-dir", run_dir("cuda"), "device=cuda"});
        } else {  // a run directory whose frozen config asks for CUDA
            const fs::path frozen = dir->path() / "frozen-cuda";
            fs::create_directories(frozen);
            std::string config = slurp(experiment);
            config.replace(config.find("device: cpu"), 11, "device: cuda");
            std::ofstream(frozen / "config.yaml") << config;
            std::ofstream(frozen / "STATUS") << R"({"state": "failed", "step": 0})";
            r = test::run_cli({"resume", frozen.string()});
        }
        EXPECT_EQ(r.code, 2) << r.out << r.err;
        const std::string expected = devices < 0 ? "device: cuda but this l3lab was built without its CUDA kernels"
                                                 : "device: cuda but no CUDA device is visible";
        EXPECT_NE(r.err.find(expected), std::string::npos) << r.err;
    }
    EXPECT_FALSE(fs::exists(run_dir("cuda")));
}

// precision: bf16 on the CPU (docs/training.md): matmuls under bfloat16 autocast, weights and optimizer
// state float32. It trains close to float32 but not bit for bit (the autocast is really on), and evaluates the
// checkpoint as it was trained. A CPU without AVX512-BF16/AMX is refused before any run
// directory (a fake cpuinfo stands for one here).
TEST_F(Train, Bf16OnTheCpuTrainsCloseToFloat32AndIsRefusedWithoutTheInstructions) {
    // the refusal first: it needs no bf16 hardware
    const fs::path fake = dir->path() / "cpuinfo-without-bf16";
    std::ofstream(fake) << "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n\n";
    setenv("L3LAB_CPUINFO", fake.c_str(), 1);
    auto r = test::run_cli({"train", experiment, "precision=bf16", "--run-dir", run_dir("bf16-refused")});
    unsetenv("L3LAB_CPUINFO");
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("precision: bf16 on the CPU needs AVX512-BF16 or AMX (cpuinfo flags avx512_bf16, amx_bf16), and "
                         "this CPU has neither"),
              std::string::npos)
        << r.err;
    EXPECT_FALSE(fs::exists(run_dir("bf16-refused")));

    std::ifstream cpuinfo("/proc/cpuinfo");
    const std::string flags((std::istreambuf_iterator<char>(cpuinfo)), std::istreambuf_iterator<char>());
    if (flags.find("avx512_bf16") == std::string::npos && flags.find("amx_bf16") == std::string::npos)
        GTEST_SKIP() << "this CPU has no bfloat16 instructions: the refusal is all there is to test";
    ASSERT_EQ(train("bf16", {"precision=bf16"}), 0) << slurp(run_dir("bf16") + ".log");
    EXPECT_NE(slurp(fs::path(run_dir("bf16")) / "train.log").find("precision: bf16 autocast on the CPU"), std::string::npos);
    const Series f32 = series(straight()), b16 = series(run_dir("bf16"));
    ASSERT_EQ(b16.val.size(), f32.val.size());
    const double a = f32.val.rbegin()->second[0], b = b16.val.rbegin()->second[0];
    std::printf("[ measured ] final validation bpb: float32 %.6f, bf16 %.6f (%.3f%%)\n", a, b, 100 * (b - a) / a);
    EXPECT_NE(a, b) << "bf16 gave float32's numbers: the autocast is not on";
    EXPECT_LT(std::fabs(b - a) / a, 0.02);
    EXPECT_NE(f32.train, b16.train);

    // the checkpoint evaluates as it was trained (bf16), to the logged number
    r = test::run_cli({"eval", run_dir("bf16"), "--json"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NEAR(json::parse(r.out)["bpb"].get<double>(), b, 1e-4 * b);
}
