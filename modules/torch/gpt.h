// nanochat's GPT with L3 layers as libtorch modules. Parameter names are the reference's state_dict
// names (transformer.h.3.attn.c_q.weight, value_embeds.1.weight, l3_layers.3.kv_weight, ...), so
// weights move between l3lab and the Python reference unchanged. Options come from
// modules/shapes/gpt_options.h, the same structs the shape side counts from.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/moduledict.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <map>
#include <string>

#include "modules/shapes/gpt_options.h"
#include "modules/shapes/shapes.h"

namespace l3lab::modules {

at::Tensor rms_norm(const at::Tensor& x);  // parameter-free, torch's default eps, over the last dim

// Keys and values of every layer for incremental decoding: [B, n_kv_head, capacity, head_dim] each.
struct KVCache {
    std::vector<at::Tensor> k, v;
    int64_t pos = 0;       // tokens already in the cache
    int64_t capacity = 0;
};

// --- attention ---------------------------------------------------------------------------------
struct AttentionImpl : torch::nn::Module {
    AttentionImpl(const GPTOptions& options, int64_t layer);
    // x [B, T, C]; ve [B, T, kv_dim] or undefined; cos/sin [1, T, 1, head_dim/2] bf16; window = left window.
    at::Tensor forward(const at::Tensor& x, const at::Tensor& ve, const at::Tensor& cos, const at::Tensor& sin,
                       int64_t window);
    // The same for new tokens at positions cache.pos.., attending over the cached keys of `layer` too.
    at::Tensor forward_cached(const at::Tensor& x, const at::Tensor& ve, const at::Tensor& cos, const at::Tensor& sin,
                              int64_t window, KVCache& cache, int64_t layer);

    int64_t n_head, n_kv_head, head_dim;
    torch::nn::Linear c_q{nullptr}, c_k{nullptr}, c_v{nullptr}, c_proj{nullptr}, ve_gate{nullptr};
};
TORCH_MODULE(Attention);

// Causal attention where key j is visible to query i iff j <= i and i - j <= window, on any device:
// windows at least as long as the sequence use the causal kernel, others one [T, T] mask for this call.
at::Tensor windowed_causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window);

// The same on CUDA through libtorch's flash-attention kernel with a left window (no mask tensor), in
// the flash layout: q [B, T, H, D], k and v [B, T, H_kv, D] (H a multiple of H_kv: GQA without copies).
// Inputs are cast to bfloat16; returns [B, T, H, D] bfloat16.
at::Tensor flash_causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window);

// --- MLP and block ------------------------------------------------------------------------------
struct MLPImpl : torch::nn::Module {
    explicit MLPImpl(int64_t n_embd);
    at::Tensor forward(const at::Tensor& x);  // c_proj(relu(c_fc(x))^2)
    torch::nn::Linear c_fc{nullptr}, c_proj{nullptr};
};
TORCH_MODULE(MLP);

struct BlockImpl : torch::nn::Module {
    BlockImpl(const GPTOptions& options, int64_t layer);
    at::Tensor forward(const at::Tensor& x, const at::Tensor& ve, const at::Tensor& cos, const at::Tensor& sin,
                       int64_t window);
    at::Tensor forward_cached(const at::Tensor& x, const at::Tensor& ve, const at::Tensor& cos, const at::Tensor& sin,
                              int64_t window, KVCache& cache, int64_t layer);
    Attention attn{nullptr};
    MLP mlp{nullptr};
};
TORCH_MODULE(Block);

// --- L3 -----------------------------------------------------------------------------------------
struct L3LayerImpl : torch::nn::Module {
    L3LayerImpl(const L3LayerOptions& options, int64_t n_embd);
    // x [B, T, C], token_ids [B, T] -> delta [B, T, C], added to the residual by the caller.
    at::Tensor forward(const at::Tensor& x, const at::Tensor& token_ids);
    void set_bounds(const at::Tensor& bounds);  // [V+1] int64, cumulative rows per token; sets max_rows
    at::Tensor keys() const { return options.tie_kv ? kv_weight : k_weight; }
    at::Tensor values() const { return options.tie_kv ? kv_weight : v_weight; }

    L3LayerOptions options;
    int64_t n_embd;
    at::Tensor kv_weight, k_weight, v_weight, bounds;
    int64_t max_rows = 0;  // the most rows any token has (bounds is on the device; this stays on the host)
    torch::nn::Linear w_up{nullptr}, w_mix{nullptr};
};
TORCH_MODULE(L3Layer);

// --- GPT ----------------------------------------------------------------------------------------
struct TransformerImpl : torch::nn::Module {
    explicit TransformerImpl(const GPTOptions& options);
    torch::nn::Embedding wte{nullptr};
    torch::nn::ModuleList h{nullptr};
};
TORCH_MODULE(Transformer);

enum class LossReduction { Mean, None };

struct GPTImpl : torch::nn::Module {
    explicit GPTImpl(const GPTOptions& options);

    // idx [B, T] int64 -> logits [B, T, V] float32 (cropped to the real vocabulary, soft-capped).
    // On CUDA every forward runs under bfloat16 autocast, as the reference's base_train (docs/cuda.md); on
    // the CPU only after set_cpu_bf16(true) (`precision: bf16`), else in float32 as the reference.
    at::Tensor forward(const at::Tensor& idx);
    // Incremental decoding: logits [B, t, V] for `idx` [B, t] continuing the tokens already in `cache`
    // (same result as forward() over the whole sequence). new_cache() sizes a cache for `capacity` tokens.
    at::Tensor forward_cached(const at::Tensor& idx, KVCache& cache);
    KVCache new_cache(int64_t batch, int64_t capacity) const;
    // Cross-entropy against targets (ignore index -1): a scalar (Mean) or [B*T] (None).
    at::Tensor loss(const at::Tensor& idx, const at::Tensor& targets, LossReduction reduction = LossReduction::Mean);

    // The reference's init_weights(), call for call, so a seeded CPU init matches the reference's.
    void init_weights();
    // Embedding tables (wte, value embeddings, L3 tables) in bfloat16, as the reference does on CUDA.
    void cast_embeddings_to_bf16();
    // bfloat16 autocast on the CPU too (matmuls in bfloat16, weights and everything else float32).
    void set_cpu_bf16(bool on) { cpu_bf16_ = on; }
    // Every parameter with its reference name and optimizer role, in named_parameters() order.
    std::vector<std::pair<std::string, Role>> parameter_roles() const;

    GPTOptions options;
    Transformer transformer{nullptr};
    torch::nn::Linear lm_head{nullptr};
    at::Tensor resid_lambdas, x0_lambdas;
    torch::nn::ModuleDict value_embeds{nullptr};
    torch::nn::ModuleDict l3_layers{nullptr};
    at::Tensor cos, sin;  // rotary tables [1, 10*T, 1, head_dim/2] bf16, not saved (as the reference)

private:
    at::Tensor hidden(const at::Tensor& idx, KVCache* cache = nullptr);  // up to the final rms_norm
    at::Tensor logits_from(const at::Tensor& hidden);
    void build_rotary(const at::Device& device);
    std::vector<int64_t> windows_;
    bool cpu_bf16_ = false;
};
TORCH_MODULE(GPT);

}  // namespace l3lab::modules
