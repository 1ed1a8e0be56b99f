// l3lab's CUDA side as seen from torch code that must also build without CUDA (docs/cuda.md). With the
// CUDA kernels built (CMake L3LAB_CUDA, define L3LAB_WITH_CUDA) these run on the GPU; without, the
// queries answer "none" and the kernels throw.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "modules/torch/cuda/kernels.h"  // plain C++: the kernels' argument structs

namespace l3lab::modules {

// Whether this build has l3lab's CUDA kernels.
bool cuda_kernels_built();
// CUDA devices visible to libtorch (0 without a CUDA libtorch, a driver or a device).
int cuda_device_count();
// Whether training on CUDA can work here: kernels built and a device visible.
inline bool cuda_usable() { return cuda_kernels_built() && cuda_device_count() > 0; }
std::string cuda_device_name(int device = 0);  // e.g. "NVIDIA H200"

// The reference's CUDA precision settings, explicit: TF32 for float32 matmuls (cuBLAS, cuDNN:
// torch.set_float32_matmul_precision("high")) and the expandable-segments allocator
// (PYTORCH_ALLOC_CONF=expandable_segments:True, unless the environment already sets it). Call before
// the first CUDA allocation.
void configure_cuda_training();

void cuda_synchronize();
int64_t cuda_peak_memory_bytes();  // max allocated by the caching allocator since the last reset
void cuda_reset_peak_memory();

// Makes every CUDA call that blocks the host on the device (a synchronising copy, .item(), stream
// synchronisation) throw while enabled: tests use it to prove a training step has no host sync.
void cuda_set_sync_errors(bool enabled);

// The L3 segment attention on CUDA tensors (as l3_segment_attention, modules/torch/l3_segment.h):
// q [N, C] float32 or bfloat16, keys [n_emb, C] / values [n_emb, D] float32 or bfloat16 (tied: the
// same tensor), ids [N] and bounds [V+1] int64. max_rows must be >= every token's row count (-1:
// computed from bounds, a host sync). Returns [N, D] in q's dtype; differentiable in q, keys, values.
at::Tensor l3_segment_attention_cuda(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                                     const at::Tensor& ids, const at::Tensor& bounds, int64_t max_rows);

// Per-row soft-capped cross-entropy of logits [rows, padded_vocab] (float32 or bfloat16): the loss of
// softcap * tanh(logits[:, :vocab] / softcap) against targets [rows] (-1 = ignored, loss 0), as float32
// [rows]. Differentiable in logits; the float32 soft-capped logits are never materialised.
at::Tensor softcap_cross_entropy_cuda(const at::Tensor& logits, const at::Tensor& targets, int64_t vocab,
                                      double softcap);

// Fused elementwise chains (one kernel each way, float32 arithmetic, one rounding), differentiable:
// rotary embeddings of x [B, T, H, D] with cos, sin [1, T, 1, D/2] (as apply_rotary in gpt.cpp), and
// relu(x)^2.
at::Tensor rotary_cuda(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
at::Tensor relu_square_cuda(const at::Tensor& x);

// The reference's adamw_step_fused in one kernel over CUDA tensors p, grad, exp_avg, exp_avg_sq of one
// dtype (float32 or bfloat16) and one size, contiguous; p and the moments are updated in place.
// Arithmetic in float32 with one rounding per stored value (torch.compile's fused kernel does the same;
// eager ATen rounds bfloat16 after every operation). The scalars are the host-side float32 values
// MuonAdamW computes: decay = 1 - lr*wd, 1 - beta1, 1 - beta2, bias2 = 1 - beta2^step, eps, lr/bias1.
using AdamWStepScalars = cuda_kernels::AdamWScalars;
void adamw_step_cuda(at::Tensor& p, const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
                     const AdamWStepScalars& scalars);

// bfloat16 autocast on `device` (CUDA or CPU) for the lifetime of the object (torch.amp.autocast(
// device_type=..., dtype=torch.bfloat16), as the reference's base_train wraps its forward passes on CUDA;
// on the CPU only with `precision: bf16`, docs/training.md); does nothing when `enable` is false or that
// device's autocast is already on.
class Bf16Autocast {
public:
    Bf16Autocast(c10::DeviceType device, bool enable);
    ~Bf16Autocast();
    Bf16Autocast(const Bf16Autocast&) = delete;
    Bf16Autocast& operator=(const Bf16Autocast&) = delete;

private:
    c10::DeviceType device_;
    bool active_ = false;
    int previous_dtype_ = 0;
};

}  // namespace l3lab::modules
