// Host entry points of l3lab's CUDA kernels (l3_kernels.cu, loss_kernels.cu). Plain pointers and sizes
// only - no ATen, no CUDA headers - so the .cu files compile without libtorch's headers and the
// tensor-side code (ops.cpp) compiles without nvcc. Every function launches on `stream` (a
// cudaStream_t) and returns nullptr, or the CUDA error string of a failed launch.
#pragma once

#include <cstdint>

namespace l3lab::cuda_kernels {

enum class DType : int { Float32, BFloat16 };

// The widest model dimension (and value width) the L3 kernels take: threads x channels per thread.
int64_t l3_max_width();

// One L3 segment attention call: token n's query q[n] attends over the rows bounds[t] .. bounds[t+1]-1
// (t = ids[n]) of `keys` and aggregates the same rows of `values`.
struct L3Args {
    const void* q = nullptr;       // [N, C], q_type
    const void* keys = nullptr;    // [n_emb, C], table_type
    const void* values = nullptr;  // [n_emb, D], table_type; the same pointer as keys when tied
    DType q_type = DType::Float32, table_type = DType::Float32;
    bool tied = false;
    const int64_t* ids = nullptr;         // [N]
    const int64_t* order = nullptr;       // [N] positions of the occurrences sorted by token id
    const int64_t* sorted_ids = nullptr;  // [N] ids[order]
    const int64_t* bounds = nullptr;      // [V + 1], non-decreasing, bounds[V] <= n_emb
    int64_t N = 0, C = 0, D = 0, V = 0, n_emb = 0;
    int64_t max_rows = 0;  // >= every token's row count (the scratch stride of backward)
};

// out [N, D] in q_type; lse [N] float32 (log-sum-exp of each occurrence's scores, -inf without rows).
const char* l3_forward(const L3Args& a, void* out, float* lse, void* stream);

// grad_q [N, C] (q_type), grad_keys [n_emb, C] and grad_values [n_emb, D] (table_type; grad_values is
// ignored when tied: grad_keys then holds the sum). Every row of the grads is written (zero for tokens
// absent from the batch). scratch: 2 x N x max_rows floats.
const char* l3_backward(const L3Args& a, const void* out, const float* lse, const void* grad_out, void* grad_q,
                        void* grad_keys, void* grad_values, float* scratch, void* stream);

// Soft-capped cross-entropy over rows of logits [rows, stride] (the first `vocab` columns are real):
// z = cap * tanh(x / cap), loss = logsumexp(z) - z[target]; targets outside [0, vocab) (the ignore
// index -1) give loss 0 and a zero gradient. loss, lse: [rows] float32.
const char* softcap_ce_forward(const void* logits, DType type, int64_t rows, int64_t stride, int64_t vocab, float cap,
                               const int64_t* targets, float* loss, float* lse, void* stream);
// grad_logits [rows, stride] in `type`: grad_loss[r] * (softmax(z) - onehot(target)) * (1 - tanh^2);
// padding columns get 0.
const char* softcap_ce_backward(const void* logits, DType type, int64_t rows, int64_t stride, int64_t vocab,
                                float cap, const int64_t* targets, const float* lse, const float* grad_loss,
                                void* grad_logits, void* stream);

// Rotary embeddings of x [vectors = B*T*H, D] (contiguous [B, T, H, D]) with cos, sin [T, D/2]: the
// halves (x1, x2) become (x1 c + x2 s, x2 c - x1 s); `inverse` rotates back (the gradient).
const char* rotary(const void* x, DType x_type, const void* cos, const void* sin, DType table_type, void* y,
                   int64_t vectors, int64_t seq, int64_t heads, int64_t head_dim, bool inverse, void* stream);
// y = relu(x)^2 and its gradient dx = 2 relu(x) dy, over n elements.
const char* relu_square(const void* x, DType type, void* y, int64_t n, void* stream);
const char* relu_square_backward(const void* x, const void* dy, DType type, void* dx, int64_t n, void* stream);

// One AdamW step of the reference's adamw_step_fused over n elements of p, grad, exp_avg, exp_avg_sq
// (all of `type`), in float32 with one rounding per stored value, as torch.compile's fused kernel:
//   p *= decay; m = lerp(m, g, one_minus_beta1); v = lerp(v, g*g, one_minus_beta2);
//   p -= step_size * m / (sqrt(v / bias2) + eps)
struct AdamWScalars {
    float decay = 1.f, one_minus_beta1 = 0.f, one_minus_beta2 = 0.f, bias2 = 1.f, eps = 0.f, step_size = 0.f;
};
const char* adamw_step(void* p, const void* grad, void* exp_avg, void* exp_avg_sq, DType type, int64_t n,
                       const AdamWScalars& scalars, void* stream);

}  // namespace l3lab::cuda_kernels
