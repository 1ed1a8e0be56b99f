// l3lab's fused CPU kernels (docs/benchmarks.md, "Fused CPU kernels"): plain C++ over raw pointers, no
// ATen types, so that each can be compiled once per instruction set (cpu/*_isa.cpp with CPU_CAPABILITY =
// DEFAULT, AVX2, AVX512, as ATen compiles its own kernels) and picked at run time by cpu/ops.cpp. The
// autograd functions around them are in modules/torch/cpu.h, beside their CUDA twins in cuda.h.
#pragma once

#include <cstdint>

namespace l3lab::modules::cpu_kernels {

// Soft-capped cross-entropy over rows [begin, end) of logits [rows, width] (float32, contiguous): row r's
// loss is logsumexp(z) - z[t] with z = softcap * tanh(logits[r, :vocab] / softcap) and t = targets[r]
// (-1: ignored, loss 0). With grad != nullptr it also writes d loss[r] / d logits[r, :] there ([rows,
// width]; the columns from vocab on, and the rows of ignored targets, are 0): (softmax(z) - onehot(t)) *
// (1 - (z / softcap)^2). Float32 arithmetic; each row is independent of the others and of the threads.
struct SoftcapCeArgs {
    const float* logits = nullptr;
    int64_t width = 0;
    int64_t vocab = 0;
    float softcap = 0;
    const int64_t* targets = nullptr;
    float* loss = nullptr;
    float* grad = nullptr;
};
using SoftcapCeRowsFn = void (*)(const SoftcapCeArgs&, int64_t begin, int64_t end);

// grad[r, :] *= scale[r] for rows [begin, end) of grad [rows, width] (the loss's backward).
using ScaleRowsFn = void (*)(float* grad, int64_t width, const float* scale, int64_t begin, int64_t end);

// rms_norm_rows, rms_norm_backward_rows: RMSNorm without a weight (F.rms_norm(x, (dim,)), eps = float32's epsilon) over rows [begin, end) of
// x [rows, dim]: y = x * rstd with rstd = 1 / sqrt(mean(x^2) + eps), saved per row for the backward,
// which gives dx = rstd * (dy - x * rstd^2 * mean(x * dy)).

// relu_square, relu_square_backward: relu(x)^2 over elements [begin, end), and its backward dx = 2 relu(x) dy.

// rotary_rows: rotary embeddings of x [B, T, H, D] with cos, sin [T, D/2] (gpt.cpp's apply_rotary) over the rows
// [begin, end) of x seen as [B*T*H, D]: y1 = x1 cos + x2 sin, y2 = -x1 sin + x2 cos (x1, x2 the halves of
// D); inverse = the transposed rotation, which is the backward.

// adamw_step: one AdamW step over elements [begin, end) of float32 p, grad, exp_avg, exp_avg_sq (the
// formula of the CUDA adamw_kernel, cuda/kernels.h), rounded op by op as the eager step, with the IEEE
// square root (modules/torch/cpu.h); whole vectors only.
//   m = lerp(m, g, one_minus_beta1); v = lerp(v, g*g, one_minus_beta2);
//   p = p * decay - step_size * m / (sqrt(v / bias2) + eps)
struct AdamWArgs {
    float* p = nullptr;
    const float* grad = nullptr;
    float* exp_avg = nullptr;
    float* exp_avg_sq = nullptr;
    float decay = 1.f, one_minus_beta1 = 0.f, one_minus_beta2 = 0.f, bias2 = 1.f, eps = 0.f, step_size = 0.f;
};

// residual_mix, residual_mix_backward: nanochat's per-block input y = a * x + b * x0 (a = resid_lambdas[i],
// b = x0_lambdas[i]) over elements [begin, end), rounded as the eager a * x, b * x0 and their sum; the
// backward writes dx = a * dy, dx0 = b * dy and returns sum(dy * x), sum(dy * x0) over its range in
// sums[0], sums[1] (the lambdas' gradients, summed over fixed blocks by the caller).

// nesterov_momentum: Muon's momentum over elements [begin, end) of the stacked buffer and gradients, as
// the eager pair buf.lerp_(g, 1 - momentum); g.lerp_(buf, momentum) (ATen's vectorised lerp: fmadd);
// whole vectors only, as adamw_step.

// muon_update_rows: NorMuon's scale and the cautious update of Muon over rows [begin, end) of the stacked
// parameters seen as [k * rows, cols]: g *= scale (scale per row, [k * rows], or per column of each
// stack member, [k, cols]); mask = g * p >= 0; p -= p * lr_wd * mask + g * lr; each product rounded as
// the eager ops round it.
struct MuonUpdateArgs {
    float* p = nullptr;
    const float* g = nullptr;
    const float* scale = nullptr;
    int64_t rows = 0, cols = 0;  // one stack member's matrix
    bool scale_per_row = true;
    float lr = 0.f, lr_wd = 0.f;
};

// One instruction set's kernels; CPU_CAPABILITY names it (cpu/*_isa.cpp).
#define L3LAB_CPU_KERNELS_OF_ONE_ISA                                                                             \
    void softcap_ce_rows(const SoftcapCeArgs& a, int64_t begin, int64_t end);                                    \
    void scale_rows(float* grad, int64_t width, const float* scale, int64_t begin, int64_t end);                \
    void rms_norm_rows(const float* x, float* y, float* rstd, int64_t dim, float eps, int64_t begin, int64_t end); \
    void rms_norm_backward_rows(const float* x, const float* dy, const float* rstd, float* dx, int64_t dim,      \
                                int64_t begin, int64_t end);                                                    \
    void relu_square(const float* x, float* y, int64_t begin, int64_t end);                                      \
    void relu_square_backward(const float* x, const float* dy, float* dx, int64_t begin, int64_t end);           \
    void rotary_rows(const float* x, const float* cos, const float* sin, float* y, int64_t T, int64_t H,         \
                     int64_t D, bool inverse, int64_t begin, int64_t end);                                      \
    void adamw_step(const AdamWArgs& a, int64_t begin, int64_t end);                                           \
    void residual_mix(const float* x, const float* x0, float a, float b, float* y, int64_t begin, int64_t end);  \
    void residual_mix_backward(const float* dy, const float* x, const float* x0, float a, float b, float* dx,    \
                               float* dx0, float* sums, int64_t begin, int64_t end);                            \
    void nesterov_momentum(float* buf, float* g, float momentum, int64_t begin, int64_t end);                   \
    void muon_update_rows(const MuonUpdateArgs& a, int64_t begin, int64_t end);
namespace DEFAULT { L3LAB_CPU_KERNELS_OF_ONE_ISA }
namespace AVX2 { L3LAB_CPU_KERNELS_OF_ONE_ISA }
namespace AVX512 { L3LAB_CPU_KERNELS_OF_ONE_ISA }
#undef L3LAB_CPU_KERNELS_OF_ONE_ISA

}  // namespace l3lab::modules::cpu_kernels
