// l3lab's fused CPU kernels as differentiable tensor functions (docs/benchmarks.md), the CPU twins of
// the CUDA ones in modules/torch/cuda.h: the same arguments, the same results up to float32 rounding.
// Each is compiled for DEFAULT, AVX2 and AVX512 and runs the one ATen itself chose for this CPU
// (at::get_cpu_capability(), which ATEN_CPU_CAPABILITY can lower).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "modules/torch/cuda.h"  // AdamWStepScalars, shared with the CUDA step

namespace l3lab::modules {

// The instruction set the fused CPU kernels run with here: "DEFAULT", "AVX2" or "AVX512".
std::string cpu_kernels_capability();

// Per-row soft-capped cross-entropy of float32 logits [rows, padded_vocab] on the CPU, as
// softcap_cross_entropy_cuda: the loss of softcap * tanh(logits[:, :vocab] / softcap) against targets
// [rows] (-1 = ignored, loss 0), float32 [rows]. Differentiable in logits. When a gradient is wanted, the
// forward pass writes d loss / d logits while the row is in cache (one [rows, padded_vocab] tensor, the
// only one of that size it makes) and the backward pass scales it in place by the incoming gradient: the
// backward can run once (no retain_graph).
at::Tensor softcap_cross_entropy_cpu(const at::Tensor& logits, const at::Tensor& targets, int64_t vocab,
                                     double softcap);

// Fused float32 elementwise chains on the CPU, differentiable, as their CUDA twins (one pass each way):
// RMSNorm without a weight over the last dimension (at::rms_norm(x, {x.size(-1)}), eps = float32's
// epsilon; saves x and one float per row), relu(x)^2 (saves x), and rotary embeddings of x [B, T, H, D]
// with cos, sin [1, T, 1, D/2] (gpt.cpp's apply_rotary; saves nothing but cos and sin).
at::Tensor rms_norm_cpu(const at::Tensor& x);
at::Tensor relu_square_cpu(const at::Tensor& x);
at::Tensor rotary_cpu(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// The reference's adamw_step_fused in one pass over float32 contiguous CPU tensors p, grad, exp_avg,
// exp_avg_sq of one size (p and the moments updated in place), with the scalars of adamw_step_cuda
// (modules/torch/cuda.h): the eager step's float32 operations in its order, ATen's fused multiply-adds
// included, with the IEEE square root (ATen's eager one, MKL VML's, differs in the last bit for a few
// elements, and so then does p). applies() says whether a tensor's size is one ATen runs in whole vectors.
bool adamw_step_cpu_applies(const at::Tensor& p, const at::Tensor& grad, const at::Tensor& exp_avg,
                            const at::Tensor& exp_avg_sq);
void adamw_step_cpu(at::Tensor& p, const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
                    const AdamWStepScalars& scalars);

}  // namespace l3lab::modules
