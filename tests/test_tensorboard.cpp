// TensorBoard event files (docs/tracking.md), read back with TensorBoard's own reader from PyPI
// (tools/tensorboard/check_events.py: tensorboard's EventAccumulator, in .venv): every scalar at every step
// (training, validation, CORE per task) equals metrics.jsonl, each step once, after a kill and a resume too; a torn last record is skipped as
// TensorBoard skips it; our .proto's field numbers are TensorBoard's.
#include <gtest/gtest.h>

#include <signal.h>
#include <fstream>

#include "runner/metrics/tensorboard.h"
#include "test_data_util.h"
#include "test_util.h"

using namespace l3lab;
namespace fs = std::filesystem;

namespace {

// tools/tensorboard/check_events.py: TensorBoard's EventAccumulator against metrics.jsonl.
test::ToolResult check_events(const std::vector<std::string>& args) {
    return test::run_python_tool("tools/tensorboard/check_events.py", args);
}

std::vector<fs::path> event_files(const fs::path& run) {
    std::vector<fs::path> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(run / metrics::kTensorBoardDir, ec))
        if (e.path().filename().string().find("tfevents") != std::string::npos) out.push_back(e.path());
    return out;
}

class TensorBoard : public ::testing::Test {
protected:
    static inline test::TempDir* dir = nullptr;
    static inline std::string experiment;

    static void SetUpTestSuite() {
        test::prepare_training_suite();
        dir = new test::TempDir();
        const test::TinyData data = test::make_tiny_data(dir->path(), 7000, 300, 500);
        // CORE at steps 5, 10, 15 and the last, on the synthetic bundle of tests/fixtures/core
        const std::string core_bundle = (test::kSourceDir / "tests" / "fixtures" / "core" / "eval_bundle").string();
        experiment = dir->write("tiny.yaml", test::tiny_experiment_yaml(data, (dir->path() / "runs").string(),
                                                                        "batch: {device_batch_size: 2, total_batch_size: 256}\n"
                                                                        "eval: {every: 3, tokens: 256, core_every: 5, "
                                                                        "core_max_per_task: 5, core_bundle: " +
                                                                            core_bundle + "}\n"));
    }
    static void TearDownTestSuite() {
        delete dir;
        dir = nullptr;
    }
    static fs::path run_dir(const std::string& name) { return dir->path() / "runs" / name; }
    static int train(const fs::path& run, const std::vector<std::string>& extra = {}, const std::string& fault = "") {
        std::vector<std::string> args{"train", experiment, "--run-dir", run.string()};
        args.insert(args.end(), extra.begin(), extra.end());
        const pid_t pid = test::spawn_l3lab(args, run.string() + ".log", [fault] {
            if (!fault.empty()) setenv("L3LAB_FAULT", fault.c_str(), 1);
        });
        return test::wait_exit(pid);
    }
};

}  // namespace

TEST(TensorBoardProto, FieldNumbersAreTensorBoards) {
    const test::ToolResult c = check_events({"--proto", (test::kSourceDir / "runner" / "metrics" / "tensorboard.proto").string()});
    std::printf("%s", c.output.c_str());
    EXPECT_EQ(c.code, 0) << c.output;
}

TEST(TensorBoardProto, MaskedCrc32cOfKnownBytes) {
    // CRC-32C("123456789") = 0xE3069283 (the standard check value); masked as TFRecord does.
    const uint32_t crc = 0xE3069283u;
    EXPECT_EQ(metrics::masked_crc32c("123456789", 9), ((crc >> 15) | (crc << 17)) + 0xa282ead8u);
}

TEST_F(TensorBoard, EveryScalarEqualsTheSidecarAfterAKillAndAResume) {
    const fs::path run = run_dir("killed");
    // SIGKILL after step 10's update (the 11th time through): events and sidecar as a crash leaves them.
    ASSERT_EQ(train(run, {}, "step:after-optimizer@11"), 128 + SIGKILL) << test::slurp(run.string() + ".log");
    test::ToolResult c = check_events({run.string(), "--killed"});
    std::printf("[ killed  ] %s", c.output.c_str());
    EXPECT_EQ(c.code, 0) << c.output;

    ASSERT_EQ(test::wait_exit(test::spawn_l3lab({"resume", run.string()}, run.string() + ".resume.log")), 0)
        << test::slurp(run.string() + ".resume.log");
    c = check_events({run.string()});
    std::printf("[ resumed ] %s", c.output.c_str());
    EXPECT_EQ(c.code, 0) << c.output;
    EXPECT_NE(c.output.find("(16 train steps, 7 evaluations, 4 CORE evaluations)"), std::string::npos) << c.output;
    EXPECT_EQ(event_files(run).size(), 1u) << "the resume replaces the killed run's file with one holding every step";
}

TEST_F(TensorBoard, ATornLastRecordIsSkippedByTensorBoardsReader) {
    const fs::path run = run_dir("torn");
    ASSERT_EQ(train(run), 0) << test::slurp(run.string() + ".log");
    const auto files = event_files(run);
    ASSERT_EQ(files.size(), 1u);
    // Half of a record, as a crash in the middle of a write leaves it: its length says more than follows.
    const std::string whole = test::slurp(files[0]);
    std::ofstream(files[0], std::ios::binary | std::ios::app) << whole.substr(0, 20);
    const test::ToolResult c = check_events({run.string()});
    std::printf("%s", c.output.c_str());
    EXPECT_EQ(c.code, 0) << c.output;
}

TEST_F(TensorBoard, OffWritesNothing) {
    const fs::path run = run_dir("off");
    ASSERT_EQ(train(run, {"tracking.tensorboard=false"}), 0) << test::slurp(run.string() + ".log");
    EXPECT_FALSE(fs::exists(run / metrics::kTensorBoardDir));
}
