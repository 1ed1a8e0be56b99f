// The autograd functions around the fused CPU kernels (modules/torch/cpu.h) and the choice of their
// instruction set.
#include <ATen/Parallel.h>
#include <ATen/Context.h>

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
        const auto fn = pick(cpu_kernels::AVX512::softcap_ce_rows, cpu_kernels::AVX2::softcap_ce_rows,
                             cpu_kernels::DEFAULT::softcap_ce_rows);
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
        const auto fn = pick(cpu_kernels::AVX512::scale_rows, cpu_kernels::AVX2::scale_rows,
                             cpu_kernels::DEFAULT::scale_rows);
        float* g = grad.data_ptr<float>();
        const float* s = scale.data_ptr<float>();
        const int64_t width = grad.size(1);
        at::parallel_for(0, grad.size(0), 4, [&](int64_t begin, int64_t end) { fn(g, width, s, begin, end); });
        return {grad, at::Tensor(), at::Tensor(), at::Tensor()};
    }
};

}  // namespace

std::string cpu_kernels_capability() { return capability(); }

at::Tensor softcap_cross_entropy_cpu(const at::Tensor& logits, const at::Tensor& targets, int64_t vocab,
                                     double softcap) {
    return SoftcapCrossEntropyCpu::apply(logits, targets, vocab, softcap);
}

}  // namespace l3lab::modules
