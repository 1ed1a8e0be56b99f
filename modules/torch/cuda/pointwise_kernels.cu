// Elementwise chains that the reference's torch.compile fuses, one kernel each way here: rotary
// embeddings (six ATen kernels and a concatenation in eager mode), relu(x)^2 (two) and the AdamW step
// (about eight per parameter). Arithmetic in
// float32, one rounding to the storage type at the end - as inductor does for bfloat16 pointwise code.
#include "modules/torch/cuda/common.cuh"
#include "modules/torch/cuda/kernels.h"

namespace l3lab::cuda_kernels {

namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) {
    const int64_t blocks = (n + kThreads - 1) / kThreads;
    return static_cast<unsigned>(blocks < 65535 * 32 ? blocks : 65535 * 32);  // grid-stride loops cover the rest
}

// x, y [rows, T, H, D] viewed as pairs (first half, second half) of each head vector; cos, sin [T, D/2].
// sign = +1: y1 = x1 c + x2 s, y2 = -x1 s + x2 c. sign = -1 rotates back (the gradient).
template <typename T, typename R>
__global__ void __launch_bounds__(kThreads) rotary_kernel(const T* __restrict__ x, const R* __restrict__ cos,
                                                          const R* __restrict__ sin, T* __restrict__ y, int64_t pairs,
                                                          int64_t seq, int64_t heads, int64_t half, float sign) {
    for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < pairs;
         p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t i = p % half;
        const int64_t vector = p / half;              // (row, t, h) flattened
        const int64_t t = (vector / heads) % seq;
        const float c = to_float(cos[t * half + i]), s = sign * to_float(sin[t * half + i]);
        const int64_t base = vector * 2 * half + i;
        const float x1 = to_float(x[base]), x2 = to_float(x[base + half]);
        y[base] = from_float<T>(x1 * c + x2 * s);
        y[base + half] = from_float<T>(x2 * c - x1 * s);
    }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) relu_square_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n) {
    for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < n;
         k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const float v = fmaxf(to_float(x[k]), 0.f);
        y[k] = from_float<T>(v * v);
    }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    relu_square_backward_kernel(const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ dx, int64_t n) {
    for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < n;
         k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const float v = fmaxf(to_float(x[k]), 0.f);
        dx[k] = from_float<T>(2.f * v * to_float(dy[k]));
    }
}

// torch.lerp's formula (aten/src/ATen/native/Lerp.h): exact at both ends.
__device__ __forceinline__ float lerp(float start, float end, float weight) {
    return fabsf(weight) < 0.5f ? start + weight * (end - start) : end - (end - start) * (1.f - weight);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) adamw_kernel(T* __restrict__ p, const T* __restrict__ grad,
                                                         T* __restrict__ exp_avg, T* __restrict__ exp_avg_sq, int64_t n,
                                                         AdamWScalars s) {
    for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < n;
         k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const float g = to_float(grad[k]);
        const float m = lerp(to_float(exp_avg[k]), g, s.one_minus_beta1);
        const float v = lerp(to_float(exp_avg_sq[k]), g * g, s.one_minus_beta2);
        const float denom = sqrtf(v / s.bias2) + s.eps;
        p[k] = from_float<T>(to_float(p[k]) * s.decay - s.step_size * (m / denom));
        exp_avg[k] = from_float<T>(m);
        exp_avg_sq[k] = from_float<T>(v);
    }
}

}  // namespace

const char* adamw_step(void* p, const void* grad, void* exp_avg, void* exp_avg_sq, DType type, int64_t n,
                       const AdamWScalars& scalars, void* stream) {
    if (n == 0) return nullptr;
    const auto s = static_cast<cudaStream_t>(stream);
    if (type == DType::BFloat16)
        adamw_kernel<<<blocks_for(n), kThreads, 0, s>>>(static_cast<__nv_bfloat16*>(p), static_cast<const __nv_bfloat16*>(grad),
                                                        static_cast<__nv_bfloat16*>(exp_avg),
                                                        static_cast<__nv_bfloat16*>(exp_avg_sq), n, scalars);
    else
        adamw_kernel<<<blocks_for(n), kThreads, 0, s>>>(static_cast<float*>(p), static_cast<const float*>(grad),
                                                        static_cast<float*>(exp_avg), static_cast<float*>(exp_avg_sq), n,
                                                        scalars);
    return launch_error();
}

const char* rotary(const void* x, DType x_type, const void* cos, const void* sin, DType table_type, void* y,
                   int64_t vectors, int64_t seq, int64_t heads, int64_t head_dim, bool inverse, void* stream) {
    const int64_t half = head_dim / 2, pairs = vectors * half;
    if (pairs == 0) return nullptr;
    const auto s = static_cast<cudaStream_t>(stream);
    const float sign = inverse ? -1.f : 1.f;
    using bf16 = __nv_bfloat16;
    const bool x_bf16 = x_type == DType::BFloat16, t_bf16 = table_type == DType::BFloat16;
#define L3LAB_ROTARY(T, R)                                                                                          \
    rotary_kernel<T, R><<<blocks_for(pairs), kThreads, 0, s>>>(static_cast<const T*>(x), static_cast<const R*>(cos), \
                                                               static_cast<const R*>(sin), static_cast<T*>(y), pairs, \
                                                               seq, heads, half, sign)
    if (x_bf16 && t_bf16) L3LAB_ROTARY(bf16, bf16);
    else if (x_bf16) L3LAB_ROTARY(bf16, float);
    else if (t_bf16) L3LAB_ROTARY(float, bf16);
    else L3LAB_ROTARY(float, float);
#undef L3LAB_ROTARY
    return launch_error();
}

const char* relu_square(const void* x, DType type, void* y, int64_t n, void* stream) {
    if (n == 0) return nullptr;
    const auto s = static_cast<cudaStream_t>(stream);
    if (type == DType::BFloat16)
        relu_square_kernel<<<blocks_for(n), kThreads, 0, s>>>(static_cast<const __nv_bfloat16*>(x),
                                                              static_cast<__nv_bfloat16*>(y), n);
    else
        relu_square_kernel<<<blocks_for(n), kThreads, 0, s>>>(static_cast<const float*>(x), static_cast<float*>(y), n);
    return launch_error();
}

const char* relu_square_backward(const void* x, const void* dy, DType type, void* dx, int64_t n, void* stream) {
    if (n == 0) return nullptr;
    const auto s = static_cast<cudaStream_t>(stream);
    if (type == DType::BFloat16)
        relu_square_backward_kernel<<<blocks_for(n), kThreads, 0, s>>>(
            static_cast<const __nv_bfloat16*>(x), static_cast<const __nv_bfloat16*>(dy), static_cast<__nv_bfloat16*>(dx), n);
    else
        relu_square_backward_kernel<<<blocks_for(n), kThreads, 0, s>>>(
            static_cast<const float*>(x), static_cast<const float*>(dy), static_cast<float*>(dx), n);
    return launch_error();
}

}  // namespace l3lab::cuda_kernels
