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

// One instruction set's kernels; CPU_CAPABILITY names it (cpu/softcap_ce_isa.cpp).
namespace DEFAULT {
void softcap_ce_rows(const SoftcapCeArgs& a, int64_t begin, int64_t end);
void scale_rows(float* grad, int64_t width, const float* scale, int64_t begin, int64_t end);
}  // namespace DEFAULT
namespace AVX2 {
void softcap_ce_rows(const SoftcapCeArgs& a, int64_t begin, int64_t end);
void scale_rows(float* grad, int64_t width, const float* scale, int64_t begin, int64_t end);
}  // namespace AVX2
namespace AVX512 {
void softcap_ce_rows(const SoftcapCeArgs& a, int64_t begin, int64_t end);
void scale_rows(float* grad, int64_t width, const float* scale, int64_t begin, int64_t end);
}  // namespace AVX512

}  // namespace l3lab::modules::cpu_kernels
