// The CUDA path (docs/cuda.md) against the CPU reference math: the L3 segment kernel, windowed flash
// attention, the fused soft-capped cross-entropy, a bf16 training step of a tiny GPT under the
// reference's precision policy, and a steady-state step without host-device synchronisation.
// Without a GPU (or without the CUDA kernels in this build) the GPU tests skip, saying why.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/cuda.h>

#include <algorithm>
#include <memory>
#include <cmath>
#include <string>
#include <vector>

#include "modules/optim/muon_adamw.h"
#include "modules/optim/reference_groups.h"
#include "modules/torch/cuda.h"
#include "modules/torch/gpt.h"
#include "modules/torch/l3_segment.h"

using namespace l3lab;
using namespace l3lab::modules;

namespace {

// Skips the calling test, visibly, when the GPU path cannot run here.
#define REQUIRE_CUDA()                                                                                              \
    do {                                                                                                            \
        if (!cuda_kernels_built()) GTEST_SKIP() << "this build has no CUDA kernels (L3LAB_CUDA=OFF or no nvcc)";    \
        if (!torch::cuda::is_available())                                                                          \
            GTEST_SKIP() << "no CUDA device visible: GPU test skipped (tools/gpu/check.sh runs it on a GPU machine)"; \
    } while (0)

const at::Device kCuda(at::kCUDA, 0);

// max |a - b| relative to max |b| (both brought to float64 on the CPU).
double relative_error(const at::Tensor& a, const at::Tensor& b) {
    at::Tensor x = a.detach().to(at::kCPU, at::kDouble), y = b.detach().to(at::kCPU, at::kDouble);
    EXPECT_EQ(x.sizes(), y.sizes());
    const double scale = std::max(y.abs().max().item<double>(), 1e-12);
    return (x - y).abs().max().item<double>() / scale;
}

#define EXPECT_CLOSE(a, b, tol)                                                                                     \
    do {                                                                                                            \
        const double err_ = relative_error((a), (b));                                                               \
        EXPECT_LE(err_, (tol)) << #a << " vs " << #b << ": max error " << err_ << " of the largest magnitude";       \
    } while (0)

at::Tensor round_to(const at::Tensor& t, at::ScalarType type) { return t.to(type).to(t.scalar_type()); }

}  // namespace

// --- runs everywhere ----------------------------------------------------------------------------

TEST(CudaBuild, KernelsArePresentExactlyWhenConfigured) {
#ifdef L3LAB_WITH_CUDA
    EXPECT_TRUE(cuda_kernels_built());
#else
    EXPECT_FALSE(cuda_kernels_built());
#endif
    if (!torch::cuda::is_available()) {
        EXPECT_EQ(cuda_device_count(), 0);
        EXPECT_FALSE(cuda_usable());
    }
    // CPU tensors never reach the CUDA kernels: a clear error, not a crash.
    at::Tensor q = at::randn({4, 8}), table = at::randn({6, 8});
    at::Tensor ids = at::zeros({4}, at::kLong), bounds = at::tensor(std::vector<int64_t>{0, 6}, at::kLong);
    EXPECT_THROW(l3_segment_attention_cuda(q, table, table, ids, bounds, 6), c10::Error);
    EXPECT_THROW(softcap_cross_entropy_cuda(q, ids, 8, 15.0), c10::Error);
}

// --- L3 segment kernel --------------------------------------------------------------------------

namespace {

struct L3Case {
    at::Tensor q, keys, values, ids, bounds;
    int64_t max_rows = 0;
};

// Rows per token from 0 (no rows) to 600 (more than the k_max of 512, several 32-row chunks), ids
// skewed so that the largest tokens repeat; widths not multiples of 32.
L3Case make_l3_case(bool tied, uint64_t seed) {
    at::manual_seed(seed);
    const int64_t V = 40, N = 320, C = 96, D = tied ? 96 : 80;
    std::vector<int64_t> rows(V);
    for (int64_t t = 0; t < V; ++t) rows[t] = t % 7 == 3 ? 0 : 1 + (t * 37) % 5;
    rows[0] = 600;
    rows[1] = 513;
    rows[2] = 64;
    rows[5] = 33;
    std::vector<int64_t> bounds{0};
    for (int64_t r : rows) bounds.push_back(bounds.back() + r);
    L3Case c;
    c.bounds = at::tensor(bounds, at::kLong);
    c.max_rows = *std::max_element(rows.begin(), rows.end());
    const int64_t n_emb = bounds.back() + 5;  // a few table rows no token owns
    c.q = at::randn({N, C});
    c.keys = at::randn({n_emb, C}) * 0.3;
    c.values = tied ? c.keys : at::randn({n_emb, D});
    c.ids = at::randint(0, V, {N}, at::kLong);
    c.ids.slice(0, 0, 40).fill_(0);
    c.ids.slice(0, 40, 60).fill_(1);
    return c;
}

}  // namespace

TEST(CudaL3, SegmentKernelMatchesTheCpuKernel) {
    REQUIRE_CUDA();
    for (bool tied : {true, false})
        for (at::ScalarType table_type : {at::kFloat, at::kBFloat16})
            for (at::ScalarType q_type : {at::kFloat, at::kBFloat16}) {
                SCOPED_TRACE(std::string(tied ? "tied" : "untied") + ", tables " + c10::toString(table_type) +
                             ", q " + c10::toString(q_type));
                L3Case c = make_l3_case(tied, 7);
                // The CPU reference in float64 on exactly the values the GPU sees.
                at::Tensor keys_host = round_to(c.keys, table_type), values_host = tied ? keys_host : round_to(c.values, table_type);
                at::Tensor q_host = round_to(c.q, q_type);
                at::Tensor grad_out = at::randn({c.q.size(0), c.values.size(1)});

                at::Tensor q_ref = q_host.to(at::kDouble).requires_grad_(true);
                at::Tensor k_ref = keys_host.to(at::kDouble).requires_grad_(true);
                at::Tensor v_ref = tied ? k_ref : values_host.to(at::kDouble).requires_grad_(true);
                at::Tensor out_ref = l3_segment_attention(q_ref, k_ref, v_ref, c.ids, c.bounds);
                (out_ref * grad_out.to(at::kDouble)).sum().backward();

                at::Tensor q_gpu = q_host.to(kCuda, q_type).requires_grad_(true);
                at::Tensor k_gpu = keys_host.to(kCuda, table_type).requires_grad_(true);
                at::Tensor v_gpu = tied ? k_gpu : values_host.to(kCuda, table_type).requires_grad_(true);
                at::Tensor out = l3_segment_attention(q_gpu, k_gpu, v_gpu, c.ids.to(kCuda), c.bounds.to(kCuda), c.max_rows);
                EXPECT_EQ(out.scalar_type(), q_type);
                (out * grad_out.to(kCuda, out.scalar_type())).sum().backward();

                // float32 accumulation everywhere; bfloat16 storage rounds results to ~3 significant digits.
                const double out_tol = q_type == at::kBFloat16 ? 1e-2 : 1e-4;
                const double grad_tol = (q_type == at::kBFloat16 || table_type == at::kBFloat16) ? 2e-2 : 1e-4;
                EXPECT_CLOSE(out, out_ref, out_tol);
                EXPECT_CLOSE(q_gpu.grad(), q_ref.grad(), grad_tol);
                EXPECT_CLOSE(k_gpu.grad(), k_ref.grad(), grad_tol);
                if (!tied) EXPECT_CLOSE(v_gpu.grad(), v_ref.grad(), grad_tol);
                EXPECT_EQ(k_gpu.grad().scalar_type(), table_type);
                // Rows no token owns (and tokens absent from the batch) get exactly zero gradient.
                EXPECT_EQ(k_gpu.grad().slice(0, -5).abs().max().item<double>(), 0.0);
            }
}

TEST(CudaL3, MaxRowsFromBoundsWhenNotGiven) {
    REQUIRE_CUDA();
    L3Case c = make_l3_case(true, 3);
    at::Tensor given = l3_segment_attention(c.q.to(kCuda), c.keys.to(kCuda), c.keys.to(kCuda), c.ids.to(kCuda),
                                            c.bounds.to(kCuda), c.max_rows);
    at::Tensor computed = l3_segment_attention(c.q.to(kCuda), c.keys.to(kCuda), c.keys.to(kCuda), c.ids.to(kCuda),
                                               c.bounds.to(kCuda), -1);
    EXPECT_TRUE(at::equal(given, computed));
}

// --- attention ----------------------------------------------------------------------------------

TEST(CudaAttention, FlashWithWindowsMatchesCpuReferenceMath) {
    REQUIRE_CUDA();
    const int64_t B = 2, T = 128, H = 4, H_kv = 2, D = 64;
    for (int64_t window : {int64_t{-1}, T, T / 2, int64_t{7}}) {
        SCOPED_TRACE("window " + std::to_string(window));
        at::manual_seed(11);
        // bfloat16-representable inputs, so both sides see the same numbers.
        at::Tensor q = round_to(at::randn({B, T, H, D}), at::kBFloat16);
        at::Tensor k = round_to(at::randn({B, T, H_kv, D}), at::kBFloat16);
        at::Tensor v = round_to(at::randn({B, T, H_kv, D}), at::kBFloat16);
        at::Tensor grad_out = at::randn({B, T, H, D});

        at::Tensor q_ref = q.clone().requires_grad_(true), k_ref = k.clone().requires_grad_(true);
        at::Tensor v_ref = v.clone().requires_grad_(true);
        at::Tensor y_ref = windowed_causal_attention(q_ref.transpose(1, 2), k_ref.transpose(1, 2).repeat_interleave(H / H_kv, 1),
                                                     v_ref.transpose(1, 2).repeat_interleave(H / H_kv, 1), window)
                               .transpose(1, 2);
        (y_ref * grad_out).sum().backward();

        at::Tensor q_gpu = q.to(kCuda).requires_grad_(true), k_gpu = k.to(kCuda).requires_grad_(true);
        at::Tensor v_gpu = v.to(kCuda).requires_grad_(true);
        at::Tensor y = flash_causal_attention(q_gpu, k_gpu, v_gpu, window);
        EXPECT_EQ(y.scalar_type(), at::kBFloat16);
        (y.to(at::kFloat) * grad_out.to(kCuda)).sum().backward();

        EXPECT_CLOSE(y, y_ref, 2e-2);
        EXPECT_CLOSE(q_gpu.grad(), q_ref.grad(), 3e-2);
        EXPECT_CLOSE(k_gpu.grad(), k_ref.grad(), 3e-2);
        EXPECT_CLOSE(v_gpu.grad(), v_ref.grad(), 3e-2);
    }
}

// --- soft-capped cross-entropy ------------------------------------------------------------------

TEST(CudaLoss, FusedSoftcapCrossEntropyMatchesTheUnfusedMath) {
    REQUIRE_CUDA();
    const int64_t rows = 96, padded = 256, vocab = 250;
    const double cap = 15.0;
    for (at::ScalarType type : {at::kBFloat16, at::kFloat}) {
        SCOPED_TRACE(c10::toString(type));
        at::manual_seed(5);
        at::Tensor logits = round_to(at::randn({rows, padded}) * 20, type);
        at::Tensor targets = at::randint(0, vocab, {rows}, at::kLong);
        targets.slice(0, 0, 10).fill_(-1);
        at::Tensor grad_loss = at::rand({rows});

        // The reference's logits_from + cross_entropy, in float64 on the CPU.
        at::Tensor x_ref = logits.to(at::kDouble).requires_grad_(true);
        at::Tensor z = cap * at::tanh(x_ref.slice(1, 0, vocab) / cap);
        at::Tensor loss_ref = at::cross_entropy_loss(z, targets, {}, at::Reduction::None, -1);
        (loss_ref * grad_loss.to(at::kDouble)).sum().backward();

        at::Tensor x = logits.to(kCuda, type).requires_grad_(true);
        at::Tensor loss = softcap_cross_entropy_cuda(x, targets.to(kCuda), vocab, cap);
        EXPECT_EQ(loss.scalar_type(), at::kFloat);
        (loss * grad_loss.to(kCuda)).sum().backward();

        EXPECT_CLOSE(loss, loss_ref, 1e-5);
        EXPECT_CLOSE(x.grad(), x_ref.grad(), type == at::kBFloat16 ? 1e-2 : 1e-5);
        EXPECT_EQ(x.grad().slice(1, vocab).abs().max().item<double>(), 0.0);  // padding columns
        EXPECT_EQ(x.grad().slice(0, 0, 10).abs().max().item<double>(), 0.0);  // ignored targets
    }
}

// --- fused pointwise chains --------------------------------------------------------------------

TEST(CudaPointwise, RotaryAndReluSquareMatchTheUnfusedOps) {
    REQUIRE_CUDA();
    for (at::ScalarType type : {at::kFloat, at::kBFloat16}) {
        SCOPED_TRACE(c10::toString(type));
        at::manual_seed(9);
        const int64_t B = 2, T = 16, H = 3, D = 8;
        at::Tensor x = round_to(at::randn({B, T, H, D}), type);
        at::Tensor cos = round_to(at::randn({1, T, 1, D / 2}), at::kBFloat16), sin = round_to(at::randn({1, T, 1, D / 2}), at::kBFloat16);
        at::Tensor grad_out = at::randn({B, T, H, D});
        // gpt.cpp's apply_rotary on the CPU, in float64.
        at::Tensor x_ref = x.to(at::kDouble).requires_grad_(true);
        at::Tensor c = cos.to(at::kDouble), s = sin.to(at::kDouble);
        at::Tensor x1 = x_ref.slice(3, 0, D / 2), x2 = x_ref.slice(3, D / 2);
        at::Tensor y_ref = at::cat({x1 * c + x2 * s, x1 * (-s) + x2 * c}, 3);
        (y_ref * grad_out.to(at::kDouble)).sum().backward();
        at::Tensor x_gpu = x.to(kCuda, type).requires_grad_(true);
        at::Tensor y = rotary_cuda(x_gpu, cos.to(kCuda, at::kBFloat16), sin.to(kCuda, at::kBFloat16));
        EXPECT_EQ(y.scalar_type(), type);
        (y.to(at::kFloat) * grad_out.to(kCuda)).sum().backward();
        const double tol = type == at::kBFloat16 ? 1e-2 : 1e-6;
        EXPECT_CLOSE(y, y_ref, tol);
        EXPECT_CLOSE(x_gpu.grad(), x_ref.grad(), tol);

        at::Tensor h = round_to(at::randn({64, 40}), type);
        at::Tensor h_ref = h.to(at::kDouble).requires_grad_(true);
        at::Tensor r_ref = at::relu(h_ref).square();
        at::Tensor g = at::randn({64, 40});
        (r_ref * g.to(at::kDouble)).sum().backward();
        at::Tensor h_gpu = h.to(kCuda, type).requires_grad_(true);
        at::Tensor r = relu_square_cuda(h_gpu);
        (r.to(at::kFloat) * g.to(kCuda)).sum().backward();
        EXPECT_CLOSE(r, r_ref, tol);
        EXPECT_CLOSE(h_gpu.grad(), h_ref.grad(), tol);
    }
}

// --- the model ----------------------------------------------------------------------------------

namespace {

GPTOptions tiny_options() {
    GPTOptions o;
    o.sequence_len = 64;
    o.vocab_size = 500;  // padded to 512
    o.n_layer = 2;
    o.n_embd = 128;
    o.n_head = 2;
    o.n_kv_head = 2;
    o.window_pattern = "SL";
    L3LayerOptions l3;
    l3.n_emb = 20 * 64 + 480 * 2;  // tiny_model's allocation: 64 rows for tokens 0..19, 1..3 for the rest
    l3.d_up = 256;
    l3.k_max = 64;
    o.l3.push_back({0, l3});
    return o;
}

// Weights initialised as the reference does, then every zero-initialised matrix made small and random
// so that each path (attention output, MLP, L3 tables) carries a gradient.
GPT tiny_model(uint64_t seed) {
    GPTOptions o = tiny_options();
    GPT model(o);
    at::manual_seed(seed);
    model->init_weights();
    std::vector<int64_t> bounds{0};
    for (int64_t t = 0; t < o.vocab_size; ++t) bounds.push_back(bounds.back() + (t < 20 ? 64 : t % 3 + 1));
    model->l3_layers["0"]->as<L3LayerImpl>()->set_bounds(at::tensor(bounds, at::kLong));
    torch::NoGradGuard no_grad;
    for (auto& item : model->named_parameters(true)) {
        at::Tensor p = item.value();
        if (p.dim() == 2 && p.abs().max().item<double>() == 0.0) p.normal_(0.0, 0.02);
    }
    // bfloat16-representable embedding tables: the CUDA model stores them in bfloat16.
    for (auto& item : model->named_parameters(true))
        if (item.key().find("wte") != std::string::npos || item.key().find("value_embeds") != std::string::npos ||
            item.key().find("kv_weight") != std::string::npos)
            item.value().copy_(round_to(item.value(), at::kBFloat16));
    return model;
}

std::pair<at::Tensor, at::Tensor> tiny_batch(uint64_t seed) {
    at::manual_seed(seed);
    at::Tensor x = at::randint(0, 500, {4, 64}, at::kLong);
    x.slice(1, 0, 16).fill_(3);  // a frequent token with 64 L3 rows
    at::Tensor y = at::randint(0, 500, {4, 64}, at::kLong);
    y.slice(1, 60).fill_(-1);
    return {x, y};
}

}  // namespace

TEST(CudaOptim, FusedAdamWStepMatchesTheEagerStep) {
    REQUIRE_CUDA();
    at::manual_seed(11);
    for (const at::ScalarType type : {at::kFloat, at::kBFloat16}) {
        SCOPED_TRACE(c10::toString(type));
        at::Tensor cpu_p = at::randn({64, 48}).to(type).requires_grad_();
        at::Tensor cuda_p = cpu_p.detach().to(kCuda).requires_grad_();
        auto make = [](const at::Tensor& p) {
            optim::ParamGroup group;
            group.options.name = "table";
            group.options.kind = optim::Kind::AdamW;
            group.options.lr = 0.02;
            group.options.weight_decay = 0.1;
            group.params = {{"w", p}};
            return std::make_unique<optim::MuonAdamW>(std::vector<optim::ParamGroup>{group});
        };
        auto cpu_opt = make(cpu_p), cuda_opt = make(cuda_p);  // the CPU one runs the eager ATen ops
        for (int step = 0; step < 4; ++step) {
            const at::Tensor g = at::randn({64, 48}).to(type);
            cpu_p.mutable_grad() = g;
            cuda_p.mutable_grad() = g.to(kCuda);
            cpu_opt->step();
            cuda_opt->step();
        }
        // float32: the same operations in another order of rounding; bfloat16: the fused kernel rounds
        // once per stored value where eager rounds after every operation (a few bfloat16 ulps).
        const double tol = type == at::kFloat ? 1e-5 : 3e-2;
        EXPECT_CLOSE(cuda_p, cpu_p, tol);
        const auto a = cuda_opt->state(), b = cpu_opt->state();
        ASSERT_EQ(a.size(), b.size());
        for (size_t i = 0; i < a.size(); ++i) {
            EXPECT_EQ(a[i].first, b[i].first);
            if (a[i].second.is_floating_point() && a[i].second.dim() > 0) EXPECT_CLOSE(a[i].second, b[i].second, tol);
            else EXPECT_TRUE(at::equal(a[i].second.cpu(), b[i].second.cpu())) << a[i].first;
        }
    }
}

TEST(CudaGpt, Bf16StepFollowsThePrecisionPolicyAndMatchesCpu) {
    REQUIRE_CUDA();
    auto [x, y] = tiny_batch(1);
    GPT cpu = tiny_model(3);
    at::Tensor loss_cpu = cpu->loss(x, y);
    loss_cpu.backward();

    GPT gpu = tiny_model(3);
    gpu->to(kCuda);
    gpu->cast_embeddings_to_bf16();
    for (const auto& item : gpu->named_parameters(true)) {
        const bool table = item.key().find("wte") != std::string::npos ||
                           item.key().find("value_embeds") != std::string::npos ||
                           item.key().find("kv_weight") != std::string::npos;
        EXPECT_EQ(item.value().scalar_type(), table ? at::kBFloat16 : at::kFloat) << item.key();
    }
    at::Tensor logits = gpu->forward(x.to(kCuda));
    EXPECT_EQ(logits.scalar_type(), at::kFloat);  // float32 logits, as the reference's .float()
    at::Tensor loss = gpu->loss(x.to(kCuda), y.to(kCuda));
    EXPECT_EQ(loss.scalar_type(), at::kFloat);
    loss.backward();
    EXPECT_NEAR(loss.item<double>(), loss_cpu.item<double>(), 2e-2);
    // The fused loss equals cross_entropy on forward()'s logits.
    at::Tensor unfused = at::cross_entropy_loss(logits.view({-1, logits.size(-1)}), y.to(kCuda).reshape({-1}), {},
                                                at::Reduction::Mean, -1);
    EXPECT_NEAR(loss.item<double>(), unfused.item<double>(), 1e-4);

    auto cpu_params = cpu->named_parameters(true);
    for (const auto& item : gpu->named_parameters(true)) {
        const at::Tensor& g = item.value().grad();
        ASSERT_TRUE(g.defined()) << item.key();
        EXPECT_EQ(g.scalar_type(), item.value().scalar_type()) << item.key();
        const at::Tensor& ref = cpu_params[item.key()].grad();
        const double rel = (g.to(at::kCPU, at::kDouble) - ref.to(at::kDouble)).norm().item<double>() /
                           std::max(ref.to(at::kDouble).norm().item<double>(), 1e-12);
        EXPECT_LE(rel, 0.1) << item.key() << ": bf16 gradient differs from the float32 CPU one by " << rel;
    }
}

TEST(CudaGpt, SteadyStateTrainingStepHasNoHostSync) {
    REQUIRE_CUDA();
    GPT model = tiny_model(4);
    model->to(kCuda);
    model->cast_embeddings_to_bf16();
    optim::MuonAdamW optimizer(optim::reference_param_groups(model));
    auto [x_host, y_host] = tiny_batch(2);
    at::Tensor x = x_host.to(kCuda), y = y_host.to(kCuda);
    auto step = [&] {
        at::Tensor loss = model->loss(x, y);
        (loss / 2.0).backward();
        optimizer.step();
        optimizer.zero_grad();
        return loss.detach();
    };
    step();  // lazy initialisation: optimizer state, allocator pools, cuBLAS handles
    step();
    cuda_synchronize();
    cuda_set_sync_errors(true);
    at::Tensor loss;
    try {
        loss = step();
    } catch (const c10::Error& e) {
        cuda_set_sync_errors(false);
        FAIL() << "the step synchronised with the host: " << e.what_without_backtrace();
    }
    cuda_set_sync_errors(false);
    EXPECT_TRUE(std::isfinite(loss.item<double>()));
}
