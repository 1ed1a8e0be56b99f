// The fused CPU kernels (modules/torch/cpu.h) against the unfused math in float64, for every instruction
// set this CPU can run (DEFAULT always; AVX2 and AVX512 where the CPU has them), and through the GPT's
// loss against the unfused path it replaced.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "modules/torch/cpu.h"
#include "modules/torch/cpu/kernels.h"
#include "modules/torch/gpt.h"

using namespace l3lab::modules;

namespace {

double relative_error(const at::Tensor& a, const at::Tensor& b) {
    at::Tensor x = a.detach().to(at::kDouble), y = b.detach().to(at::kDouble);
    EXPECT_EQ(x.sizes(), y.sizes());
    const double scale = std::max(y.abs().max().item<double>(), 1e-12);
    return (x - y).abs().max().item<double>() / scale;
}

struct Isa {
    std::string name;
    cpu_kernels::SoftcapCeRowsFn rows;
    cpu_kernels::ScaleRowsFn scale;
};

// The instruction sets this CPU runs: the one ATen picked and every one below it.
std::vector<Isa> runnable_isas() {
    std::vector<Isa> isas{{"DEFAULT", cpu_kernels::DEFAULT::softcap_ce_rows, cpu_kernels::DEFAULT::scale_rows}};
    const std::string top = cpu_kernels_capability();
    if (top == "AVX2" || top == "AVX512")
        isas.push_back({"AVX2", cpu_kernels::AVX2::softcap_ce_rows, cpu_kernels::AVX2::scale_rows});
    if (top == "AVX512")
        isas.push_back({"AVX512", cpu_kernels::AVX512::softcap_ce_rows, cpu_kernels::AVX512::scale_rows});
    return isas;
}

// Logits that exercise the kernel: vocabularies that are not a multiple of any vector width (tails),
// padding columns, ignored targets, targets at both ends of the vocabulary, rows of equal logits (ties),
// and logits far beyond the cap (tanh saturates).
struct Case {
    at::Tensor logits;   // [rows, padded] float32
    at::Tensor targets;  // [rows] int64
    int64_t vocab;
};

Case make_case(int64_t rows, int64_t padded, int64_t vocab, uint64_t seed) {
    at::manual_seed(seed);
    Case c{at::randn({rows, padded}) * 20, at::randint(0, vocab, {rows}, at::kLong), vocab};
    c.targets[0] = -1;
    c.targets[1] = 0;
    c.targets[2] = vocab - 1;
    c.logits[3].fill_(0.25);                 // all equal: p = 1 / vocab
    c.logits[4].mul_(1000);                  // saturated: z = +-cap
    c.logits[5].slice(0, vocab).fill_(1e4);  // huge padding columns must not count
    return c;
}

// softcap * tanh(logits[:, :vocab] / softcap) then cross-entropy, in float64 (the reference's math).
at::Tensor reference_loss(const at::Tensor& logits, const at::Tensor& targets, int64_t vocab, double cap) {
    at::Tensor z = cap * at::tanh(logits.slice(1, 0, vocab) / cap);
    return at::cross_entropy_loss(z, targets, {}, at::Reduction::None, -1);
}

}  // namespace

TEST(CpuKernels, CapabilityIsATensAndOneThisCpuRuns) {
    // ATen's choice, as l3lab's kernels name their instruction sets (ATen says DEFAULT, AVX2, AVX512, or
    // other names on other architectures, which l3lab runs as DEFAULT).
    const std::string aten = at::get_cpu_capability(), c = cpu_kernels_capability();
    EXPECT_EQ(c, aten == "AVX2" || aten == "AVX512" ? aten : std::string("DEFAULT"));
    if (c == "AVX512") {
        EXPECT_TRUE(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                    __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"));
    }
    if (c == "AVX2") {
        EXPECT_TRUE(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"));
    }
}

TEST(CpuKernels, SoftcapCrossEntropyRowsMatchFloat64ForEveryInstructionSet) {
    const double cap = 15.0;
    for (const auto& [rows, padded, vocab] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
             {64, 256, 250}, {16, 37, 37}, {12, 64, 7}, {8, 1024, 1000}}) {
        const Case c = make_case(rows, padded, vocab, 11 + vocab);
        at::Tensor x_ref = c.logits.to(at::kDouble).requires_grad_(true);
        at::Tensor loss_ref = reference_loss(x_ref, c.targets, vocab, cap);
        loss_ref.sum().backward();
        for (const Isa& isa : runnable_isas()) {
            SCOPED_TRACE(isa.name + " vocab " + std::to_string(vocab) + " padded " + std::to_string(padded));
            at::Tensor loss = at::full({rows}, -7.0f), grad = at::full({rows, padded}, -7.0f);
            cpu_kernels::SoftcapCeArgs args;
            args.logits = c.logits.data_ptr<float>();
            args.width = padded;
            args.vocab = vocab;
            args.softcap = static_cast<float>(cap);
            args.targets = c.targets.data_ptr<int64_t>();
            args.loss = loss.data_ptr<float>();
            args.grad = grad.data_ptr<float>();
            isa.rows(args, 0, rows);
            EXPECT_LE(relative_error(loss, loss_ref), 2e-6);
            EXPECT_LE(relative_error(grad, x_ref.grad()), 2e-6);
            EXPECT_EQ(loss[0].item<float>(), 0.0f);                                // ignored target
            EXPECT_EQ(grad[0].abs().max().item<float>(), 0.0f);
            if (padded > vocab) {  // padding columns
                EXPECT_EQ(grad.slice(1, vocab).abs().max().item<float>(), 0.0f);
            }
            // Without a gradient buffer the losses are the same, bit for bit.
            at::Tensor loss_only = at::full({rows}, -7.0f);
            args.loss = loss_only.data_ptr<float>();
            args.grad = nullptr;
            isa.rows(args, 0, rows);
            EXPECT_TRUE(at::equal(loss_only, loss));
            // scale_rows multiplies each row by its own factor.
            at::Tensor scale = at::rand({rows}), scaled = grad.clone();
            isa.scale(scaled.data_ptr<float>(), padded, scale.data_ptr<float>(), 0, rows);
            EXPECT_TRUE(at::allclose(scaled, grad * scale.unsqueeze(1), 1e-6, 0));
        }
    }
}

TEST(CpuKernels, SoftcapCrossEntropyAutogradMatchesTheUnfusedOpsAndRefusesASecondBackward) {
    const Case c = make_case(96, 256, 250, 3);
    const double cap = 15.0;
    at::Tensor weights = at::rand({96});
    at::Tensor x_ref = c.logits.clone().requires_grad_(true);
    at::Tensor loss_ref = reference_loss(x_ref, c.targets, c.vocab, cap);
    (loss_ref * weights).sum().backward();

    at::Tensor x = c.logits.clone().requires_grad_(true);
    at::Tensor loss = softcap_cross_entropy_cpu(x, c.targets, c.vocab, cap);
    EXPECT_EQ(loss.scalar_type(), at::kFloat);
    at::Tensor total = (loss * weights).sum();
    total.backward({}, /*retain_graph=*/true);
    EXPECT_LE(relative_error(loss, loss_ref), 2e-6);
    EXPECT_LE(relative_error(x.grad(), x_ref.grad()), 2e-6);
    EXPECT_THROW(total.backward(), c10::Error);  // the gradient was scaled in place

    {  // no gradient wanted: the same losses
        torch::NoGradGuard no_grad;
        EXPECT_TRUE(at::equal(softcap_cross_entropy_cpu(c.logits, c.targets, c.vocab, cap), loss.detach()));
    }
    at::Tensor bad = c.targets.clone();
    bad[7] = c.vocab;
    EXPECT_THROW(softcap_cross_entropy_cpu(c.logits, bad, c.vocab, cap), c10::Error);
}

TEST(CpuKernels, GptLossThroughTheFusedKernelMatchesTheUnfusedLogitsPath) {
    GPTOptions o;
    o.vocab_size = 300;  // padded to a multiple of 64 inside: padding columns in play
    o.n_layer = 2;
    o.n_head = 2;
    o.n_kv_head = 2;
    o.n_embd = 64;
    o.sequence_len = 32;
    o.window_pattern = "SL";
    at::manual_seed(0);
    GPT model(o);
    model->init_weights();
    {  // nanochat zero-initialises lm_head and the projections: random weights make every gradient count
        torch::NoGradGuard no_grad;
        for (auto& p : model->parameters()) p.add_(at::randn_like(p) * 0.1);
    }
    at::manual_seed(1);
    at::Tensor idx = at::randint(0, 300, {2, 32}, at::kLong), targets = at::randint(0, 300, {2, 32}, at::kLong);
    targets[0][3] = -1;
    at::Tensor loss = model->loss(idx, targets);
    loss.backward();
    std::vector<at::Tensor> fused;
    for (const auto& p : model->parameters()) fused.push_back(p.grad().clone()), p.mutable_grad().reset();

    // The path the fused kernel replaced: forward() (soft-capped float32 logits) + ATen's cross_entropy.
    at::Tensor logits = model->forward(idx);
    at::Tensor unfused = at::cross_entropy_loss(logits.view({-1, 300}), targets.reshape({-1}), {},
                                                at::Reduction::Mean, -1);
    unfused.backward();
    EXPECT_NEAR(loss.item<double>(), unfused.item<double>(), 1e-6 * unfused.item<double>());
    size_t i = 0;
    for (const auto& p : model->parameters()) {
        EXPECT_LE(relative_error(fused[i], p.grad()), 1e-5) << "parameter " << i;
        ++i;
    }
    {  // per-row losses (evaluation) as well
        torch::NoGradGuard no_grad;
        at::Tensor rows = model->loss(idx, targets, LossReduction::None);
        at::Tensor rows_ref = at::cross_entropy_loss(model->forward(idx).view({-1, 300}), targets.reshape({-1}), {},
                                                     at::Reduction::None, -1);
        EXPECT_LE(relative_error(rows, rows_ref), 1e-6);
    }
}

TEST(CpuKernels, RmsNormReluSquareAndRotaryMatchFloat64ForEveryInstructionSet) {
    // Widths that are not a multiple of any vector width, and ones that are.
    for (const int64_t dim : {7, 16, 40, 96}) {
        at::manual_seed(dim);
        const int64_t rows = 13;
        at::Tensor x = at::randn({rows, dim}) * 3, dy = at::randn({rows, dim});
        x[2].zero_();  // an all-zero row: rstd = 1 / sqrt(eps)
        at::Tensor x64 = x.to(at::kDouble).requires_grad_(true);
        const double eps = std::numeric_limits<float>::epsilon();
        at::Tensor y64 = x64 * at::rsqrt(x64.pow(2).mean(-1, true) + eps);
        y64.backward(dy.to(at::kDouble));
        at::Tensor xr = x.clone().requires_grad_(true), hr = (x.clone() - 0.5).requires_grad_(true);
        at::Tensor h64 = (x.to(at::kDouble) - 0.5).requires_grad_(true);
        at::Tensor r64 = at::relu(h64).square();
        r64.backward(dy.to(at::kDouble));

        const auto isas = runnable_isas();
        for (const std::string& name : {std::string("DEFAULT"), std::string("AVX2"), std::string("AVX512")}) {
            if (std::none_of(isas.begin(), isas.end(), [&](const Isa& i) { return i.name == name; })) continue;
            SCOPED_TRACE(name + " dim " + std::to_string(dim));
            const bool avx512 = name == "AVX512", avx2 = name == "AVX2";
            const auto rms = avx512 ? cpu_kernels::AVX512::rms_norm_rows
                             : avx2 ? cpu_kernels::AVX2::rms_norm_rows : cpu_kernels::DEFAULT::rms_norm_rows;
            const auto rms_back = avx512 ? cpu_kernels::AVX512::rms_norm_backward_rows
                                  : avx2 ? cpu_kernels::AVX2::rms_norm_backward_rows
                                         : cpu_kernels::DEFAULT::rms_norm_backward_rows;
            const auto relu2 = avx512 ? cpu_kernels::AVX512::relu_square
                               : avx2 ? cpu_kernels::AVX2::relu_square : cpu_kernels::DEFAULT::relu_square;
            const auto relu2_back = avx512 ? cpu_kernels::AVX512::relu_square_backward
                                    : avx2 ? cpu_kernels::AVX2::relu_square_backward
                                           : cpu_kernels::DEFAULT::relu_square_backward;
            at::Tensor y = at::empty_like(x), rstd = at::empty({rows}), dx = at::empty_like(x);
            rms(x.data_ptr<float>(), y.data_ptr<float>(), rstd.data_ptr<float>(), dim,
                static_cast<float>(eps), 0, rows);
            rms_back(x.data_ptr<float>(), dy.data_ptr<float>(), rstd.data_ptr<float>(), dx.data_ptr<float>(), dim, 0,
                     rows);
            EXPECT_LE(relative_error(y, y64), 1e-6);
            EXPECT_LE(relative_error(dx, x64.grad()), 1e-5);
            at::Tensor h = x - 0.5, r = at::empty_like(h), dh = at::empty_like(h);
            relu2(h.data_ptr<float>(), r.data_ptr<float>(), 0, h.numel());
            relu2_back(h.data_ptr<float>(), dy.data_ptr<float>(), dh.data_ptr<float>(), 0, h.numel());
            EXPECT_LE(relative_error(r, r64), 1e-6);
            EXPECT_LE(relative_error(dh, h64.grad()), 1e-6);
        }
        // The autograd functions give the same.
        at::Tensor y = rms_norm_cpu(xr), r = relu_square_cpu(hr);
        y.backward(dy);
        r.backward(dy);
        EXPECT_LE(relative_error(y, y64), 1e-6);
        EXPECT_LE(relative_error(xr.grad(), x64.grad()), 1e-5);
        EXPECT_LE(relative_error(r, r64), 1e-6);
        EXPECT_LE(relative_error(hr.grad(), h64.grad()), 1e-6);
    }
}

TEST(CpuKernels, RotaryMatchesTheUnfusedFormulaAndItsGradient) {
    const int64_t B = 2, T = 9, H = 3;
    for (const int64_t D : {6, 32, 40}) {
        SCOPED_TRACE("head dim " + std::to_string(D));
        at::manual_seed(D);
        at::Tensor x = at::randn({B, T, H, D}), dy = at::randn({B, T, H, D});
        at::Tensor angle = at::rand({1, T, 1, D / 2}) * 6;
        at::Tensor cos = angle.cos(), sin = angle.sin();
        at::Tensor x64 = x.to(at::kDouble).requires_grad_(true);
        at::Tensor c64 = cos.to(at::kDouble), s64 = sin.to(at::kDouble);
        at::Tensor x1 = x64.slice(3, 0, D / 2), x2 = x64.slice(3, D / 2);
        at::Tensor y64 = at::cat({x1 * c64 + x2 * s64, x1 * (-s64) + x2 * c64}, 3);
        y64.backward(dy.to(at::kDouble));
        at::Tensor xr = x.clone().requires_grad_(true);
        at::Tensor y = rotary_cpu(xr, cos, sin);
        y.backward(dy);
        EXPECT_LE(relative_error(y, y64), 1e-6);
        EXPECT_LE(relative_error(xr.grad(), x64.grad()), 1e-6);
    }
}

TEST(CpuKernels, AdamWStepIsTheEagerStepButForTheLastBitOfSqrt) {
    const int saved_threads = at::get_num_threads();
    at::set_num_threads(2);
    for (const int64_t n : {int64_t{4096}, int64_t{65536}, int64_t{98304}, int64_t{40}}) {
        SCOPED_TRACE("numel " + std::to_string(n));
        at::manual_seed(n);
        at::Tensor p = at::randn({n}), g = at::randn({n}), m = at::randn({n}) * 0.1, v = at::rand({n}) * 0.01;
        const float decay = 1.0f - 0.01f * 0.1f, omb1 = 0.2f, omb2 = 0.05f, bias2 = 0.0975f, eps = 1e-10f,
                    step_size = 0.01f / 0.36f;
        const bool applies = adamw_step_cpu_applies(p, g, m, v);
        EXPECT_EQ(applies, n != 40);  // 40 floats leave ATen a scalar remainder
        if (!applies) continue;
        // The eager step as MuonAdamW runs it (0-D float32 scalars, ATen's kernels).
        const at::Tensor p_before = p.clone();
        at::Tensor pe = p.clone(), me = m.clone(), ve = v.clone();
        const auto scalar = [](float x) { return at::scalar_tensor(x, at::kFloat); };
        pe.mul_(scalar(decay));
        me.lerp_(g, scalar(omb1));
        ve.lerp_(g.pow(2), scalar(omb2));
        at::Tensor denom = (ve / scalar(bias2)).sqrt_().add_(scalar(eps));
        pe.add_(me / denom, -step_size);
        adamw_step_cpu(p, g, m, v, {decay, omb1, omb2, bias2, eps, step_size});
        // The moments bit for bit. p: ATen's eager sqrt is MKL VML's, which differs from the IEEE square
        // root in the last bit for a few elements (17 of 4,096 here); the kernel takes the IEEE one. So p
        // equals, bit for bit, the eager formula with IEEE sqrt, spelled out per element below, and
        // differs from ATen's eager p in at most 2 % of the elements.
        EXPECT_TRUE(at::equal(m, me));
        EXPECT_TRUE(at::equal(v, ve));
        at::Tensor expected = at::empty_like(pe);
        const float *pm = me.data_ptr<float>(), *pv = ve.data_ptr<float>(), *p0 = p_before.data_ptr<float>();
        float* px = expected.data_ptr<float>();
        for (int64_t i = 0; i < n; ++i) {
            const float denom = std::sqrt(pv[i] / bias2) + eps;
            px[i] = std::fma(pm[i] / denom, -step_size, p0[i] * decay);
        }
        EXPECT_TRUE(at::equal(p, expected));
        EXPECT_LE((p != pe).sum().item<int64_t>(), n / 50) << "more than 2 % of the elements differ from ATen's";
    }
    at::set_num_threads(saved_threads);
}

// The kernels of one instruction set for the residual mixing and Muon's update, to run every one this CPU
// has (their ops round alike in every instruction set: no fused multiply-add).
struct MixIsa {
    std::string name;
    decltype(&cpu_kernels::DEFAULT::residual_mix) mix;
    decltype(&cpu_kernels::DEFAULT::residual_mix_backward) mix_backward;
    decltype(&cpu_kernels::DEFAULT::muon_update_rows) muon_update;
};

std::vector<MixIsa> runnable_mix_isas() {
    std::vector<MixIsa> isas{{"DEFAULT", cpu_kernels::DEFAULT::residual_mix, cpu_kernels::DEFAULT::residual_mix_backward,
                              cpu_kernels::DEFAULT::muon_update_rows}};
    const std::string top = cpu_kernels_capability();
    if (top == "AVX2" || top == "AVX512")
        isas.push_back({"AVX2", cpu_kernels::AVX2::residual_mix, cpu_kernels::AVX2::residual_mix_backward,
                        cpu_kernels::AVX2::muon_update_rows});
    if (top == "AVX512")
        isas.push_back({"AVX512", cpu_kernels::AVX512::residual_mix, cpu_kernels::AVX512::residual_mix_backward,
                        cpu_kernels::AVX512::muon_update_rows});
    return isas;
}

TEST(CpuKernels, ResidualMixIsTheEagerMixAndItsGradients) {
    for (const auto& shape : {std::vector<int64_t>{2, 64, 48}, std::vector<int64_t>{3, 7, 33}, std::vector<int64_t>{1, 1, 1},
                              std::vector<int64_t>{4, 256, 64}}) {
        SCOPED_TRACE("shape " + std::to_string(shape[0]) + "x" + std::to_string(shape[1]) + "x" + std::to_string(shape[2]));
        at::manual_seed(shape[1]);
        const at::Tensor x_data = at::randn(shape), x0_data = at::randn(shape), w = at::randn(shape);
        const at::Tensor lambdas = at::randn({3}) + 1, x0_lambdas = at::randn({3}) * 0.1;
        // Eager, as gpt.cpp wrote it, and fused; each with its own leaves.
        auto run = [&](bool fused, bool alias) {
            at::Tensor x = x_data.clone().requires_grad_(), x0 = alias ? x : x0_data.clone().requires_grad_();
            at::Tensor rl = lambdas.clone().requires_grad_(), xl = x0_lambdas.clone().requires_grad_();
            at::Tensor y = fused ? residual_mix_cpu(x, x0, rl[1], xl[1]) : rl[1] * x + xl[1] * x0;
            (y * w).sum().backward();
            return std::make_tuple(y.detach(), x.grad(), alias ? at::Tensor() : x0.grad(), rl.grad(), xl.grad());
        };
        for (bool alias : {false, true}) {
            SCOPED_TRACE(alias ? "x0 is x (block 0)" : "x0 apart");
            const auto [ye, gxe, gx0e, grle, gxle] = run(false, alias);
            const auto [yf, gxf, gx0f, grlf, gxlf] = run(true, alias);
            EXPECT_TRUE(at::equal(yf, ye));
            EXPECT_TRUE(at::equal(gxf, gxe));
            if (!alias) EXPECT_TRUE(at::equal(gx0f, gx0e));
            EXPECT_LT(relative_error(grlf, grle), 1e-5);  // sums taken in another order
            EXPECT_LT(relative_error(gxlf, gxle), 1e-5);
            EXPECT_EQ(grlf[0].item<float>(), 0.0f);
            EXPECT_EQ(gxlf[2].item<float>(), 0.0f);
        }
        // Every instruction set's kernels, bit for bit the same products, against the eager tensors.
        const float a = lambdas[1].item<float>(), b = x0_lambdas[1].item<float>();
        const at::Tensor y_eager = lambdas[1] * x_data + x0_lambdas[1] * x0_data;
        const int64_t n = x_data.numel();
        const double sum_x = (w.to(at::kDouble) * x_data.to(at::kDouble)).sum().item<double>();
        const double sum_x0 = (w.to(at::kDouble) * x0_data.to(at::kDouble)).sum().item<double>();
        for (const auto& isa : runnable_mix_isas()) {
            SCOPED_TRACE(isa.name);
            at::Tensor y = at::empty_like(x_data), dx = at::empty_like(x_data), dx0 = at::empty_like(x_data);
            isa.mix(x_data.const_data_ptr<float>(), x0_data.const_data_ptr<float>(), a, b, y.data_ptr<float>(), 0, n);
            EXPECT_TRUE(at::equal(y, y_eager));
            float sums[2] = {0, 0};
            isa.mix_backward(w.const_data_ptr<float>(), x_data.const_data_ptr<float>(), x0_data.const_data_ptr<float>(), a, b,
                             dx.data_ptr<float>(), dx0.data_ptr<float>(), sums, 0, n);
            EXPECT_TRUE(at::equal(dx, w * a));
            EXPECT_TRUE(at::equal(dx0, w * b));
            EXPECT_NEAR(sums[0], sum_x, 1e-5 * std::max(1.0, std::abs(sum_x)) + 1e-4);
            EXPECT_NEAR(sums[1], sum_x0, 1e-5 * std::max(1.0, std::abs(sum_x0)) + 1e-4);
        }
    }
}

TEST(CpuKernels, MuonTailsAreTheEagerOpsBitForBit) {
    const int saved_threads = at::get_num_threads();
    at::set_num_threads(2);
    const auto scalar = [](float x) { return at::scalar_tensor(x, at::kFloat); };
    struct Stack { int64_t k, rows, cols; };
    for (const Stack s : {Stack{4, 32, 32}, Stack{2, 128, 32}, Stack{2, 32, 128}, Stack{3, 3, 5}, Stack{6, 96, 384}}) {
        SCOPED_TRACE(std::to_string(s.k) + " x " + std::to_string(s.rows) + " x " + std::to_string(s.cols));
        at::manual_seed(s.rows * 1000 + s.cols);
        // Nesterov momentum: the two lerps of the eager step, with the 0-D float32 momentum it uses.
        at::Tensor buf = at::randn({s.k, s.rows, s.cols}), g = at::randn({s.k, s.rows, s.cols});
        const bool whole = s.k * s.rows * s.cols % 32 == 0;
        EXPECT_EQ(nesterov_momentum_cpu_applies(buf, g), whole) << "a scalar tail rounds ATen's lerp otherwise";
        if (whole) {
            for (const float momentum : {0.85f, 0.95f, 0.3f}) {
                at::Tensor be = buf.clone(), ge = g.clone();
                const at::Tensor m = scalar(momentum);
                be.lerp_(ge, at::rsub(m, 1));
                ge.lerp_(be, m);
                at::Tensor bf = buf.clone(), gf = g.clone();
                nesterov_momentum_cpu(bf, gf, momentum);
                EXPECT_TRUE(at::equal(bf, be)) << momentum;
                EXPECT_TRUE(at::equal(gf, ge)) << momentum;
            }
        }
        // NorMuon's scale and the cautious update: scale per row (tall or square) or per column (wide).
        const bool tall = s.rows >= s.cols;
        at::Tensor p = at::randn({s.k, s.rows, s.cols});
        p.view({-1}).slice(0, 0, 7).zero_();  // g * p == 0 counts as agreeing
        g.view({-1}).slice(0, 5, 9).zero_();
        const at::Tensor scale = at::rand(tall ? at::IntArrayRef{s.k, s.rows, 1} : at::IntArrayRef{s.k, 1, s.cols}) + 0.5;
        const at::Tensor lr = scalar(0.02f * 1.4142135f), wd = scalar(0.9f);
        at::Tensor pe = p.clone(), ge = g.clone();
        ge.mul_(scale);
        at::Tensor t = ge * pe;
        const at::Tensor mask = t.ge(0);
        at::mul_out(t, pe, lr * wd).mul_(mask).add_(ge.mul_(lr));
        pe.sub_(t);
        ASSERT_TRUE(muon_update_cpu_applies(p, g, scale));
        at::Tensor pf = p.clone();
        muon_update_cpu(pf, g, scale, lr.item<float>(), (lr * wd).item<float>());
        EXPECT_TRUE(at::equal(pf, pe));
        EXPECT_GT((pf != p).sum().item<int64_t>(), p.numel() / 2) << "the update must move the parameters";
        for (const auto& isa : runnable_mix_isas()) {
            SCOPED_TRACE(isa.name);
            at::Tensor pi = p.clone();
            cpu_kernels::MuonUpdateArgs a;
            a.p = pi.data_ptr<float>();
            a.g = g.const_data_ptr<float>();
            a.scale = scale.const_data_ptr<float>();
            a.rows = s.rows;
            a.cols = s.cols;
            a.scale_per_row = tall;
            a.lr = lr.item<float>();
            a.lr_wd = (lr * wd).item<float>();
            isa.muon_update(a, 0, s.k * s.rows);
            EXPECT_TRUE(at::equal(pi, pe));
        }
        EXPECT_FALSE(muon_update_cpu_applies(p, g, at::rand({s.k, s.rows + 1, 1})));
        EXPECT_FALSE(muon_update_cpu_applies(p, g.to(at::kDouble), scale));
    }
    at::set_num_threads(saved_threads);
}
