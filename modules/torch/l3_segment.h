// The L3 lookup as a ragged segment attention: token t's query attends over its own rows
// bounds[t] .. bounds[t+1]-1 of the key table and aggregates the same rows of the value table.
// Occurrences are grouped by token id, so each distinct token's rows are read once per call and no
// [tokens, k_max, C] tensor is ever formed: memory is O(tokens·C + score entries).
#pragma once

#include <ATen/core/Tensor.h>

namespace l3lab::modules {

// q [N, C] (already rms-normed), keys [n_emb, C], values [n_emb, D] (the same tensor when tied),
// ids [N] int64 token ids, bounds [V+1] int64. Returns [N, D]. Differentiable in q, keys and values.
// CUDA tensors run the CUDA kernel (modules/torch/cuda.h); there max_rows (>= every token's row count,
// known to the L3 layer) sizes the backward scratch without a host sync, and -1 computes it from bounds.
at::Tensor l3_segment_attention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                                const at::Tensor& ids, const at::Tensor& bounds, int64_t max_rows = -1);

// The shape and dtype checks both kernels (CPU and CUDA) make of their inputs; throws c10::Error.
void check_segment_shapes(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                          const at::Tensor& ids, const at::Tensor& bounds);

// Reference semantics computed the reference's way (gather + pad to k_max + masked softmax). For tests
// and for the benchmark's "padded gather" column; memory grows as N·k_max·C.
at::Tensor l3_padded_attention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                               const at::Tensor& ids, const at::Tensor& bounds);

}  // namespace l3lab::modules
