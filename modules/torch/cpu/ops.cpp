// The autograd functions around the fused CPU kernels (modules/torch/cpu.h) and the choice of their
// instruction set.
#include <ATen/Parallel.h>
#include <ATen/Context.h>

#include <algorithm>
#include <limits>
#include <string>

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

}  // namespace

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
bool adamw_step_cpu_applies(const at::Tensor& p, const at::Tensor& grad, const at::Tensor& exp_avg,
                            const at::Tensor& exp_avg_sq) {
    for (const at::Tensor* t : {&p, &grad, &exp_avg, &exp_avg_sq})
        if (!t->device().is_cpu() || t->scalar_type() != at::kFloat || !t->is_contiguous() ||
            t->numel() != p.numel())
            return false;
    constexpr int64_t kGrain = 32768, kBlock = 32;
    const int64_t n = p.numel();
    if (n == 0 || n % kBlock != 0) return false;
    const int64_t threads = at::get_num_threads();
    const int64_t shares = n < kGrain || threads == 1 ? 1 : std::min<int64_t>(threads, (n + kGrain - 1) / kGrain);
    return ((n + shares - 1) / shares) % kBlock == 0;
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
    // Shares of whole 32-float blocks (the kernel runs whole vectors only).
    at::parallel_for(0, p.numel() / 32, 1 << 10, [&](int64_t b, int64_t e) { fn(a, b * 32, e * 32); });
}

std::string cpu_kernels_capability() { return capability(); }

at::Tensor softcap_cross_entropy_cpu(const at::Tensor& logits, const at::Tensor& targets, int64_t vocab,
                                     double softcap) {
    return SoftcapCrossEntropyCpu::apply(logits, targets, vocab, softcap);
}

}  // namespace l3lab::modules
