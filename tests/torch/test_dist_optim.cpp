// DistMuonAdamW (modules/optim/dist_muon_adamw.h) against MuonAdamW. W worker processes - this test
// binary again, running the disabled worker test below - step a DistMuonAdamW on a Gloo group over
// localhost; the parent steps MuonAdamW on the averaged gradients.
//
// Tolerance: none. The gradients are multiples of 2^-12 of magnitude below 8, so every partial sum of up
// to three of them is exact in float32, whatever order Gloo adds them in; the average then has one
// rounding (the division by W) in both runs. Each rank's update is MuonAdamW's arithmetic on a row slice
// (elementwise) or on whole matrices (a Muon matrix does not depend on the others in its stack: see
// test_optim.cpp). So parameters and state must be the same bits, for W = 2 and W = 3 - which covers
// zero-padded Muon stacks, rows not divisible by W (all-reduced whole) and changing hyperparameters.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <unistd.h>

#include <cstring>
#include <map>
#include <sstream>

#include "modules/optim/dist_muon_adamw.h"
#include "modules/torch/weights.h"
#include "runner/io/safetensors.h"
#include "runner/torch/backends.h"
#include "test_util.h"

using namespace l3lab;
using namespace l3lab::optim;

namespace {

constexpr int kSteps = 3;

struct Spec {
    std::string group;
    std::vector<int64_t> shape;
};

// Shapes chosen for the cases: row-sharded at W = 2 and 3, rows not divisible by W, small, Muon stacks
// of 3 wide, 2 tall and 1 square matrices.
const std::vector<Spec> kParams = {
    {"emb", {64, 32}}, {"emb", {6, 256}}, {"emb", {5, 300}}, {"emb", {7}}, {"scalars", {3, 4}},
    {"mat", {16, 32}}, {"mat", {32, 16}}, {"mat", {16, 32}}, {"mat", {24, 24}}, {"mat", {32, 16}}, {"mat", {16, 32}},
};

std::vector<at::Tensor> make_params() {
    at::Generator g = at::detail::createCPUGenerator(1234);
    std::vector<at::Tensor> out;
    for (const auto& s : kParams) out.push_back(at::randn(s.shape, g).mul_(0.1).set_requires_grad(true));
    return out;
}

// Rank r's gradient of parameter i at step t: an integer in [-2^15, 2^15) times 2^-12.
at::Tensor gradient(int rank, int step, size_t i) {
    at::Generator g = at::detail::createCPUGenerator(static_cast<uint64_t>(1000 * rank + 100 * step + static_cast<int>(i) + 7));
    return at::randint(-32768, 32768, kParams[i].shape, g, at::kFloat).mul_(1.0 / 4096.0);
}

std::vector<ParamGroup> make_groups(const std::vector<at::Tensor>& params) {
    std::vector<ParamGroup> groups;
    auto group = [&](const std::string& name, Kind kind, double lr) {
        ParamGroup g;
        g.options.name = name;
        g.options.kind = kind;
        g.options.lr = lr;
        g.options.weight_decay = kind == Kind::Muon ? 0.1 : 0.01;
        for (size_t i = 0; i < kParams.size(); ++i)
            if (kParams[i].group == name) g.params.emplace_back("p" + std::to_string(i), params[i]);
        groups.push_back(g);
    };
    group("emb", Kind::AdamW, 0.02);
    group("mat", Kind::Muon, 0.05);
    group("scalars", Kind::AdamW, 0.5);
    return groups;
}

// The schedule both runs apply before step t (every hyperparameter the trainer changes).
template <class Optimizer>
void schedule(Optimizer& opt, int step) {
    for (auto& g : opt.groups()) {
        g.options.lr = g.initial_lr * (1.0 - 0.2 * step);
        if (g.options.kind == Kind::Muon) {
            g.options.momentum = 0.85 + 0.05 * step;
            g.options.weight_decay = 0.1 * (1.0 - 0.3 * step);
        }
    }
}

int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(fd);
    return ntohs(a.sin_port);
}

std::string self_exe() {
    char buf[4096];
    const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    return std::string(buf, static_cast<size_t>(n > 0 ? n : 0));
}

std::map<std::string, at::Tensor> read_file(const std::string& path) {
    std::map<std::string, at::Tensor> out;
    for (const auto& r : io::read_safetensors(path).tensors) out[r.name] = modules::to_tensor(r);
    return out;
}

bool same_bits(const at::Tensor& a, const at::Tensor& b) {
    return a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() &&
           std::memcmp(a.contiguous().data_ptr(), b.contiguous().data_ptr(), a.nbytes()) == 0;
}

// One worker: L3LAB_DIST_OPTIM_WORKER = "rank world port output". Steps 1-2 with one optimizer, then
// hands its state to a fresh one (load_state) for step 3; writes the parameters and its state shard.
TEST(DistMuonAdamWWorker, DISABLED_Run) {
    const char* spec = std::getenv("L3LAB_DIST_OPTIM_WORKER");
    ASSERT_NE(spec, nullptr);
    std::istringstream in(spec);
    int rank = 0, world = 0, port = 0;
    std::string output;
    in >> rank >> world >> port >> output;
    c10d::TCPStoreOptions o;
    o.port = static_cast<uint16_t>(port);
    o.isServer = rank == 0;
    o.waitWorkers = false;
    o.timeout = std::chrono::seconds(60);
    auto store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", o);
    auto backend = dist::make_gloo_backend(store, rank, world, std::chrono::seconds(60));

    std::vector<at::Tensor> params = make_params();
    auto opt = std::make_unique<DistMuonAdamW>(make_groups(params), backend.get());
    ASSERT_EQ(opt->world_size(), world);
    for (int t = 0; t < kSteps; ++t) {
        if (t == 2) {  // a resume: the shard goes through state()/load_state() into a fresh optimizer
            std::vector<NamedTensor> saved;
            for (const auto& [name, tensor] : opt->state()) saved.emplace_back(name, tensor.clone());
            opt = std::make_unique<DistMuonAdamW>(make_groups(params), backend.get());
            opt->load_state(saved);
        }
        for (size_t i = 0; i < params.size(); ++i) params[i].mutable_grad() = gradient(rank, t, i);
        schedule(*opt, t);
        opt->step();
        opt->zero_grad();
    }
    std::vector<io::TensorRecord> records;
    for (size_t i = 0; i < params.size(); ++i) records.push_back(modules::to_record("param.p" + std::to_string(i), params[i]));
    for (const auto& [name, tensor] : opt->state()) records.push_back(modules::to_record("state." + name, tensor));
    io::write_safetensors(output, records);
}

TEST(DistMuonAdamW, GroupsOfTwoAndThreeMatchMuonAdamWOnAveragedGradientsBitForBit) {
    test::TempDir dir;
    for (const int world : {2, 3}) {
        const std::string port = std::to_string(free_port());
        std::vector<pid_t> pids;
        for (int r = 0; r < world; ++r) {
            const std::string spec = std::to_string(r) + " " + std::to_string(world) + " " + port + " " +
                                     (dir.path() / ("w" + std::to_string(world) + "r" + std::to_string(r) + ".safetensors")).string();
            const std::string log = (dir.path() / ("w" + std::to_string(world) + "r" + std::to_string(r) + ".log")).string();
            pid_t pid = fork();
            if (pid == 0) {
                setenv("L3LAB_DIST_OPTIM_WORKER", spec.c_str(), 1);
                setenv("OMP_NUM_THREADS", "1", 1);
                int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
                dup2(fd, 1);
                dup2(fd, 2);
                const std::string exe = self_exe();
                execl(exe.c_str(), exe.c_str(), "--gtest_also_run_disabled_tests", "--gtest_filter=DistMuonAdamWWorker.*",
                      static_cast<char*>(nullptr));
                _exit(127);
            }
            pids.push_back(pid);
        }
        for (int r = 0; r < world; ++r) {
            int status = 0;
            waitpid(pids[static_cast<size_t>(r)], &status, 0);
            ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
                << "worker " << r << " of " << world << ":\n"
                << test::slurp(dir.path() / ("w" + std::to_string(world) + "r" + std::to_string(r) + ".log"));
        }

        // the reference: MuonAdamW on the averaged gradients (exact sums, one division)
        std::vector<at::Tensor> params = make_params();
        MuonAdamW ref(make_groups(params));
        for (int t = 0; t < kSteps; ++t) {
            for (size_t i = 0; i < params.size(); ++i) {
                at::Tensor sum = gradient(0, t, i);
                for (int r = 1; r < world; ++r) sum.add_(gradient(r, t, i));
                params[i].mutable_grad() = sum.div_(world);
            }
            schedule(ref, t);
            ref.step();
            ref.zero_grad();
        }
        std::map<std::string, at::Tensor> ref_state;
        for (const auto& [name, tensor] : ref.state()) ref_state[name] = tensor;

        std::vector<std::map<std::string, at::Tensor>> out;
        for (int r = 0; r < world; ++r)
            out.push_back(read_file((dir.path() / ("w" + std::to_string(world) + "r" + std::to_string(r) + ".safetensors")).string()));
        for (int r = 0; r < world; ++r)
            for (size_t i = 0; i < params.size(); ++i)
                EXPECT_TRUE(same_bits(out[r].at("param.p" + std::to_string(i)), params[i]))
                    << "W=" << world << " rank " << r << " parameter p" << i << ": max |diff| "
                    << (out[r].at("param.p" + std::to_string(i)) - params[i]).abs().max().item<double>();
        // every state entry: whole on every rank (replicated), split by rows, or on its one owner
        int replicated = 0, sharded = 0, owned = 0;
        for (const auto& [name, full] : ref_state) {
            std::vector<at::Tensor> parts;
            for (int r = 0; r < world; ++r)
                if (out[r].count("state." + name)) parts.push_back(out[r].at("state." + name));
            ASSERT_FALSE(parts.empty()) << name;
            if (parts.size() == static_cast<size_t>(world) && parts[0].sizes() == full.sizes()) {
                for (const auto& p : parts) EXPECT_TRUE(same_bits(p, full)) << name;
                ++replicated;
            } else if (parts.size() == static_cast<size_t>(world)) {
                EXPECT_TRUE(same_bits(at::cat(parts, 0), full)) << name;
                ++sharded;
            } else {
                ASSERT_EQ(parts.size(), 1u) << name;
                EXPECT_TRUE(same_bits(parts[0], full)) << name;
                ++owned;
            }
        }
        std::printf("[ measured ] W=%d: parameters and state bit-identical to MuonAdamW; state entries %d replicated, "
                    "%d row-sharded, %d owned\n",
                    world, replicated, sharded, owned);
        EXPECT_GT(sharded, 0);
        EXPECT_GT(owned, 0);
    }
}

TEST(DistMuonAdamW, WithoutAGroupItIsMuonAdamW) {
    std::vector<at::Tensor> a = make_params(), b = make_params();
    MuonAdamW ref(make_groups(a));
    DistMuonAdamW one(make_groups(b), nullptr);
    EXPECT_EQ(one.world_size(), 1);
    for (int t = 0; t < kSteps; ++t) {
        for (size_t i = 0; i < a.size(); ++i) {
            a[i].mutable_grad() = gradient(0, t, i);
            b[i].mutable_grad() = gradient(0, t, i);
        }
        schedule(ref, t);
        schedule(one, t);
        ref.step();
        one.step();
        ref.zero_grad();
        one.zero_grad();
    }
    for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(same_bits(a[i], b[i])) << "p" << i;
    const auto sa = ref.state(), sb = one.state();
    ASSERT_EQ(sa.size(), sb.size());
    for (size_t i = 0; i < sa.size(); ++i) {
        EXPECT_EQ(sa[i].first, sb[i].first);
        EXPECT_TRUE(same_bits(sa[i].second, sb[i].second)) << sa[i].first;
    }
}

}  // namespace
