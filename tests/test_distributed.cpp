// Data-parallel training end to end (docs/distributed.md): two CPU processes on localhost with libtorch's
// Gloo backend, through the real executable, on a tiny config (depth 2, sequence 64, one L3 layer).
//
// Exactness. The data are documents of exactly sequence_len + 1 tokens in row groups of
// device_batch_size documents, so every batch is one row group and the loaders are plain FIFOs: the
// 1-process run's micro-batch k of step s (gradient accumulation 2) is rank k's batch of step s in the
// 2-process run (accumulation 1). The 1-process gradient is fl(g0/2 + g1/2), the 2-process one
// fl(g0 + g1)/2 (Gloo sums, we divide): halving is exact in binary floating point and commutes with every
// rounding of the backward pass (it only scales the loss gradient by a power of two), so the two are the
// same bits; the sharded optimizer runs MuonAdamW's own arithmetic on row slices and whole matrices. Hence
// the tolerance for weights and optimizer state is zero. The validation loss is summed in float64 in
// another order (rank 0 takes batches 0, 2, rank 1 batches 1, 3): bound 1e-12 relative.
//
// The training loss each process logs is its own last micro-batch's (the reference's print), a different
// batch in the two runs, so the curves compared step by step are the validation loss and bpb (every step).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "runner/config/errors.h"
#include "runner/data/tokenizer.h"
#include "runner/dist/launch_env.h"
#include "runner/io/safetensors.h"
#include "runner/metrics/metrics.h"
#include "runner/run/run_dir.h"
#include "test_data_util.h"
#include "test_util.h"

using namespace l3lab;
using nlohmann::json;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// ---------------------------------------------------------------------------------------------
// the launch environment (torch-free)

dist::Environment env_of(std::map<std::string, std::string> vars) {
    return [vars](const std::string& name) -> std::optional<std::string> {
        auto it = vars.find(name);
        if (it == vars.end()) return std::nullopt;
        return it->second;
    };
}

TEST(LaunchEnv, OneProcessWithoutALauncher) {
    const dist::LaunchEnv e = dist::read_launch_env(env_of({{"PATH", "/usr/bin"}}));
    EXPECT_FALSE(e.distributed());
    EXPECT_EQ(e.world_size, 1);
    // torchrun --nproc_per_node=1 and srun -n1 are single-process runs too
    EXPECT_FALSE(dist::read_launch_env(env_of({{"RANK", "0"}, {"WORLD_SIZE", "1"}})).distributed());
    EXPECT_FALSE(dist::read_launch_env(env_of({{"SLURM_PROCID", "0"}, {"SLURM_STEP_NUM_TASKS", "1"}})).distributed());
    // a batch script's own shell: SLURM_NTASKS of the job, but no srun step
    EXPECT_FALSE(dist::read_launch_env(env_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "8"}})).distributed());
}

TEST(LaunchEnv, Torchrun) {
    const dist::LaunchEnv e = dist::read_launch_env(env_of({{"RANK", "3"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"},
                                                            {"MASTER_ADDR", "node7"}, {"MASTER_PORT", "29500"},
                                                            {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                                                            {"TORCHELASTIC_RUN_ID", "abc"},
                                                            {"SLURM_PROCID", "0"}, {"SLURM_STEP_NUM_TASKS", "2"}}));
    EXPECT_EQ(e.launcher, "torchrun");  // torchrun's variables win over SLURM's
    EXPECT_EQ(e.rank, 3);
    EXPECT_EQ(e.world_size, 8);
    EXPECT_EQ(e.local_rank, 1);
    EXPECT_EQ(e.master_addr, "node7");
    EXPECT_EQ(e.master_port, 29500);
    EXPECT_TRUE(e.agent_store);
    EXPECT_EQ(e.store_prefix, "torchrun/abc/attempt-0");
}

TEST(LaunchEnv, Slurm) {
    auto first_host = [](const std::string& list) { return dist::first_host_of_nodelist(list); };
    const dist::LaunchEnv e = dist::read_launch_env(
        env_of({{"SLURM_PROCID", "5"}, {"SLURM_STEP_NUM_TASKS", "16"}, {"SLURM_NTASKS", "16"}, {"SLURM_LOCALID", "5"},
                {"SLURM_JOB_ID", "123456"}, {"SLURM_STEP_ID", "2"}, {"SLURM_JOB_NODELIST", "gpu[07-08]"}}),
        first_host);
    EXPECT_EQ(e.launcher, "slurm");
    EXPECT_EQ(e.rank, 5);
    EXPECT_EQ(e.world_size, 16);
    EXPECT_EQ(e.local_rank, 5);
    EXPECT_EQ(e.master_addr, "gpu07");
    EXPECT_EQ(e.master_port, dist::slurm_port(123456, 2));
    EXPECT_FALSE(e.agent_store);
    // MASTER_ADDR / MASTER_PORT override the derived ones
    const dist::LaunchEnv o = dist::read_launch_env(
        env_of({{"SLURM_PROCID", "0"}, {"SLURM_STEP_NUM_TASKS", "2"}, {"SLURM_JOB_ID", "1"},
                {"SLURM_JOB_NODELIST", "a,b"}, {"MASTER_ADDR", "10.0.0.9"}, {"MASTER_PORT", "4000"}}),
        first_host);
    EXPECT_EQ(o.master_addr, "10.0.0.9");
    EXPECT_EQ(o.master_port, 4000);
    for (long long job : {0LL, 1LL, 99999999LL})
        for (long long step : {0LL, 3LL}) {
            EXPECT_GE(dist::slurm_port(job, step), 20000);
            EXPECT_LT(dist::slurm_port(job, step), 40000);
        }
    EXPECT_NE(dist::slurm_port(100, 0), dist::slurm_port(101, 0));
}

TEST(LaunchEnv, NodeLists) {
    EXPECT_EQ(dist::first_host_of_nodelist("node01"), "node01");
    EXPECT_EQ(dist::first_host_of_nodelist("a,b,c"), "a");
    EXPECT_EQ(dist::first_host_of_nodelist("node[03-05,9],gpu1"), "node03");
    EXPECT_EQ(dist::first_host_of_nodelist("node[9,3-5]"), "node9");
    EXPECT_EQ(dist::first_host_of_nodelist("rack[1-2]-n[01-04]"), "rack1-n01");
    EXPECT_THROW(dist::first_host_of_nodelist(""), std::invalid_argument);
    EXPECT_THROW(dist::first_host_of_nodelist("node[01-04"), std::invalid_argument);
}

TEST(LaunchEnv, InconsistentEnvironmentsAreConfigErrors) {
    auto message = [](std::map<std::string, std::string> vars) {
        try {
            dist::read_launch_env(env_of(vars));
        } catch (const config::ConfigException& e) {
            return e.errors().front().str();
        }
        return std::string("no error");
    };
    EXPECT_NE(message({{"RANK", "0"}}).find("WORLD_SIZE"), std::string::npos);
    EXPECT_NE(message({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "x"}, {"MASTER_PORT", "1"}}).find("RANK: 2 is out of range"),
              std::string::npos);
    EXPECT_NE(message({{"RANK", "0"}, {"WORLD_SIZE", "two"}}).find("WORLD_SIZE: 'two' is not an integer"), std::string::npos);
    EXPECT_NE(message({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "1"}}).find("MASTER_ADDR"), std::string::npos);
    EXPECT_NE(message({{"SLURM_PROCID", "0"}, {"SLURM_STEP_NUM_TASKS", "2"}, {"SLURM_JOB_NODELIST", "n1"}})
                  .find("SLURM_JOB_ID"),
              std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// processes

int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(fd);
    return ntohs(a.sin_port);
}

// Starts `program args...` with `env` added to a launcher-free environment, output to `log`.
pid_t spawn(const std::string& program, const std::vector<std::string>& args, const std::map<std::string, std::string>& env,
            const std::string& log) {
    pid_t pid = fork();
    if (pid == 0) {
        for (const char* v : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID",
                              "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "TORCHELASTIC_USE_AGENT_STORE"})
            unsetenv(v);
        for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
        int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        std::vector<char*> argv{const_cast<char*>(program.c_str())};
        for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
        argv.push_back(nullptr);
        execv(program.c_str(), argv.data());
        _exit(127);
    }
    return pid;
}

// Two ranks of `l3lab args...` with torchrun's variables, rank 0 hosting the store on a free port.
struct Pair {
    pid_t pid[2] = {0, 0};
    std::string log[2];
};

Pair spawn_pair(const std::vector<std::string>& args, const std::string& log_prefix,
                const std::vector<std::vector<std::string>>& per_rank_args = {},
                const std::vector<std::map<std::string, std::string>>& per_rank_env = {}) {
    Pair p;
    const std::string port = std::to_string(free_port());
    for (int r = 0; r < 2; ++r) {
        std::vector<std::string> a = args;
        if (!per_rank_args.empty()) a.insert(a.end(), per_rank_args[r].begin(), per_rank_args[r].end());
        p.log[r] = log_prefix + ".rank" + std::to_string(r) + ".log";
        std::map<std::string, std::string> env{{"RANK", std::to_string(r)}, {"WORLD_SIZE", "2"},
                                               {"LOCAL_RANK", std::to_string(r)}, {"MASTER_ADDR", "127.0.0.1"},
                                               {"MASTER_PORT", port}};
        if (!per_rank_env.empty()) env.insert(per_rank_env[r].begin(), per_rank_env[r].end());
        p.pid[r] = spawn(L3LAB_BINARY, a, env, p.log[r]);
    }
    return p;
}

int wait_exit(pid_t pid) {
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Waits up to `seconds` for `text` to appear in `file`.
bool wait_for_text(const fs::path& file, const std::string& text, double seconds) {
    const auto end = Clock::now() + std::chrono::duration<double>(seconds);
    while (Clock::now() < end) {
        if (test::slurp(file).find(text) != std::string::npos) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
}

// ---------------------------------------------------------------------------------------------
// comparisons

// Largest |a - b| over two safetensors files' float32 tensors; +inf when names, shapes or dtypes differ.
double max_weight_diff(const fs::path& a_path, const fs::path& b_path, size_t* compared = nullptr) {
    const io::SafetensorsFile a = io::read_safetensors(a_path.string()), b = io::read_safetensors(b_path.string());
    if (a.tensors.size() != b.tensors.size()) return INFINITY;
    double worst = 0;
    for (const auto& t : a.tensors) {
        const io::TensorRecord* u = b.find(t.name);
        if (!u || u->shape != t.shape || u->dtype != t.dtype || u->data.size() != t.data.size()) return INFINITY;
        if (t.dtype != io::DType::F32) {
            if (std::memcmp(t.data.data(), u->data.data(), t.data.size()) != 0) return INFINITY;
            continue;
        }
        const float* x = reinterpret_cast<const float*>(t.data.data());
        const float* y = reinterpret_cast<const float*>(u->data.data());
        for (size_t i = 0; i < t.data.size() / 4; ++i) worst = std::max(worst, std::fabs(double(x[i]) - double(y[i])));
        if (compared) ++*compared;
    }
    return worst;
}

fs::path final_checkpoint(const fs::path& run) {
    fs::path last;
    for (const auto& e : fs::directory_iterator(run / "checkpoints"))
        if (e.path().filename().string().rfind("step-", 0) == 0 && e.path() > last) last = e.path();
    return last;
}

class Distributed : public ::testing::Test {
protected:
    static inline test::TempDir* dir = nullptr;
    static inline std::string experiment;

    // A 512-token tokenizer; documents of exactly 65 tokens (BOS + 64 of real text) in row groups of 4.
    static void SetUpTestSuite() {
        setenv("OMP_NUM_THREADS", "1", 1);
        dir = new test::TempDir();
        const std::string tok = (dir->path() / "tok.model").string();
        std::ofstream(tok, std::ios::binary) << test::small_tokenizer_bytes(512);
        auto tokenizer = data::load_tokenizer(tok);
        auto shard = [&](const std::string& name, int docs, uint64_t seed) {
            std::vector<int32_t> tokens;
            for (int d = 0; d < docs; ++d) {
                std::vector<int32_t> text = tokenizer->encode(test::sample_text(seed + static_cast<uint64_t>(d), 500));
                ASSERT_GE(text.size(), 64u);
                tokens.push_back(static_cast<int32_t>(tokenizer->bos_id()));
                tokens.insert(tokens.end(), text.begin(), text.begin() + 64);
            }
            test::write_shard((dir->path() / name).string(), tokens);
        };
        shard("train.bin", 256, 1000);
        shard("val.bin", 64, 9000);
        experiment = dir->write("dp.yaml",
            "extends: [" + test::base_yaml() + "]\n"
            "name: dp\ndevice: cpu\nseed: 7\n"
            "model: {vocab_size: 512, sequence_len: 64, depth: 2, aspect_ratio: 64, head_dim: 64, window_pattern: SL,\n"
            "        l3: {after_layers: [0], k_max: 8}}\n"
            "horizon: {num_iterations: 10}\n"
            "batch: {device_batch_size: 4, total_batch_size: 512}\n"
            "eval: {every: 1, tokens: 1024, core_every: 5, core_max_per_task: 5, core_bundle: " +
            (test::kSourceDir / "tests" / "fixtures" / "core" / "eval_bundle").string() + "}\n"
            "sample: {every: -1, max_tokens: 2, prompts: [\"The kernel\"]}\n"
            "checkpoint: {every: 4, keep_last: 3}\n"
            "data: {tokenizer: " + tok + ", train: " + (dir->path() / "train.bin").string() +
            ", val: " + (dir->path() / "val.bin").string() + ", row_group_docs: 4}\n"
            "output: {dir: " + (dir->path() / "runs").string() + "}\n"
            "distributed: {timeout_s: 30}\n");
    }
    static void TearDownTestSuite() { delete dir; }

    static fs::path run_dir(const std::string& name) { return dir->path() / "runs" / name; }
    static std::string log_path(const std::string& name) { return (dir->path() / (name + ".log")).string(); }

    // The 1-process run and the 2-process run (under torchrun), made once for the suite.
    static fs::path one_process() {
        static bool done = false;
        if (!done) {
            const pid_t pid = spawn(L3LAB_BINARY, {"train", experiment, "--run-dir", run_dir("one").string()}, {},
                                    log_path("one"));
            EXPECT_EQ(wait_exit(pid), 0) << test::slurp(log_path("one"));
            done = true;
        }
        return run_dir("one");
    }
    static fs::path two_processes() {
        static bool done = false;
        if (!done) {
            const std::string torchrun = (fs::path(L3LAB_PYTHON).parent_path() / "torchrun").string();
            const pid_t pid = spawn(torchrun,
                                    {"--standalone", "--nproc_per_node=2", "--no-python", L3LAB_BINARY, "train",
                                     experiment, "--run-dir", run_dir("two").string()},
                                    {}, log_path("two"));
            EXPECT_EQ(wait_exit(pid), 0) << test::slurp(log_path("two"));
            done = true;
        }
        return run_dir("two");
    }
};

// ---------------------------------------------------------------------------------------------

TEST_F(Distributed, TwoProcessesUnderTorchrunTrainExactlyLikeOneWithGradientAccumulation) {
    const fs::path one = one_process(), two = two_processes();
    ASSERT_EQ(run::read_status(one.string())->state, "completed");
    ASSERT_EQ(run::read_status(two.string())->state, "completed");

    // the validation curve, every step
    const auto m1 = metrics::read_metrics(one), m2 = metrics::read_metrics(two);
    ASSERT_EQ(m1.val.size(), 11u);
    ASSERT_EQ(m2.val.size(), m1.val.size());
    double worst_loss = 0, worst_bpb = 0;
    for (size_t i = 0; i < m1.val.size(); ++i) {
        ASSERT_EQ(m1.val[i].step, m2.val[i].step);
        worst_loss = std::max(worst_loss, std::fabs(*m1.val[i].loss - *m2.val[i].loss) / std::fabs(*m1.val[i].loss));
        worst_bpb = std::max(worst_bpb, std::fabs(m1.val[i].bpb - m2.val[i].bpb) / std::fabs(m1.val[i].bpb));
    }
    std::printf("[ measured ] validation loss, 1 vs 2 processes, 11 evaluations: max relative difference %.3g (bpb %.3g)\n",
                worst_loss, worst_bpb);
    EXPECT_LE(worst_loss, 1e-12);
    EXPECT_LE(worst_bpb, 1e-12);
    EXPECT_LT(m1.val.back().bpb, m1.val.front().bpb);  // it learned something

    // CORE at steps 5 and 10: 2 ranks stride each task's 5 examples (3 and 2) and sum the verdicts; the
    // result is the one process's, task by task
    ASSERT_EQ(m1.core.size(), 2u);
    EXPECT_EQ(m1.core[1].step, 10);
    ASSERT_EQ(m1.core[1].tasks.size(), 6u);
    EXPECT_EQ(m2.core, m1.core);
    int right = 0;
    for (const auto& t : m1.core[1].tasks) right += static_cast<int>(std::lround(t.accuracy * 5));
    std::printf("[ measured ] CORE at step 10: %.4f from both, %d of 30 examples right\n", m1.core[1].core_metric, right);

    // the weights, bit for bit
    const fs::path c1 = final_checkpoint(one), c2 = final_checkpoint(two);
    ASSERT_EQ(c1.filename(), "step-00000010");
    ASSERT_EQ(c2.filename(), "step-00000010");
    size_t tensors = 0;
    const double weights = max_weight_diff(c1 / "model.safetensors", c2 / "model.safetensors", &tensors);
    std::printf("[ measured ] final weights, 1 vs 2 processes: max |difference| %.3g over %zu tensors\n", weights, tensors);
    EXPECT_EQ(weights, 0.0);

    // the optimizer state: the two shards together are the 1-process state
    const io::SafetensorsFile full = io::read_safetensors((c1 / "optimizer.safetensors").string());
    const io::SafetensorsFile s0 = io::read_safetensors((c2 / "optimizer.rank-00000-of-00002.safetensors").string());
    const io::SafetensorsFile s1 = io::read_safetensors((c2 / "optimizer.rank-00001-of-00002.safetensors").string());
    int replicated = 0, row_sharded = 0, owned = 0;
    for (const auto& t : full.tensors) {
        if (t.name == "__rng_cpu__") continue;
        const io::TensorRecord *a = s0.find(t.name), *b = s1.find(t.name);
        ASSERT_TRUE(a || b) << t.name << " is in neither shard";
        if (a && b && a->shape == t.shape) {  // small parameters: every rank holds the whole state
            EXPECT_EQ(a->data, t.data) << t.name;
            EXPECT_EQ(b->data, t.data) << t.name;
            ++replicated;
        } else if (a && b) {  // row-sharded: rank 0's rows, then rank 1's
            std::vector<std::byte> joined = a->data;
            joined.insert(joined.end(), b->data.begin(), b->data.end());
            EXPECT_EQ(joined, t.data) << t.name;
            ++row_sharded;
        } else {  // a Muon parameter lives on the rank that owns it
            EXPECT_EQ((a ? a : b)->data, t.data) << t.name;
            ++owned;
        }
    }
    std::printf("[ measured ] optimizer state entries: %d replicated, %d row-sharded, %d owned by one rank; all equal\n",
                replicated, row_sharded, owned);
    EXPECT_GT(row_sharded, 0);
    EXPECT_GT(owned, 0);
    EXPECT_GT(s0.tensors.size() + s1.tensors.size(), 0u);

    // rank 0 alone wrote the run's files; DONE lists both shards; provenance names both ranks
    const json done = json::parse(test::slurp(c2 / "DONE"));
    EXPECT_TRUE(done["files"].contains("optimizer.rank-00001-of-00002.safetensors"));
    const json state = json::parse(test::slurp(c2 / "state.json"));
    EXPECT_EQ(state["world_size"], 2);
    ASSERT_EQ(state["loaders"].size(), 2u);
    EXPECT_EQ(state["loaders"][1]["rank"], 1);
    const json provenance = json::parse(test::slurp(two / "provenance.json"));
    EXPECT_EQ(provenance["world_size"], 2);
    EXPECT_EQ(provenance["distributed"]["launcher"], "torchrun");
    EXPECT_EQ(provenance["distributed"]["backend"], "gloo");
    EXPECT_EQ(provenance["distributed"]["ranks"].size(), 2u);
    const std::string log = test::slurp(two / "train.log");
    EXPECT_NE(log.find("data parallel: 2 processes, gloo backend"), std::string::npos);
    EXPECT_NE(log.find("(1 x 4 x 64)"), std::string::npos) << "gradient accumulation 1 at 2 ranks";
    EXPECT_NE(test::slurp(one / "train.log").find("(2 x 4 x 64)"), std::string::npos);
    // one line per step: only rank 0 printed
    size_t steps = 0;
    for (size_t at = log.find("step 00003/"); at != std::string::npos; at = log.find("step 00003/", at + 1)) ++steps;
    EXPECT_EQ(steps, 1u);
}

TEST_F(Distributed, AStopSignalOnAnyRankCheckpointsAllAndTheResumeIsExact) {
    const fs::path straight = one_process();  // exactly the 2-process run's weights (the test above)
    const fs::path run = run_dir("interrupted");
    Pair p = spawn_pair({"train", experiment, "--run-dir", run.string()}, log_path("interrupted"));
    ASSERT_TRUE(wait_for_text(run / "train.log", "step 00000/", 60)) << test::slurp(p.log[0]);
    kill(p.pid[1], SIGTERM);  // rank 1 gets the signal; rank 0 learns it at the next step boundary
    EXPECT_EQ(wait_exit(p.pid[0]), 3) << test::slurp(p.log[0]);
    EXPECT_EQ(wait_exit(p.pid[1]), 3) << test::slurp(p.log[1]);
    const auto status = run::read_status(run.string());
    ASSERT_EQ(status->state, "interrupted");
    ASSERT_LT(status->step, 10);
    std::printf("[ measured ] interrupted at step %lld of 10\n", static_cast<long long>(status->step));

    // one process cannot resume a 2-process checkpoint: exit 2, nothing touched
    const std::string before = test::slurp(run / "STATUS");
    const pid_t single = spawn(L3LAB_BINARY, {"resume", run.string()}, {}, log_path("resume-one"));
    EXPECT_EQ(wait_exit(single), 2);
    EXPECT_NE(test::slurp(log_path("resume-one")).find("was written by 2 processes and this launch has 1"),
              std::string::npos)
        << test::slurp(log_path("resume-one"));
    EXPECT_EQ(test::slurp(run / "STATUS"), before);

    // two processes resume it to the end: the same run as the straight one, bit for bit
    Pair r = spawn_pair({"resume", run.string()}, log_path("resumed"));
    EXPECT_EQ(wait_exit(r.pid[0]), 0) << test::slurp(r.log[0]);
    EXPECT_EQ(wait_exit(r.pid[1]), 0) << test::slurp(r.log[1]);
    const double weights =
        max_weight_diff(final_checkpoint(run) / "model.safetensors", final_checkpoint(straight) / "model.safetensors");
    std::printf("[ measured ] final weights, interrupted and resumed 2-process run vs straight run: max |difference| %.3g\n",
                weights);
    EXPECT_EQ(weights, 0.0);
    const auto a = metrics::read_metrics(run), b = metrics::read_metrics(straight);
    EXPECT_EQ(a.train.size(), b.train.size());  // every step logged once, none lost or repeated
    ASSERT_EQ(a.val.size(), b.val.size());
    for (size_t i = 0; i < a.val.size(); ++i)
        EXPECT_NEAR(a.val[i].bpb, b.val[i].bpb, 1e-12 * b.val[i].bpb) << "step " << a.val[i].step;
}

// A rank that dies (SIGKILL) or hangs (SIGSTOP) ends the other within distributed.timeout_s, with a message.
TEST_F(Distributed, ADeadOrHungRankEndsTheOtherWithinTheTimeout) {
    const double timeout = 4;
    for (const int sig : {SIGKILL, SIGSTOP}) {
        const std::string name = sig == SIGKILL ? "killed" : "hung";
        const fs::path run = run_dir(name);
        Pair p = spawn_pair({"train", experiment, "--run-dir", run.string(), "horizon.num_iterations=100000",
                             "eval.every=-1", "distributed.timeout_s=" + std::to_string(static_cast<int>(timeout))},
                            log_path(name));
        ASSERT_TRUE(wait_for_text(run / "train.log", "step 00001/", 60)) << test::slurp(p.log[0]);
        const auto t0 = Clock::now();
        kill(p.pid[1], sig);
        const int code = wait_exit(p.pid[0]);
        const double took = std::chrono::duration<double>(Clock::now() - t0).count();
        if (sig == SIGSTOP) kill(p.pid[1], SIGKILL);
        wait_exit(p.pid[1]);
        std::printf("[ measured ] rank 1 %s: rank 0 exited %d after %.2f s (timeout %.0f s)\n", name.c_str(), code, took,
                    timeout);
        EXPECT_EQ(code, 1);
        EXPECT_LT(took, timeout + 10);
        const std::string out = test::slurp(p.log[0]);
        EXPECT_NE(out.find("error: rank 0 of 2:"), std::string::npos) << out;
        EXPECT_NE(out.find("another rank died, or did not take part within"), std::string::npos) << out;
        const auto status = run::read_status(run.string());
        EXPECT_EQ(status->state, "failed");
        EXPECT_NE(status->last_error.find("rank 0 of 2"), std::string::npos) << status->last_error;
    }
}

// A rank that fails alone prints its own error, prefixed with its rank, and tells the other through the
// rendezvous store: rank 0's error names rank 1 and its reason instead of "Connection closed by peer".
TEST_F(Distributed, ARankThatFailsAlonePrintsItsErrorAndTheOtherNamesIt) {
    const fs::path run = run_dir("one-rank-fails");
    Pair p = spawn_pair({"train", experiment, "--run-dir", run.string()}, log_path("one-rank-fails"), {},
                        {{}, {{"L3LAB_FAULT", "step:error@3"}}});
    const int code0 = wait_exit(p.pid[0]), code1 = wait_exit(p.pid[1]);
    const std::string out0 = test::slurp(p.log[0]), out1 = test::slurp(p.log[1]);
    EXPECT_EQ(code1, 1) << out1;
    EXPECT_NE(out1.find("[rank 1] error: injected failure at step 3"), std::string::npos) << out1;
    EXPECT_EQ(code0, 1) << out0;
    EXPECT_NE(out0.find("[rank 0] error: rank 0 of 2: "), std::string::npos) << out0;
    EXPECT_NE(out0.find("rank 1 failed: injected failure at step 3"), std::string::npos) << out0;
    const auto status = run::read_status(run.string());
    ASSERT_TRUE(status);
    EXPECT_EQ(status->state, "failed");
    EXPECT_NE(status->last_error.find("rank 1 failed: injected failure at step 3"), std::string::npos) << status->last_error;
    const size_t at = out0.find("[rank 0] error:");
    std::printf("[ measured ] rank 0 said: %s\n", out0.substr(at == std::string::npos ? 0 : at, 220).c_str());
}

// Data that leaves a rank without a document (the validation shard's 64 documents make one row group of
// 128 here) is refused by every rank before any run directory exists, each saying why.
TEST_F(Distributed, DataThatLeavesARankWithoutDocumentsIsRefusedByEveryRankBeforeAnyRunDirectory) {
    const fs::path run = run_dir("no-documents");
    Pair p = spawn_pair({"train", experiment, "--run-dir", run.string(), "data.row_group_docs=128"}, log_path("no-documents"));
    for (int r = 0; r < 2; ++r) {
        const int code = wait_exit(p.pid[r]);
        const std::string out = test::slurp(p.log[r]);
        EXPECT_EQ(code, 2) << out;
        EXPECT_NE(out.find("data.val: "), std::string::npos) << out;
        EXPECT_NE(out.find("64 documents make 1 row group of data.row_group_docs = 128 (at most 1 in one shard) for 2 "
                           "ranks: rank 1 would get no documents"),
                  std::string::npos)
            << out;
        EXPECT_NE(out.find("use at most 1 process, data.row_group_docs <= 63 or more documents"), std::string::npos) << out;
    }
    EXPECT_FALSE(fs::exists(run));
}

TEST_F(Distributed, MismatchedConfigsOrAMissingRankEndTheLaunchBeforeAnyRunDirectory) {
    const fs::path run = run_dir("mismatch");
    Pair p = spawn_pair({"train", experiment, "--run-dir", run.string()}, log_path("mismatch"), {{"seed=1"}, {"seed=2"}});
    EXPECT_EQ(wait_exit(p.pid[0]), 2);
    EXPECT_EQ(wait_exit(p.pid[1]), 2);
    for (const auto& log : p.log)
        EXPECT_NE(test::slurp(log).find("the ranks resolved different configs"), std::string::npos) << test::slurp(log);
    EXPECT_FALSE(fs::exists(run));

    // rank 1 never starts: rank 0 gives up after the timeout, naming it
    const auto t0 = Clock::now();
    const pid_t alone = spawn(L3LAB_BINARY, {"train", experiment, "--run-dir", run.string(), "distributed.timeout_s=2"},
                              {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"},
                               {"MASTER_PORT", std::to_string(free_port())}},
                              log_path("alone"));
    EXPECT_EQ(wait_exit(alone), 1);
    const double took = std::chrono::duration<double>(Clock::now() - t0).count();
    const std::string out = test::slurp(log_path("alone"));
    EXPECT_NE(out.find("rank 1 did not answer within"), std::string::npos) << out;
    EXPECT_LT(took, 30);
    EXPECT_FALSE(fs::exists(run));
}

// srun on a private single-node SLURM cluster (tools/slurm/local_cluster.sh; skipped when SLURM cannot
// start here): the ranks come from SLURM's variables, rank 0 hosts the store on the node list's first host
// at the port derived from the job id, and the run is the torchrun run's twin.
TEST_F(Distributed, SrunStartsTheRanksFromSlurmsVariables) {
    const fs::path state = dir->path() / "slurm";
    const std::string script = (test::kSourceDir / "tools" / "slurm" / "local_cluster.sh").string();
    const std::string owner = std::to_string(::getpid());
    const pid_t start = spawn("/bin/bash", {script, "start", state.string()},
                              {{"L3LAB_SLURM_OWNER_PID", owner}, {"L3LAB_SLURM_MAX_LIFETIME", "300"}}, log_path("slurm-start"));
    const int started = wait_exit(start);
    if (started == 77) GTEST_SKIP() << "no SLURM here: " << test::slurp(log_path("slurm-start"));
    ASSERT_EQ(started, 0) << test::slurp(log_path("slurm-start"));
    struct Stop {
        std::string script, state, log;
        ~Stop() { wait_exit(spawn("/bin/bash", {script, "stop", state}, {}, log)); }
    } stop{script, state.string(), log_path("slurm-stop")};

    // --overcommit: two ranks even where the cluster has a single CPU (the cluster has as many as the machine).
    const fs::path run = run_dir("srun");
    const pid_t srun = spawn("/usr/bin/srun",
                             {"--ntasks=2", "--overcommit", "--partition=local", "--immediate=30", "--kill-on-bad-exit=1", L3LAB_BINARY, "train", experiment,
                              "--run-dir", run.string(), "horizon.num_iterations=2"},
                             {{"SLURM_CONF", (state / "etc" / "slurm.conf").string()}}, log_path("srun"));
    ASSERT_EQ(wait_exit(srun), 0) << test::slurp(log_path("srun")) << "\nslurmctld.log:\n"
                                  << test::slurp(state / "log" / "slurmctld.log");
    const json provenance = json::parse(test::slurp(run / "provenance.json"));
    EXPECT_EQ(provenance["world_size"], 2);
    EXPECT_EQ(provenance["distributed"]["launcher"], "slurm");
    EXPECT_EQ(provenance["distributed"]["store_host"], "rank 0");
    EXPECT_EQ(run::read_status(run.string())->state, "completed");
    EXPECT_TRUE(fs::exists(final_checkpoint(run) / "optimizer.rank-00001-of-00002.safetensors"));
}

}  // namespace
