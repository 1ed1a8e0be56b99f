// Bad input: every error is located (file:line:col: key: message), all are collected, exit code 2.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include "runner/config/experiment.h"
#include "test_util.h"

using namespace l3lab;
using l3lab::test::TempDir;

namespace {

std::string first_line(const std::filesystem::path& p) {
    std::ifstream in(p);
    std::string line;
    std::getline(in, line);
    if (!line.empty() && line.back() == '\r') line.pop_back();  // a fixture with CRLF line ends
    return line;
}

}  // namespace

// tests/fixtures/bad_configs/*.yaml: each file's first line is `# expect: <text the error must contain>`.
TEST(BadConfigs, EachExitsTwoWithItsLocatedMessage) {
    auto dir = test::kSourceDir / "tests" / "fixtures" / "bad_configs";
    std::vector<std::filesystem::path> files;
    for (const auto& entry : std::filesystem::directory_iterator(dir))
        if (entry.path().extension() == ".yaml") files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    ASSERT_GE(files.size(), 20u);
    for (const auto& file : files) {
        SCOPED_TRACE(file.filename().string());
        std::string expect = first_line(file);
        ASSERT_EQ(expect.rfind("# expect: ", 0), 0u) << "fixture lacks its expectation line";
        expect = expect.substr(10);
        for (const char* command : {"config", "plan"}) {
            auto r = test::run_cli({command, file.string()});
            EXPECT_EQ(r.code, 2) << r.err;
            EXPECT_NE(r.err.find(expect), std::string::npos) << "stderr was:\n" << r.err;
            EXPECT_TRUE(r.out.empty()) << r.out;
            EXPECT_EQ(r.err.find("terminate"), std::string::npos);
        }
    }
}

TEST(BadConfigs, AllErrorsAreCollectedBeforeExiting) {
    TempDir dir;
    std::string f = dir.write("many.yaml",
                              "model:\n  depht: 4\n  head_dim: x\nbatch:\n  device_batch_size: 0\nfoo: 1\n");
    auto r = test::run_cli({"config", f});
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find(f + ":2:3: model.depht: unknown key; did you mean 'model.depth'?"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(f + ":3:13: model.head_dim: expected an integer, got 'x'"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(f + ":5:22: batch.device_batch_size: value 0 is out of range"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(f + ":6:1: foo: unknown key (valid keys here:"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("4 errors in the configuration"), std::string::npos) << r.err;
}

TEST(BadConfigs, OverridesAreLocatedOnTheCommandLine) {
    auto r = test::run_cli({"plan", test::base_yaml(), "model.depth=abc"});
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("<override 1: model.depth=abc>:1:13: model.depth: expected an integer, got 'abc'"),
              std::string::npos)
        << r.err;
    r = test::run_cli({"plan", test::base_yaml(), "model.detph=4"});
    EXPECT_NE(r.err.find("model.detph: unknown key; did you mean 'model.depth'?"), std::string::npos) << r.err;
    r = test::run_cli({"plan", test::base_yaml(), "model.l3.after_layers=[1, 2"});
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("<override 1: model.l3.after_layers=[1, 2>:1:"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("YAML syntax error"), std::string::npos) << r.err;
    r = test::run_cli({"plan", test::base_yaml(), "=4"});
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("expected dotted.key=value"), std::string::npos) << r.err;
}

TEST(BadConfigs, MissingOrUnreadableExperimentFile) {
    TempDir dir;
    auto r = test::run_cli({"plan", (dir.path() / "nope.yaml").string()});
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("file not found:"), std::string::npos) << r.err;
    r = test::run_cli({"config", dir.path().string()});
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("expected a YAML file, got a directory"), std::string::npos) << r.err;
}

TEST(BadConfigs, EmptyAndBinaryFilesAreHandled) {
    TempDir dir;
    // An empty file is an experiment with every default.
    EXPECT_EQ(test::run_cli({"config", dir.write("empty.yaml", "")}).code, 0);
    auto r = test::run_cli({"config", dir.write("binary.yaml", std::string("\x00\x01\xff\xfe garbage: [", 16))});
    EXPECT_EQ(r.code, 2) << r.err;
    r = test::run_cli({"config", dir.write("two.yaml", "seed: 1\n---\nseed: 2\n")});
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("expected one YAML document"), std::string::npos) << r.err;
}

TEST(BadConfigs, DefaultedKeysPointAtTheExperimentFile) {
    // total_batch_size is left at auto (a default) but cannot be divided: the error names the file.
    TempDir dir;
    std::string f = dir.write("tiny.yaml", "model: {depth: 2, sequence_len: 64, vocab_size: 512}\nbatch: {device_batch_size: 3}\n");
    auto r = test::run_cli({"plan", f});
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find(f + ": batch.total_batch_size:"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("auto: 2^round"), std::string::npos) << r.err;
}
