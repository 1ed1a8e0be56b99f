// Soft-capped cross-entropy in one pass over the logits each way, as the reference's torch.compile fuses
// it: the [rows, vocab] float32 soft-capped logits are never stored. Forward: one block per row, an
// online log-sum-exp of z = cap * tanh(x / cap) computed in float32 from the (bfloat16) logits.
// Backward: recomputes z from the logits and the saved log-sum-exp.
#include "modules/torch/cuda/common.cuh"
#include "modules/torch/cuda/kernels.h"

namespace l3lab::cuda_kernels {

namespace {

constexpr int kThreads = 512;

struct MaxSum {
    float max, sum;  // sum of exp(z - max)
};

__device__ __forceinline__ MaxSum combine(MaxSum a, MaxSum b) {
    if (a.max == -INFINITY) return b;
    if (b.max == -INFINITY) return a;
    const float m = fmaxf(a.max, b.max);
    return {m, a.sum * expf(a.max - m) + b.sum * expf(b.max - m)};
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    softcap_ce_forward_kernel(const T* __restrict__ logits, int64_t stride, int64_t vocab, float cap,
                              const int64_t* __restrict__ targets, float* __restrict__ loss, float* __restrict__ lse) {
    __shared__ float warp_max[kThreads / 32], warp_sum_exp[kThreads / 32];
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int64_t row = blockIdx.x;
    const T* x = logits + row * stride;
    MaxSum acc{-INFINITY, 0.f};
    for (int64_t j = tid; j < vocab; j += kThreads) {
        const float z = cap * tanhf(to_float(x[j]) / cap);  // the reference's softcap * tanh(logits / softcap)
        if (z > acc.max) {
            acc.sum = (acc.max == -INFINITY ? 0.f : acc.sum * expf(acc.max - z)) + 1.f;
            acc.max = z;
        } else {
            acc.sum += expf(z - acc.max);
        }
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
        const MaxSum other{__shfl_xor_sync(0xffffffffu, acc.max, offset), __shfl_xor_sync(0xffffffffu, acc.sum, offset)};
        acc = combine(acc, other);
    }
    if (lane == 0) {
        warp_max[warp] = acc.max;
        warp_sum_exp[warp] = acc.sum;
    }
    __syncthreads();
    if (tid == 0) {
        MaxSum total{-INFINITY, 0.f};
        for (int w = 0; w < kThreads / 32; ++w) total = combine(total, {warp_max[w], warp_sum_exp[w]});
        const float log_sum = total.max + logf(total.sum);
        lse[row] = log_sum;
        const int64_t t = targets[row];
        loss[row] = (t >= 0 && t < vocab) ? log_sum - cap * tanhf(to_float(x[t]) / cap) : 0.f;
    }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    softcap_ce_backward_kernel(const T* __restrict__ logits, int64_t stride, int64_t vocab, float cap,
                               const int64_t* __restrict__ targets, const float* __restrict__ lse,
                               const float* __restrict__ grad_loss, T* __restrict__ grad_logits) {
    const int64_t row = blockIdx.x;
    const int64_t t = targets[row];
    const bool counted = t >= 0 && t < vocab;
    const float g = counted ? grad_loss[row] : 0.f;
    const float log_sum = lse[row];
    const T* x = logits + row * stride;
    T* gx = grad_logits + row * stride;
    for (int64_t j = threadIdx.x; j < stride; j += kThreads) {
        float d = 0.f;
        if (counted && j < vocab) {
            const float th = tanhf(to_float(x[j]) / cap);
            const float p = expf(cap * th - log_sum);
            d = g * (p - (j == t ? 1.f : 0.f)) * (1.f - th * th);  // d/dx cap*tanh(x/cap) = 1 - tanh^2
        }
        gx[j] = from_float<T>(d);
    }
}

}  // namespace

const char* softcap_ce_forward(const void* logits, DType type, int64_t rows, int64_t stride, int64_t vocab, float cap,
                               const int64_t* targets, float* loss, float* lse, void* stream) {
    if (rows == 0) return nullptr;
    const auto s = static_cast<cudaStream_t>(stream);
    const auto blocks = static_cast<unsigned>(rows);
    if (type == DType::BFloat16)
        softcap_ce_forward_kernel<<<blocks, kThreads, 0, s>>>(static_cast<const __nv_bfloat16*>(logits), stride, vocab,
                                                              cap, targets, loss, lse);
    else
        softcap_ce_forward_kernel<<<blocks, kThreads, 0, s>>>(static_cast<const float*>(logits), stride, vocab, cap,
                                                              targets, loss, lse);
    return launch_error();
}

const char* softcap_ce_backward(const void* logits, DType type, int64_t rows, int64_t stride, int64_t vocab,
                                float cap, const int64_t* targets, const float* lse, const float* grad_loss,
                                void* grad_logits, void* stream) {
    if (rows == 0) return nullptr;
    const auto s = static_cast<cudaStream_t>(stream);
    const auto blocks = static_cast<unsigned>(rows);
    if (type == DType::BFloat16)
        softcap_ce_backward_kernel<<<blocks, kThreads, 0, s>>>(static_cast<const __nv_bfloat16*>(logits), stride,
                                                               vocab, cap, targets, lse, grad_loss,
                                                               static_cast<__nv_bfloat16*>(grad_logits));
    else
        softcap_ce_backward_kernel<<<blocks, kThreads, 0, s>>>(static_cast<const float*>(logits), stride, vocab, cap,
                                                               targets, lse, grad_loss,
                                                               static_cast<float*>(grad_logits));
    return launch_error();
}

}  // namespace l3lab::cuda_kernels
