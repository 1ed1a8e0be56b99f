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

// nanochat's block input resid_lambdas[i] * x + x0_lambdas[i] * x0 over float32 CPU tensors x, x0 of one
// shape, with a, b the 0-D (or one-element) lambdas: one pass forward (rounded as the eager a * x + b * x0),
// one pass back (dx = a dy, dx0 = b dy, and the lambdas' gradients sum(dy x), sum(dy x0), summed in fixed
// blocks of 16K elements, so the same whatever the threads). Saves x and x0, as the eager graph does.
at::Tensor residual_mix_cpu(const at::Tensor& x, const at::Tensor& x0, const at::Tensor& a, const at::Tensor& b);

// Muon's elementwise tails (modules/optim/muon_adamw.cpp) on float32 contiguous CPU stacks, each one pass
// with the eager ops' rounding, bit for bit:
// - nesterov_momentum_cpu: buf.lerp_(g, 1 - momentum); g.lerp_(buf, momentum). ATen's lerp rounds its
//   vectors (fused multiply-add) and its scalar tails differently, so applies() asks, as AdamW's, for
//   sizes ATen runs in whole vectors;
// - muon_update_cpu: NorMuon's g *= scale (scale [k, rows, 1] or [k, 1, cols] of the stack p [k, rows,
//   cols]) and the cautious update p -= p * lr_wd * (g * p >= 0) + g * lr (lr_wd = float32 lr * wd).
bool nesterov_momentum_cpu_applies(const at::Tensor& buf, const at::Tensor& g);
void nesterov_momentum_cpu(at::Tensor& buf, at::Tensor& g, float momentum);
bool muon_update_cpu_applies(const at::Tensor& p, const at::Tensor& g, const at::Tensor& scale);
void muon_update_cpu(at::Tensor& p, const at::Tensor& g, const at::Tensor& scale, float lr, float lr_wd);

}  // namespace l3lab::modules
