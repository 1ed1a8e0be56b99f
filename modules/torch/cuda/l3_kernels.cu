// The L3 lookup on the GPU: a ragged segment softmax-gather-aggregate, with no k_max padding.
//
// Token n (id t) attends over its own rows bounds[t] .. bounds[t+1]-1 of the key table and aggregates
// the same rows of the value table. Nothing of size N x k_max x C exists: each block reads its token's
// rows straight from the tables.
//
//   forward         one block per occurrence, occurrences visited in token order (sorted by id, so the
//                   rows of a frequent token stay in L2 while its occurrences run); an online softmax
//                   over chunks of 32 rows (warp-per-row dot products, thread-per-channel aggregation);
//                   keeps the log-sum-exp of each occurrence for backward.
//   backward (1)    one block per occurrence: recomputes the probabilities from the log-sum-exp,
//                   dP_j = dA.v_j, dS_j = P_j (dP_j - dA.A), dQ = sum_j dS_j k_j; writes P and dS to a
//                   scratch of N x max_rows floats each (scalars only, not rows).
//   backward (2)    one block per tile of 16 table rows (x 256 channels): for the tile's token(s), loops
//                   over that token's occurrences (a contiguous range of the sorted order) accumulating
//                   dK_j = sum dS q and dV_j = sum P dA in registers; every row of the table gradient is
//                   written exactly once (zero for tokens absent from the batch), so no atomics.
#include "modules/torch/cuda/common.cuh"
#include "modules/torch/cuda/kernels.h"

#include <algorithm>

namespace l3lab::cuda_kernels {

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kChunk = 32;      // rows per online-softmax step
constexpr int kPerThread = 12;  // channels per thread: widths up to 3072
constexpr int kTileRows = 16;   // table rows per block of the table-gradient kernel

struct Rows {
    int64_t first = 0, count = 0;
};

// Token n's rows, clamped to the table and to max_rows (the glue guarantees they already fit).
__device__ __forceinline__ Rows rows_of(const L3Args& a, int64_t n) {
    const int64_t t = a.ids[n];
    if (t < 0 || t >= a.V) return {};
    const int64_t first = max(a.bounds[t], int64_t{0});
    const int64_t end = min(a.bounds[t + 1], a.n_emb);
    return {first, max(int64_t{0}, min(end - first, a.max_rows))};
}

template <typename QT, typename TT>
__global__ void __launch_bounds__(kThreads) l3_forward_kernel(const L3Args a, QT* __restrict__ out, float* __restrict__ lse) {
    extern __shared__ float q_shared[];  // [C]
    __shared__ float scores[kChunk];
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int64_t n = a.order[blockIdx.x];
    const Rows rows = rows_of(a, n);
    const QT* q = static_cast<const QT*>(a.q) + n * a.C;
    for (int64_t c = tid; c < a.C; c += kThreads) q_shared[c] = to_float(q[c]);
    __syncthreads();

    const TT* keys = static_cast<const TT*>(a.keys);
    const TT* values = static_cast<const TT*>(a.values);
    float acc[kPerThread];
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) acc[k] = 0.f;
    float m = -INFINITY, l = 0.f;  // running max and sum of exp(score - m)
    for (int64_t base = 0; base < rows.count; base += kChunk) {
        const int chunk = static_cast<int>(min(int64_t{kChunk}, rows.count - base));
        for (int r = warp; r < chunk; r += kWarps) {
            const TT* key = keys + (rows.first + base + r) * a.C;
            float s = 0.f;
            for (int64_t c = lane; c < a.C; c += 32) s += q_shared[c] * to_float(key[c]);
            s = warp_sum(s);
            if (lane == 0) scores[r] = s;
        }
        __syncthreads();
        float chunk_max = -INFINITY;
        for (int r = 0; r < chunk; ++r) chunk_max = fmaxf(chunk_max, scores[r]);
        const float m_new = fmaxf(m, chunk_max);
        const float rescale = expf(m - m_new);
        l *= rescale;
#pragma unroll
        for (int k = 0; k < kPerThread; ++k) acc[k] *= rescale;
        for (int r = 0; r < chunk; ++r) {
            const float p = expf(scores[r] - m_new);
            l += p;
            const TT* value = values + (rows.first + base + r) * a.D;
#pragma unroll
            for (int k = 0; k < kPerThread; ++k) {
                const int64_t c = tid + k * kThreads;
                if (c < a.D) acc[k] += p * to_float(value[c]);
            }
        }
        m = m_new;
        __syncthreads();  // scores is rewritten by the next chunk
    }
    QT* o = out + n * a.D;
    const float inv = rows.count > 0 ? 1.f / l : 0.f;
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) {
        const int64_t c = tid + k * kThreads;
        if (c < a.D) o[c] = from_float<QT>(acc[k] * inv);
    }
    if (tid == 0) lse[n] = rows.count > 0 ? m + logf(l) : -INFINITY;
}

template <typename QT, typename TT>
__global__ void __launch_bounds__(kThreads)
    l3_backward_query_kernel(const L3Args a, const QT* __restrict__ out, const float* __restrict__ lse,
                             const QT* __restrict__ grad_out, QT* __restrict__ grad_q, float* __restrict__ scratch_p,
                             float* __restrict__ scratch_ds) {
    extern __shared__ float shared[];  // q [C], then grad_out [D]
    float* q_shared = shared;
    float* go_shared = shared + a.C;
    __shared__ float ds_chunk[kChunk];
    __shared__ float reduce[kWarps];
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int64_t s = blockIdx.x, n = a.order[s];
    const Rows rows = rows_of(a, n);
    const QT* q = static_cast<const QT*>(a.q) + n * a.C;
    for (int64_t c = tid; c < a.C; c += kThreads) q_shared[c] = to_float(q[c]);
    for (int64_t c = tid; c < a.D; c += kThreads) go_shared[c] = to_float(grad_out[n * a.D + c]);
    __syncthreads();
    float part = 0.f;
    for (int64_t c = tid; c < a.D; c += kThreads) part += go_shared[c] * to_float(out[n * a.D + c]);
    const float delta = block_sum<kThreads>(part, reduce);  // rowsum(P * dP) = dA . A
    const float log_sum = lse[n];

    const TT* keys = static_cast<const TT*>(a.keys);
    const TT* values = static_cast<const TT*>(a.values);
    float* p_row = scratch_p + s * a.max_rows;
    float* ds_row = scratch_ds + s * a.max_rows;
    float gq[kPerThread];
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) gq[k] = 0.f;
    for (int64_t base = 0; base < rows.count; base += kChunk) {
        const int chunk = static_cast<int>(min(int64_t{kChunk}, rows.count - base));
        for (int r = warp; r < chunk; r += kWarps) {
            const int64_t row = rows.first + base + r;
            const TT* key = keys + row * a.C;
            float score = 0.f, dp = 0.f;  // the score's summation order is the forward's
            if (a.tied) {
                for (int64_t c = lane; c < a.C; c += 32) {
                    const float kc = to_float(key[c]);
                    score += q_shared[c] * kc;
                    dp += go_shared[c] * kc;
                }
            } else {
                for (int64_t c = lane; c < a.C; c += 32) score += q_shared[c] * to_float(key[c]);
                const TT* value = values + row * a.D;
                for (int64_t c = lane; c < a.D; c += 32) dp += go_shared[c] * to_float(value[c]);
            }
            score = warp_sum(score);
            dp = warp_sum(dp);
            if (lane == 0) {
                const float p = expf(score - log_sum);
                const float ds = p * (dp - delta);
                ds_chunk[r] = ds;
                p_row[base + r] = p;
                ds_row[base + r] = ds;
            }
        }
        __syncthreads();
        for (int r = 0; r < chunk; ++r) {
            const float ds = ds_chunk[r];
            const TT* key = keys + (rows.first + base + r) * a.C;
#pragma unroll
            for (int k = 0; k < kPerThread; ++k) {
                const int64_t c = tid + k * kThreads;
                if (c < a.C) gq[k] += ds * to_float(key[c]);
            }
        }
        __syncthreads();  // ds_chunk is rewritten by the next chunk
    }
    QT* g = grad_q + n * a.C;
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) {
        const int64_t c = tid + k * kThreads;
        if (c < a.C) g[c] = from_float<QT>(gq[k]);
    }
}

template <typename QT, typename TT>
__global__ void __launch_bounds__(kThreads)
    l3_backward_table_kernel(const L3Args a, const QT* __restrict__ grad_out, const float* __restrict__ scratch_p,
                             const float* __restrict__ scratch_ds, TT* __restrict__ grad_keys,
                             TT* __restrict__ grad_values) {
    __shared__ int64_t row_token[kTileRows], row_local[kTileRows], seg_begin[kTileRows], seg_end[kTileRows];
    const int tid = threadIdx.x;
    const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kTileRows;
    const int rows = static_cast<int>(min(int64_t{kTileRows}, a.n_emb - j0));
    if (tid < kTileRows) {
        int64_t token = -1, local = 0, begin = 0, end = 0;
        if (tid < rows) {
            const int64_t j = j0 + tid;
            const int64_t t = lower_bound(a.bounds, a.V + 1, j + 1) - 1;  // bounds[t] <= j < bounds[t + 1]
            if (t >= 0 && t < a.V && j < a.bounds[t + 1] && j - a.bounds[t] < a.max_rows) {
                token = t;
                local = j - a.bounds[t];
                begin = lower_bound(a.sorted_ids, a.N, t);  // t's occurrences in the sorted order
                end = lower_bound(a.sorted_ids, a.N, t + 1);
            }
        }
        row_token[tid] = token;
        row_local[tid] = local;
        seg_begin[tid] = begin;
        seg_end[tid] = end;
    }
    __syncthreads();

    const int64_t c = static_cast<int64_t>(blockIdx.y) * kThreads + tid;
    const bool has_c = c < a.C, has_d = c < a.D;
    const QT* q = static_cast<const QT*>(a.q);
    float gk[kTileRows], gv[kTileRows];
#pragma unroll
    for (int r = 0; r < kTileRows; ++r) gk[r] = gv[r] = 0.f;
    // Runs of rows of one token; each loops over that token's occurrences once.
    for (int first = 0; first < rows;) {
        int last = first + 1;
        while (last < rows && row_token[last] == row_token[first]) ++last;
        for (int64_t s = seg_begin[first]; s < seg_end[first]; ++s) {
            const int64_t n = a.order[s];
            const float qc = has_c ? to_float(q[n * a.C + c]) : 0.f;
            const float gc = has_d ? to_float(grad_out[n * a.D + c]) : 0.f;
            const float* p = scratch_p + s * a.max_rows;
            const float* ds = scratch_ds + s * a.max_rows;
#pragma unroll
            for (int r = 0; r < kTileRows; ++r) {
                if (r >= first && r < last) {
                    const int64_t jl = row_local[r];
                    gk[r] += ds[jl] * qc;
                    gv[r] += p[jl] * gc;
                }
            }
        }
        first = last;
    }
#pragma unroll
    for (int r = 0; r < kTileRows; ++r) {
        if (r >= rows) break;
        const int64_t j = j0 + r;
        if (a.tied) {
            if (has_c) grad_keys[j * a.C + c] = from_float<TT>(gk[r] + gv[r]);
        } else {
            if (has_c) grad_keys[j * a.C + c] = from_float<TT>(gk[r]);
            if (has_d) grad_values[j * a.D + c] = from_float<TT>(gv[r]);
        }
    }
}

template <typename QT, typename TT>
const char* forward_typed(const L3Args& a, void* out, float* lse, cudaStream_t stream) {
    const size_t shared = static_cast<size_t>(a.C) * sizeof(float);
    l3_forward_kernel<QT, TT><<<static_cast<unsigned>(a.N), kThreads, shared, stream>>>(a, static_cast<QT*>(out), lse);
    return launch_error();
}

template <typename QT, typename TT>
const char* backward_typed(const L3Args& a, const void* out, const float* lse, const void* grad_out, void* grad_q,
                           void* grad_keys, void* grad_values, float* scratch, cudaStream_t stream) {
    float* scratch_p = scratch;
    float* scratch_ds = scratch + a.N * a.max_rows;
    if (a.N > 0) {
        const size_t shared = static_cast<size_t>(a.C + a.D) * sizeof(float);
        l3_backward_query_kernel<QT, TT><<<static_cast<unsigned>(a.N), kThreads, shared, stream>>>(
            a, static_cast<const QT*>(out), lse, static_cast<const QT*>(grad_out), static_cast<QT*>(grad_q), scratch_p,
            scratch_ds);
        if (const char* e = launch_error()) return e;
    }
    if (a.n_emb > 0) {
        const dim3 grid(static_cast<unsigned>((a.n_emb + kTileRows - 1) / kTileRows),
                        static_cast<unsigned>((std::max(a.C, a.D) + kThreads - 1) / kThreads));
        l3_backward_table_kernel<QT, TT><<<grid, kThreads, 0, stream>>>(
            a, static_cast<const QT*>(grad_out), scratch_p, scratch_ds, static_cast<TT*>(grad_keys),
            static_cast<TT*>(grad_values));
        if (const char* e = launch_error()) return e;
    }
    return nullptr;
}

bool q_bf16(const L3Args& a) { return a.q_type == DType::BFloat16; }
bool table_bf16(const L3Args& a) { return a.table_type == DType::BFloat16; }

}  // namespace

int64_t l3_max_width() { return int64_t{kThreads} * kPerThread; }

const char* l3_forward(const L3Args& a, void* out, float* lse, void* stream) {
    if (a.N == 0) return nullptr;
    const auto s = static_cast<cudaStream_t>(stream);
    using bf16 = __nv_bfloat16;
    if (q_bf16(a)) {
        return table_bf16(a) ? forward_typed<bf16, bf16>(a, out, lse, s) : forward_typed<bf16, float>(a, out, lse, s);
    }
    return table_bf16(a) ? forward_typed<float, bf16>(a, out, lse, s) : forward_typed<float, float>(a, out, lse, s);
}

const char* l3_backward(const L3Args& a, const void* out, const float* lse, const void* grad_out, void* grad_q,
                        void* grad_keys, void* grad_values, float* scratch, void* stream) {
    const auto s = static_cast<cudaStream_t>(stream);
    using bf16 = __nv_bfloat16;
    if (q_bf16(a)) {
        return table_bf16(a)
                   ? backward_typed<bf16, bf16>(a, out, lse, grad_out, grad_q, grad_keys, grad_values, scratch, s)
                   : backward_typed<bf16, float>(a, out, lse, grad_out, grad_q, grad_keys, grad_values, scratch, s);
    }
    return table_bf16(a)
               ? backward_typed<float, bf16>(a, out, lse, grad_out, grad_q, grad_keys, grad_values, scratch, s)
               : backward_typed<float, float>(a, out, lse, grad_out, grad_q, grad_keys, grad_values, scratch, s);
}

}  // namespace l3lab::cuda_kernels
