// modules/torch/cuda.h with l3lab's CUDA kernels: runtime queries, the reference's precision settings,
// and the kernels of cuda/*.cu as autograd functions. No host-device synchronisation happens in the
// forward or backward of either function (the sort and its segments stay on the device; the scratch
// and outputs are sized from host-known shapes).
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/core/AllocatorConfig.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstdlib>

#include "modules/torch/cuda.h"
#include "modules/torch/cuda/kernels.h"
#include "modules/torch/l3_segment.h"

namespace l3lab::modules {

namespace kernels = l3lab::cuda_kernels;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

bool cuda_kernels_built() { return true; }

std::string cuda_device_name(int device) {
    cudaDeviceProp properties{};
    if (cudaGetDeviceProperties(&properties, device) != cudaSuccess) {
        (void)cudaGetLastError();
        return "cuda";
    }
    return properties.name;
}

void configure_cuda_training() {
    // base_train.py sets PYTORCH_ALLOC_CONF=expandable_segments:True before importing torch.
    if (!std::getenv("PYTORCH_ALLOC_CONF") && !std::getenv("PYTORCH_CUDA_ALLOC_CONF"))
        c10::CachingAllocator::setAllocatorSettings("expandable_segments:True");
    // common.py's compute_init: torch.set_float32_matmul_precision("high"), i.e. TF32 float32 matmuls.
    at::globalContext().setFloat32MatmulPrecision("high");
    at::globalContext().setAllowTF32CuDNN(true);
}

void cuda_synchronize() { c10::cuda::device_synchronize(); }

int64_t cuda_peak_memory_bytes() {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(c10::cuda::current_device());
    return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak;
}

void cuda_reset_peak_memory() { c10::cuda::CUDACachingAllocator::resetPeakStats(c10::cuda::current_device()); }

void cuda_set_sync_errors(bool enabled) {
    c10::cuda::warning_state().set_sync_debug_mode(enabled ? c10::cuda::SyncDebugMode::L_ERROR
                                                           : c10::cuda::SyncDebugMode::L_DISABLED);
}

namespace {

kernels::DType kernel_dtype(const at::Tensor& t, const char* what) {
    if (t.scalar_type() == at::kFloat) return kernels::DType::Float32;
    if (t.scalar_type() == at::kBFloat16) return kernels::DType::BFloat16;
    TORCH_CHECK(false, what, " must be float32 or bfloat16 on CUDA, got ", t.scalar_type());
}

void check_launch(const char* error, const char* what) { TORCH_CHECK(error == nullptr, what, ": ", error); }

void* current_stream(const at::Tensor& t) { return c10::cuda::getCurrentCUDAStream(t.device().index()).stream(); }

// ---------------------------------------------------------------------------------------------
// L3 segment attention

struct L3Inputs {
    at::Tensor q, keys, values, ids, order, sorted_ids, bounds;
    bool tied = false;
    int64_t max_rows = 0;

    kernels::L3Args args() const {
        kernels::L3Args a;
        a.q = q.data_ptr();
        a.keys = keys.data_ptr();
        a.values = values.data_ptr();
        a.q_type = kernel_dtype(q, "L3: q");
        a.table_type = kernel_dtype(keys, "L3: the key table");
        a.tied = tied;
        a.ids = ids.data_ptr<int64_t>();
        a.order = order.data_ptr<int64_t>();
        a.sorted_ids = sorted_ids.data_ptr<int64_t>();
        a.bounds = bounds.data_ptr<int64_t>();
        a.N = q.size(0);
        a.C = q.size(1);
        a.D = values.size(1);
        a.V = bounds.size(0) - 1;
        a.n_emb = keys.size(0);
        a.max_rows = max_rows;
        return a;
    }
};

void check_l3_inputs(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values, const at::Tensor& ids,
                     const at::Tensor& bounds) {
    check_segment_shapes(q, keys, values, ids, bounds);
    for (const at::Tensor* t : {&keys, &values, &ids, &bounds})
        TORCH_CHECK(t->device() == q.device(), "L3: every input must be on ", q.device(), ", one is on ", t->device());
    TORCH_CHECK(keys.scalar_type() == values.scalar_type(), "L3: keys and values must have the same dtype");
    TORCH_CHECK(q.size(1) <= kernels::l3_max_width() && values.size(1) <= kernels::l3_max_width(),
                "L3 on CUDA takes widths up to ", kernels::l3_max_width(), ", got ", q.size(1), " and ", values.size(1));
}

class SegmentAttentionCuda : public torch::autograd::Function<SegmentAttentionCuda> {
public:
    static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q_in, const at::Tensor& keys_in,
                              const at::Tensor& values_in, const at::Tensor& ids_in, const at::Tensor& bounds_in,
                              int64_t max_rows) {
        check_l3_inputs(q_in, keys_in, values_in, ids_in, bounds_in);
        const c10::cuda::CUDAGuard guard(q_in.device());
        L3Inputs in;
        in.tied = keys_in.is_same(values_in);
        in.q = q_in.contiguous();
        in.keys = keys_in.contiguous();
        in.values = in.tied ? in.keys : values_in.contiguous();
        in.ids = ids_in.contiguous();
        in.bounds = bounds_in.contiguous();
        if (max_rows < 0)  // not given: one host sync
            max_rows = (in.bounds.slice(0, 1) - in.bounds.slice(0, 0, -1)).max().item<int64_t>();
        in.max_rows = std::max<int64_t>(max_rows, 0);
        std::tie(in.sorted_ids, in.order) = at::sort(in.ids);
        at::Tensor out = at::empty({in.q.size(0), in.values.size(1)}, in.q.options());
        at::Tensor lse = at::empty({in.q.size(0)}, in.q.options().dtype(at::kFloat));
        check_launch(kernels::l3_forward(in.args(), out.data_ptr(), lse.data_ptr<float>(), current_stream(in.q)),
                     "L3 forward (CUDA)");
        ctx->save_for_backward({in.q, in.keys, in.values, in.ids, in.order, in.sorted_ids, in.bounds, out, lse});
        ctx->saved_data["tied"] = in.tied;
        ctx->saved_data["max_rows"] = in.max_rows;
        return out;
    }

    static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
        const auto saved = ctx->get_saved_variables();
        L3Inputs in;
        in.q = saved[0];
        in.keys = saved[1];
        in.values = saved[2];
        in.ids = saved[3];
        in.order = saved[4];
        in.sorted_ids = saved[5];
        in.bounds = saved[6];
        const at::Tensor& out = saved[7];
        const at::Tensor& lse = saved[8];
        in.tied = ctx->saved_data["tied"].toBool();
        in.max_rows = ctx->saved_data["max_rows"].toInt();
        const c10::cuda::CUDAGuard guard(in.q.device());
        at::Tensor grad_out = grad_outputs[0].to(in.q.scalar_type()).contiguous();
        const int64_t N = in.q.size(0);
        at::Tensor scratch = at::empty({2 * N * std::max<int64_t>(in.max_rows, 1)}, in.q.options().dtype(at::kFloat));
        at::Tensor grad_q = at::empty_like(in.q), grad_keys = at::empty_like(in.keys);
        at::Tensor grad_values = in.tied ? at::Tensor() : at::empty_like(in.values);
        check_launch(kernels::l3_backward(in.args(), out.data_ptr(), lse.data_ptr<float>(), grad_out.data_ptr(),
                                          grad_q.data_ptr(), grad_keys.data_ptr(),
                                          in.tied ? nullptr : grad_values.data_ptr(), scratch.data_ptr<float>(),
                                          current_stream(in.q)),
                     "L3 backward (CUDA)");
        return {grad_q, grad_keys, grad_values, at::Tensor(), at::Tensor(), at::Tensor()};
    }
};

// ---------------------------------------------------------------------------------------------
// soft-capped cross-entropy

class SoftcapCrossEntropyCuda : public torch::autograd::Function<SoftcapCrossEntropyCuda> {
public:
    static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits_in, const at::Tensor& targets_in,
                              int64_t vocab, double softcap) {
        TORCH_CHECK(logits_in.dim() == 2, "soft-capped cross-entropy: logits must be [rows, vocab]");
        TORCH_CHECK(targets_in.dim() == 1 && targets_in.size(0) == logits_in.size(0) &&
                        targets_in.scalar_type() == at::kLong && targets_in.device() == logits_in.device(),
                    "soft-capped cross-entropy: targets must be int64 [rows] on the logits' device");
        TORCH_CHECK(vocab > 0 && vocab <= logits_in.size(1), "soft-capped cross-entropy: vocab ", vocab,
                    " does not fit logits of width ", logits_in.size(1));
        TORCH_CHECK(softcap > 0, "soft-capped cross-entropy needs softcap > 0");
        const c10::cuda::CUDAGuard guard(logits_in.device());
        at::Tensor logits = logits_in.contiguous(), targets = targets_in.contiguous();
        const auto type = kernel_dtype(logits, "soft-capped cross-entropy: logits");
        at::Tensor loss = at::empty({logits.size(0)}, logits.options().dtype(at::kFloat));
        at::Tensor lse = at::empty_like(loss);
        check_launch(kernels::softcap_ce_forward(logits.data_ptr(), type, logits.size(0), logits.size(1), vocab,
                                                 static_cast<float>(softcap), targets.data_ptr<int64_t>(),
                                                 loss.data_ptr<float>(), lse.data_ptr<float>(), current_stream(logits)),
                     "soft-capped cross-entropy forward (CUDA)");
        ctx->save_for_backward({logits, targets, lse});
        ctx->saved_data["vocab"] = vocab;
        ctx->saved_data["softcap"] = softcap;
        return loss;
    }

    static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
        const auto saved = ctx->get_saved_variables();
        const at::Tensor &logits = saved[0], &targets = saved[1], &lse = saved[2];
        const c10::cuda::CUDAGuard guard(logits.device());
        at::Tensor grad_loss = grad_outputs[0].to(at::kFloat).contiguous();
        at::Tensor grad_logits = at::empty_like(logits);
        check_launch(kernels::softcap_ce_backward(logits.data_ptr(), kernel_dtype(logits, "logits"), logits.size(0),
                                                  logits.size(1), ctx->saved_data["vocab"].toInt(),
                                                  static_cast<float>(ctx->saved_data["softcap"].toDouble()),
                                                  targets.data_ptr<int64_t>(), lse.data_ptr<float>(),
                                                  grad_loss.data_ptr<float>(), grad_logits.data_ptr(),
                                                  current_stream(logits)),
                     "soft-capped cross-entropy backward (CUDA)");
        return {grad_logits, at::Tensor(), at::Tensor(), at::Tensor()};
    }
};

// ---------------------------------------------------------------------------------------------
// rotary embeddings and relu^2

const char* rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, at::Tensor& y, bool inverse) {
    return kernels::rotary(x.data_ptr(), kernel_dtype(x, "rotary: x"), cos.data_ptr(), sin.data_ptr(),
                           kernel_dtype(cos, "rotary: cos"), y.data_ptr(), x.numel() / x.size(3), x.size(1), x.size(2),
                           x.size(3), inverse, current_stream(x));
}

class RotaryCuda : public torch::autograd::Function<RotaryCuda> {
public:
    static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& cos_in,
                              const at::Tensor& sin_in) {
        TORCH_CHECK(x_in.dim() == 4 && x_in.size(3) % 2 == 0, "rotary: x must be [B, T, H, D] with D even");
        TORCH_CHECK(cos_in.numel() == x_in.size(1) * x_in.size(3) / 2 && sin_in.sizes() == cos_in.sizes(),
                    "rotary: cos and sin must be [1, T, 1, D/2]");
        TORCH_CHECK(cos_in.scalar_type() == sin_in.scalar_type(), "rotary: cos and sin must have one dtype");
        const c10::cuda::CUDAGuard guard(x_in.device());
        at::Tensor x = x_in.contiguous(), cos = cos_in.contiguous(), sin = sin_in.contiguous();
        at::Tensor y = at::empty_like(x);
        check_launch(rotate(x, cos, sin, y, /*inverse=*/false), "rotary forward (CUDA)");
        ctx->save_for_backward({cos, sin});
        return y;
    }
    static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
        const auto saved = ctx->get_saved_variables();
        at::Tensor dy = grad_outputs[0].contiguous();
        at::Tensor dx = at::empty_like(dy);
        check_launch(rotate(dy, saved[0], saved[1], dx, /*inverse=*/true), "rotary backward (CUDA)");
        return {dx, at::Tensor(), at::Tensor()};
    }
};

class ReluSquareCuda : public torch::autograd::Function<ReluSquareCuda> {
public:
    static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in) {
        const c10::cuda::CUDAGuard guard(x_in.device());
        at::Tensor x = x_in.contiguous();
        at::Tensor y = at::empty_like(x);
        check_launch(kernels::relu_square(x.data_ptr(), kernel_dtype(x, "relu^2: x"), y.data_ptr(), x.numel(),
                                          current_stream(x)),
                     "relu^2 forward (CUDA)");
        ctx->save_for_backward({x});
        return y;
    }
    static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
        const at::Tensor x = ctx->get_saved_variables()[0];
        at::Tensor dy = grad_outputs[0].to(x.scalar_type()).contiguous();
        at::Tensor dx = at::empty_like(x);
        check_launch(kernels::relu_square_backward(x.data_ptr(), dy.data_ptr(), kernel_dtype(x, "relu^2: x"),
                                                   dx.data_ptr(), x.numel(), current_stream(x)),
                     "relu^2 backward (CUDA)");
        return {dx};
    }
};

}  // namespace

at::Tensor rotary_cuda(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
    TORCH_CHECK(x.is_cuda() && cos.is_cuda() && sin.is_cuda(), "rotary_cuda needs CUDA tensors");
    return RotaryCuda::apply(x, cos, sin);
}

at::Tensor relu_square_cuda(const at::Tensor& x) {
    TORCH_CHECK(x.is_cuda(), "relu_square_cuda needs a CUDA tensor, got ", x.device());
    return ReluSquareCuda::apply(x);
}

void adamw_step_cuda(at::Tensor& p, const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
                     const AdamWStepScalars& scalars) {
    for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&grad, &exp_avg, &exp_avg_sq}) {
        TORCH_CHECK(t->device() == p.device() && t->scalar_type() == p.scalar_type() && t->numel() == p.numel(),
                    "fused AdamW: gradient and moments must match the parameter's device, dtype and size");
        TORCH_CHECK(t->is_contiguous(), "fused AdamW: tensors must be contiguous");
    }
    TORCH_CHECK(p.is_cuda() && p.is_contiguous(), "fused AdamW: the parameter must be a contiguous CUDA tensor");
    const c10::cuda::CUDAGuard guard(p.device());
    check_launch(kernels::adamw_step(p.data_ptr(), grad.data_ptr(), exp_avg.data_ptr(), exp_avg_sq.data_ptr(),
                                     kernel_dtype(p, "fused AdamW: the parameter"), p.numel(), scalars, current_stream(p)),
                 "fused AdamW step (CUDA)");
}

at::Tensor l3_segment_attention_cuda(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                                     const at::Tensor& ids, const at::Tensor& bounds, int64_t max_rows) {
    TORCH_CHECK(q.is_cuda(), "l3_segment_attention_cuda needs CUDA tensors, got ", q.device());
    return SegmentAttentionCuda::apply(q, keys, values, ids, bounds, max_rows);
}

at::Tensor softcap_cross_entropy_cuda(const at::Tensor& logits, const at::Tensor& targets, int64_t vocab,
                                      double softcap) {
    TORCH_CHECK(logits.is_cuda(), "softcap_cross_entropy_cuda needs CUDA tensors, got ", logits.device());
    return SoftcapCrossEntropyCuda::apply(logits, targets, vocab, softcap);
}

}  // namespace l3lab::modules
