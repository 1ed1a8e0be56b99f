// The real executable: help, version, exit codes, and that config/plan start without libtorch.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <sys/wait.h>

#include "test_util.h"

namespace {

struct Proc {
    int code;
    std::string output;  // stdout and stderr together
};

Proc run_binary(const std::string& args) {
    std::string command = std::string(L3LAB_BINARY) + " " + args + " 2>&1";
    FILE* pipe = popen(command.c_str(), "r");
    std::string output;
    std::array<char, 4096> buf;
    while (size_t n = fread(buf.data(), 1, buf.size(), pipe)) output.append(buf.data(), n);
    int status = pclose(pipe);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), output};
}

}  // namespace

TEST(Cli, HelpListsOnlyImplementedCommands) {
    auto r = run_binary("--help");
    EXPECT_EQ(r.code, 0);
    EXPECT_NE(r.output.find("config"), std::string::npos);
    EXPECT_NE(r.output.find("plan"), std::string::npos);
    EXPECT_NE(r.output.find("  train"), std::string::npos);
    EXPECT_NE(r.output.find("  sweep"), std::string::npos);
}

TEST(Cli, CommandHelp) {
    auto r = run_binary("plan --help");
    EXPECT_EQ(r.code, 0);
    EXPECT_NE(r.output.find("--world-size"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("--json"), std::string::npos);
}

TEST(Cli, VersionReportsGitAndLibtorch) {
    auto r = run_binary("--version");
    EXPECT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("l3lab 0.1.0"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("git: "), std::string::npos);
    EXPECT_NE(r.output.find("libtorch"), std::string::npos);
    EXPECT_NE(r.output.find("CUDA:"), std::string::npos) << "the torch module did not load:\n" << r.output;
}

TEST(Cli, UsageErrorsExitTwo) {
    EXPECT_EQ(run_binary("").code, 2);
    EXPECT_EQ(run_binary("frobnicate").code, 2);
    EXPECT_EQ(run_binary("plan").code, 2);
    EXPECT_EQ(run_binary("plan experiments/base.yaml --no-such-flag").code, 2);
    EXPECT_EQ(run_binary("plan experiments/base.yaml --world-size zero").code, 2);
    EXPECT_EQ(run_binary("plan experiments/base.yaml --world-size 0").code, 2);
    auto r = run_binary("plan experiments/base.yaml notanoverride");
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.output.find("is not an override"), std::string::npos) << r.output;
}

TEST(Cli, ConfigErrorExitsTwoWithoutStackTrace) {
    auto r = run_binary("plan tests/fixtures/bad_configs/02-unknown-key-typo.yaml");
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.output.find("did you mean 'model.depth'?"), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("terminate called"), std::string::npos);
    EXPECT_EQ(r.output.find("Aborted"), std::string::npos);
}

TEST(Cli, PlanPrintsTheQuickstart) {
    auto r = run_binary("plan experiments/quickstart.yaml");
    EXPECT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("plan for experiments/quickstart.yaml"), std::string::npos) << r.output;
}

TEST(Cli, ExecutableDoesNotLinkLibtorch) {
    // config and plan must start in milliseconds; loading libtorch alone takes ~0.3 s. Torch lives in
    // libl3lab_torch.so, opened only by the commands that need it.
    FILE* pipe = popen((std::string("ldd ") + L3LAB_BINARY).c_str(), "r");
    std::string libs;
    std::array<char, 4096> buf;
    while (size_t n = fread(buf.data(), 1, buf.size(), pipe)) libs.append(buf.data(), n);
    pclose(pipe);
    EXPECT_NE(libs.find("libc.so"), std::string::npos) << libs;
    EXPECT_EQ(libs.find("libtorch"), std::string::npos) << libs;
    EXPECT_EQ(libs.find("libc10"), std::string::npos) << libs;
}

TEST(Cli, ConfigKeysListsEverySchemaKey) {
    auto r = run_binary("config --keys");
    EXPECT_EQ(r.code, 0);
    EXPECT_NE(r.output.find("model.l3.allocation"), std::string::npos);
    EXPECT_NE(r.output.find("horizon.target_param_data_ratio"), std::string::npos);
}
