// Time of one MuonAdamW step for a GPT's parameters (default: the reference's d12, n_embd 768, 12 layers,
// vocabulary 32768, ~286M parameters), grouped as setup_optimizer groups them, on the CPU in float32.
// Compare with tools/bench/bench_optim_reference.py (the reference's eager MuonAdamW, same shapes, same
// thread count).
//
//   build/tools/bench/bench_optim                        # d12, all threads, 1 warm-up + 5 timed steps
//   build/tools/bench/bench_optim --threads 2 --steps 3 --layers 4
//
// The AdamW groups and the Muon groups are stepped by two optimizers over the same tensors (a single
// optimizer steps the same groups in the same order), so the table splits the step into both parts.
// Gradients are fixed random tensors; the first step (state allocation) is not timed.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "modules/optim/muon_adamw.h"
#include "modules/optim/reference_groups.h"
#include "modules/torch/gpt.h"

namespace {

namespace mod = l3lab::modules;
namespace opt = l3lab::optim;

struct Settings {
    int64_t layers = 12, width = 768, vocab = 32768, head_dim = 128;
    int threads = 0;  // 0: libtorch's default
    int steps = 5, warmup = 1;
};

[[noreturn]] void usage(const char* argv0) {
    std::fprintf(stderr,
                 "usage: %s [--layers N] [--width C] [--vocab V] [--threads T] [--steps S] [--warmup W]\n",
                 argv0);
    std::exit(2);
}

Settings parse(int argc, char** argv) {
    Settings s;
    for (int i = 1; i < argc; ++i) {
        auto value = [&]() -> long {
            if (i + 1 >= argc) usage(argv[0]);
            return std::strtol(argv[++i], nullptr, 10);
        };
        if (!std::strcmp(argv[i], "--layers")) s.layers = value();
        else if (!std::strcmp(argv[i], "--width")) s.width = value();
        else if (!std::strcmp(argv[i], "--vocab")) s.vocab = value();
        else if (!std::strcmp(argv[i], "--threads")) s.threads = static_cast<int>(value());
        else if (!std::strcmp(argv[i], "--steps")) s.steps = static_cast<int>(value());
        else if (!std::strcmp(argv[i], "--warmup")) s.warmup = static_cast<int>(value());
        else usage(argv[0]);
    }
    if (s.steps < 1 || s.layers < 1 || s.width < 32) usage(argv[0]);
    return s;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double seconds_of(opt::MuonAdamW& o) {
    const auto t0 = std::chrono::steady_clock::now();
    o.step();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
    const Settings s = parse(argc, argv);
    if (s.threads > 0) at::set_num_threads(s.threads);
    at::manual_seed(1234);

    mod::GPTOptions o;  // nanochat's width rule: model_dim = depth * 64, heads of head_dim
    o.n_layer = s.layers;
    o.n_embd = s.width;
    o.n_head = s.width / s.head_dim > 0 ? s.width / s.head_dim : 1;
    o.n_kv_head = o.n_head;
    o.vocab_size = s.vocab;
    mod::GPT model(o);

    std::vector<opt::ParamGroup> adamw_groups, muon_groups;
    int64_t adamw_numel = 0, muon_numel = 0;
    for (auto& g : opt::reference_param_groups(model)) {
        for (auto& [name, p] : g.params) {
            p.mutable_grad() = at::randn_like(p) * 0.01;
            (g.options.kind == opt::Kind::AdamW ? adamw_numel : muon_numel) += p.numel();
        }
        (g.options.kind == opt::Kind::AdamW ? adamw_groups : muon_groups).push_back(std::move(g));
    }
    const size_t n_muon_groups = muon_groups.size();
    opt::MuonAdamW adamw(std::move(adamw_groups)), muon(std::move(muon_groups));

    for (int i = 0; i < s.warmup; ++i) {
        adamw.step();
        muon.step();
    }
    std::vector<double> t_adamw, t_muon, t_total;
    for (int i = 0; i < s.steps; ++i) {
        const double a = seconds_of(adamw), m = seconds_of(muon);
        t_adamw.push_back(a);
        t_muon.push_back(m);
        t_total.push_back(a + m);
    }

    std::printf("MuonAdamW step, l3lab (libtorch %s), CPU float32, %d threads\n", TORCH_VERSION,
                at::get_num_threads());
    std::printf("model: %lld layers, n_embd %lld, vocab %lld; AdamW %.1fM params, Muon %.1fM params in %zu shape groups\n",
                static_cast<long long>(s.layers), static_cast<long long>(s.width), static_cast<long long>(s.vocab),
                adamw_numel / 1e6, muon_numel / 1e6, n_muon_groups);
    std::printf("%-8s %12s %12s %12s   (median of %d steps after %d warm-up)\n", "", "median ms", "min ms", "max ms",
                s.steps, s.warmup);
    auto row = [](const char* name, const std::vector<double>& t) {
        std::printf("%-8s %12.1f %12.1f %12.1f\n", name, median(t) * 1e3, *std::min_element(t.begin(), t.end()) * 1e3,
                    *std::max_element(t.begin(), t.end()) * 1e3);
    };
    row("adamw", t_adamw);
    row("muon", t_muon);
    row("total", t_total);
    return 0;
}
