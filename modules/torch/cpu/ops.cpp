// The autograd functions around the fused CPU kernels (modules/torch/cpu.h) and the choice of their
// instruction set.
#include <ATen/Parallel.h>
#include <ATen/Context.h>

#include <algorithm>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include "modules/torch/cpu.h"
#include "modules/torch/cpu/kernels.h"

namespace l3lab::modules {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// ATen's own choice for this CPU (its cpuinfo check, lowered by ATEN_CPU_CAPABILITY), made once.
const std::string& capability() {
    static const std::string chosen = [] {
        const std::string c = at::get_cpu_capability();
        return c == "AVX512" || c == "AVX2" ? c : std::string("DEFAULT");
    }();
    return chosen;
}

// One kernel for this CPU's instruction set: pick(AVX512 version, AVX2 version, DEFAULT version).
template <typename Fn>
Fn pick(Fn avx512, Fn avx2, Fn fallback) {
    const std::string& c = capability();
    return c == "AVX512" ? avx512 : c == "AVX2" ? avx2 : fallback;
}
#define L3LAB_PICK(name) pick(cpu_kernels::AVX512::name, cpu_kernels::AVX2::name, cpu_kernels::DEFAULT::name)

class SoftcapCrossEntropyCpu : public torch::autograd::Function<SoftcapCrossEntropyCpu> {
public:
    static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits_in, const at::Tensor& targets_in,
                              int64_t vocab, double softcap) {
        TORCH_CHECK(logits_in.dim() == 2 && logits_in.scalar_type() == at::kFloat && logits_in.device().is_cpu(),
                    "soft-capped cross-entropy (CPU): logits must be float32 [rows, vocab] on the CPU");
        TORCH_CHECK(targets_in.dim() == 1 && targets_in.size(0) == logits_in.size(0) &&
                        targets_in.scalar_type() == at::kLong && targets_in.device().is_cpu(),
                    "soft-capped cross-entropy (CPU): targets must be int64 [rows] on the CPU");
        TORCH_CHECK(vocab > 0 && vocab <= logits_in.size(1), "soft-capped cross-entropy: vocab ", vocab,
                    " does not fit logits of width ", logits_in.size(1));
        TORCH_CHECK(softcap > 0, "soft-capped cross-entropy needs softcap > 0");
        const at::Tensor logits = logits_in.contiguous(), targets = targets_in.contiguous();
        const int64_t rows = logits.size(0);
        if (rows > 0) {
            const auto [lo, hi] = at::aminmax(targets);
            TORCH_CHECK(lo.item<int64_t>() >= -1 && hi.item<int64_t>() < vocab,
                        "soft-capped cross-entropy: targets must lie in [-1, ", vocab, ")");
        }
        at::Tensor loss = at::empty({rows}, logits.options());
        at::Tensor grad;
        if (ctx && logits_in.requires_grad()) grad = at::empty_like(logits);
        cpu_kernels::SoftcapCeArgs args;
        args.logits = logits.data_ptr<float>();
        args.width = logits.size(1);
        args.vocab = vocab;
        args.softcap = static_cast<float>(softcap);
        args.targets = targets.data_ptr<int64_t>();
        args.loss = loss.data_ptr<float>();
        args.grad = grad.defined() ? grad.data_ptr<float>() : nullptr;
        const auto fn = L3LAB_PICK(softcap_ce_rows);
        // A few rows a task: each row is vocab floats of work, rows are independent.
        at::parallel_for(0, rows, 4, [&](int64_t begin, int64_t end) { fn(args, begin, end); });
        if (grad.defined()) ctx->save_for_backward({grad});
        return loss;
    }

    static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
        TORCH_CHECK(!ctx->saved_data.count("used"),
                    "soft-capped cross-entropy (CPU): backward ran twice; its gradient is scaled in place "
                    "(no retain_graph through this loss)");
        ctx->saved_data["used"] = true;
        at::Tensor grad = ctx->get_saved_variables()[0];
        const at::Tensor scale = grad_outputs[0].to(at::kFloat).contiguous();
        const auto fn = L3LAB_PICK(scale_rows);
        float* g = grad.data_ptr<float>();
        const float* s = scale.data_ptr<float>();
        const int64_t width = grad.size(1);
        at::parallel_for(0, grad.size(0), 4, [&](int64_t begin, int64_t end) { fn(g, width, s, begin, end); });
        return {grad, at::Tensor(), at::Tensor(), at::Tensor()};
    }
};

void check_float_cpu(const at::Tensor& t, const char* what) {
    TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, what, ": needs a float32 CPU tensor, got ",
                t.scalar_type(), " on ", t.device());
}

// Rows of `width` floats per parallel task: about 16K floats of work each.
int64_t row_grain(int64_t width) { return std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(width, 1)); }

class RmsNormCpu : public torch::autograd::Function<RmsNormCpu> {
public:
    static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in) {
        check_float_cpu(x_in, "rms_norm_cpu");
        const at::Tensor x = x_in.contiguous();
        const int64_t dim = x.size(-1), rows = dim ? x.numel() / dim : 0;
        at::Tensor y = at::empty_like(x), rstd = at::empty({rows}, x.options());
        const float *px = x.const_data_ptr<float>();
        float *py = y.data_ptr<float>(), *pr = rstd.data_ptr<float>();
        const auto fn = L3LAB_PICK(rms_norm_rows);
        const float eps = std::numeric_limits<float>::epsilon();
        at::parallel_for(0, rows, row_grain(dim), [&](int64_t b, int64_t e) { fn(px, py, pr, dim, eps, b, e); });
        ctx->save_for_backward({x, rstd});
        return y;
    }
    static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
        const auto saved = ctx->get_saved_variables();
        const at::Tensor &x = saved[0], &rstd = saved[1];
        const at::Tensor dy = grad_outputs[0].contiguous();
        at::Tensor dx = at::empty_like(x);
        const int64_t dim = x.size(-1), rows = rstd.numel();
        const float *px = x.const_data_ptr<float>(), *pdy = dy.const_data_ptr<float>(), *pr = rstd.const_data_ptr<float>();
        float* pdx = dx.data_ptr<float>();
        const auto fn = L3LAB_PICK(rms_norm_backward_rows);
        at::parallel_for(0, rows, row_grain(dim), [&](int64_t b, int64_t e) { fn(px, pdy, pr, pdx, dim, b, e); });
        return {dx};
    }
};

class ReluSquareCpu : public torch::autograd::Function<ReluSquareCpu> {
public:
    static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in) {
        check_float_cpu(x_in, "relu_square_cpu");
        const at::Tensor x = x_in.contiguous();
        at::Tensor y = at::empty_like(x);
        const float* px = x.const_data_ptr<float>();
        float* py = y.data_ptr<float>();
        const auto fn = L3LAB_PICK(relu_square);
        at::parallel_for(0, x.numel(), 1 << 15, [&](int64_t b, int64_t e) { fn(px, py, b, e); });
        ctx->save_for_backward({x});
        return y;
    }
    static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
        const at::Tensor x = ctx->get_saved_variables()[0];
        const at::Tensor dy = grad_outputs[0].contiguous();
        at::Tensor dx = at::empty_like(x);
        const float *px = x.const_data_ptr<float>(), *pdy = dy.const_data_ptr<float>();
        float* pdx = dx.data_ptr<float>();
        const auto fn = L3LAB_PICK(relu_square_backward);
        at::parallel_for(0, x.numel(), 1 << 15, [&](int64_t b, int64_t e) { fn(px, pdy, pdx, b, e); });
        return {dx};
    }
};

at::Tensor rotate(const at::Tensor& x_in, const at::Tensor& cos, const at::Tensor& sin, bool inverse) {
    const at::Tensor x = x_in.contiguous();
    at::Tensor y = at::empty_like(x);
    const int64_t T = x.size(1), H = x.size(2), D = x.size(3);
    const float *px = x.const_data_ptr<float>(), *pc = cos.const_data_ptr<float>(), *ps = sin.const_data_ptr<float>();
    float* py = y.data_ptr<float>();
    const auto fn = L3LAB_PICK(rotary_rows);
    at::parallel_for(0, x.numel() / std::max<int64_t>(D, 1), row_grain(D),
                     [&](int64_t b, int64_t e) { fn(px, pc, ps, py, T, H, D, inverse, b, e); });
    return y;
}

class RotaryCpu : public torch::autograd::Function<RotaryCpu> {
public:
    static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos_in,
                              const at::Tensor& sin_in) {
        check_float_cpu(x, "rotary_cpu: x");
        TORCH_CHECK(x.dim() == 4 && x.size(3) % 2 == 0, "rotary_cpu: x must be [B, T, H, D] with D even");
        TORCH_CHECK(cos_in.numel() == x.size(1) * x.size(3) / 2 && sin_in.sizes() == cos_in.sizes(),
                    "rotary_cpu: cos and sin must hold [T, D/2] values");
        const at::Tensor cos = cos_in.to(at::kFloat).contiguous(), sin = sin_in.to(at::kFloat).contiguous();
        ctx->save_for_backward({cos, sin});
        return rotate(x, cos, sin, false);
    }
    static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
        const auto saved = ctx->get_saved_variables();
        return {rotate(grad_outputs[0], saved[0], saved[1], true), at::Tensor(), at::Tensor()};
    }
};

class ResidualMixCpu : public torch::autograd::Function<ResidualMixCpu> {
public:
    static constexpr int64_t kBlock = 1 << 14;  // elements per partial sum of the lambdas' gradients

    static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& x0_in,
                              const at::Tensor& a, const at::Tensor& b) {
        check_float_cpu(x_in, "residual_mix_cpu: x");
        check_float_cpu(x0_in, "residual_mix_cpu: x0");
        TORCH_CHECK(x_in.sizes() == x0_in.sizes(), "residual_mix_cpu: x and x0 must have one shape");
        TORCH_CHECK(a.numel() == 1 && b.numel() == 1, "residual_mix_cpu: the lambdas must be single values");
        const at::Tensor x = x_in.contiguous(), x0 = x0_in.contiguous();
        const float va = a.item<float>(), vb = b.item<float>();
        at::Tensor y = at::empty_like(x);
        const float *px = x.const_data_ptr<float>(), *px0 = x0.const_data_ptr<float>();
        float* py = y.data_ptr<float>();
        const auto fn = L3LAB_PICK(residual_mix);
        at::parallel_for(0, x.numel(), 1 << 15, [&](int64_t s, int64_t e) { fn(px, px0, va, vb, py, s, e); });
        ctx->save_for_backward({x, x0, a, b});
        return y;
    }

    static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
        const auto saved = ctx->get_saved_variables();
        const at::Tensor &x = saved[0], &x0 = saved[1], &a = saved[2], &b = saved[3];
        const at::Tensor dy = grad_outputs[0].contiguous();
        at::Tensor dx = at::empty_like(x), dx0 = at::empty_like(x0);
        const int64_t n = x.numel(), blocks = (n + kBlock - 1) / kBlock;
        std::vector<float> partial(static_cast<size_t>(2 * blocks), 0.0f);
        const float *pdy = dy.const_data_ptr<float>(), *px = x.const_data_ptr<float>(), *px0 = x0.const_data_ptr<float>();
        float *pdx = dx.data_ptr<float>(), *pdx0 = dx0.data_ptr<float>();
        const float va = a.item<float>(), vb = b.item<float>();
        const auto fn = L3LAB_PICK(residual_mix_backward);
        at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
            for (int64_t k = first; k < last; ++k)
                fn(pdy, px, px0, va, vb, pdx, pdx0, partial.data() + 2 * k, k * kBlock, std::min(n, (k + 1) * kBlock));
        });
        double sum_x = 0, sum_x0 = 0;  // the blocks in order: independent of the threads
        for (int64_t k = 0; k < blocks; ++k) {
            sum_x += partial[static_cast<size_t>(2 * k)];
            sum_x0 += partial[static_cast<size_t>(2 * k + 1)];
        }
        return {dx, dx0, at::full_like(a, sum_x), at::full_like(b, sum_x0)};
    }
};

}  // namespace

at::Tensor residual_mix_cpu(const at::Tensor& x, const at::Tensor& x0, const at::Tensor& a, const at::Tensor& b) {
    return ResidualMixCpu::apply(x, x0, a, b);
}

at::Tensor rms_norm_cpu(const at::Tensor& x) { return RmsNormCpu::apply(x); }
at::Tensor relu_square_cpu(const at::Tensor& x) { return ReluSquareCpu::apply(x); }
at::Tensor rotary_cpu(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
    return RotaryCpu::apply(x, cos, sin);
}

// Rounding as the eager step needs every element computed as ATen's vectorised loops compute it: ATen
// runs a contiguous elementwise op in pairs of vectors (32 floats with AVX-512, 16 with AVX2) and finishes
// each thread's share with scalar code. It splits n >= 32,768 elements (its grain) into
// k = min(threads, ceil(n / 32,768)) shares of ceil(n / k). When n and that share are whole multiples of
// 32, no share has a remainder, and the fused kernel's vectors are ATen's.
namespace {

constexpr int64_t kWholeBlock = 32;  // floats: ATen's pair of AVX-512 vectors, two pairs of AVX2 ones

bool float_cpu_contiguous(std::initializer_list<const at::Tensor*> tensors, int64_t numel) {
    for (const at::Tensor* t : tensors)
        if (!t->device().is_cpu() || t->scalar_type() != at::kFloat || !t->is_contiguous() || t->numel() != numel)
            return false;
    return true;
}

bool aten_runs_whole_vectors(int64_t n) {
    constexpr int64_t kGrain = 32768;
    if (n == 0 || n % kWholeBlock != 0) return false;
    const int64_t threads = at::get_num_threads();
    const int64_t shares = n < kGrain || threads == 1 ? 1 : std::min<int64_t>(threads, (n + kGrain - 1) / kGrain);
    return ((n + shares - 1) / shares) % kWholeBlock == 0;
}

// fn(begin, end) over [0, n) in shares of whole 32-float blocks.
template <typename F>
void over_whole_blocks(int64_t n, const F& fn) {
    at::parallel_for(0, n / kWholeBlock, 1 << 10, [&](int64_t b, int64_t e) { fn(b * kWholeBlock, e * kWholeBlock); });
}

}  // namespace

bool adamw_step_cpu_applies(const at::Tensor& p, const at::Tensor& grad, const at::Tensor& exp_avg,
                            const at::Tensor& exp_avg_sq) {
    return float_cpu_contiguous({&p, &grad, &exp_avg, &exp_avg_sq}, p.numel()) && aten_runs_whole_vectors(p.numel());
}

bool nesterov_momentum_cpu_applies(const at::Tensor& buf, const at::Tensor& g) {
    return float_cpu_contiguous({&buf, &g}, buf.numel()) && aten_runs_whole_vectors(buf.numel());
}

void nesterov_momentum_cpu(at::Tensor& buf, at::Tensor& g, float momentum) {
    TORCH_CHECK(nesterov_momentum_cpu_applies(buf, g), "nesterov_momentum_cpu: needs float32 contiguous CPU tensors of one size");
    float *pb = buf.data_ptr<float>(), *pg = g.data_ptr<float>();
    const auto fn = L3LAB_PICK(nesterov_momentum);
    over_whole_blocks(buf.numel(), [&](int64_t b, int64_t e) { fn(pb, pg, momentum, b, e); });
}

bool muon_update_cpu_applies(const at::Tensor& p, const at::Tensor& g, const at::Tensor& scale) {
    if (p.dim() != 3 || !float_cpu_contiguous({&p, &g}, p.numel()) || !float_cpu_contiguous({&scale}, scale.numel()))
        return false;
    const int64_t k = p.size(0), rows = p.size(1), cols = p.size(2);
    return scale.dim() == 3 && scale.size(0) == k &&
           ((scale.size(1) == rows && scale.size(2) == 1) || (scale.size(1) == 1 && scale.size(2) == cols));
}

void muon_update_cpu(at::Tensor& p, const at::Tensor& g, const at::Tensor& scale, float lr, float lr_wd) {
    TORCH_CHECK(muon_update_cpu_applies(p, g, scale),
                "muon_update_cpu: needs float32 contiguous CPU stacks [k, rows, cols] and a scale [k, rows, 1] or [k, 1, cols]");
    cpu_kernels::MuonUpdateArgs a;
    a.p = p.data_ptr<float>();
    a.g = g.const_data_ptr<float>();
    a.scale = scale.const_data_ptr<float>();
    a.rows = p.size(1);
    a.cols = p.size(2);
    a.scale_per_row = scale.size(1) == a.rows && scale.size(2) == 1;
    a.lr = lr;
    a.lr_wd = lr_wd;
    const auto fn = L3LAB_PICK(muon_update_rows);
    at::parallel_for(0, p.size(0) * a.rows, row_grain(a.cols), [&](int64_t b, int64_t e) { fn(a, b, e); });
}

void adamw_step_cpu(at::Tensor& p, const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
                    const AdamWStepScalars& s) {
    TORCH_CHECK(adamw_step_cpu_applies(p, grad, exp_avg, exp_avg_sq),
                "adamw_step_cpu: needs float32 contiguous CPU tensors of one size");
    cpu_kernels::AdamWArgs a;
    a.p = p.data_ptr<float>();
    a.grad = grad.const_data_ptr<float>();
    a.exp_avg = exp_avg.data_ptr<float>();
    a.exp_avg_sq = exp_avg_sq.data_ptr<float>();
    a.decay = s.decay;
    a.one_minus_beta1 = s.one_minus_beta1;
    a.one_minus_beta2 = s.one_minus_beta2;
    a.bias2 = s.bias2;
    a.eps = s.eps;
    a.step_size = s.step_size;
    const auto fn = L3LAB_PICK(adamw_step);
    over_whole_blocks(p.numel(), [&](int64_t b, int64_t e) { fn(a, b, e); });  // the kernel runs whole vectors only
}

std::string cpu_kernels_capability() { return capability(); }

at::Tensor softcap_cross_entropy_cpu(const at::Tensor& logits, const at::Tensor& targets, int64_t vocab,
                                     double softcap) {
    return SoftcapCrossEntropyCpu::apply(logits, targets, vocab, softcap);
}

}  // namespace l3lab::modules
