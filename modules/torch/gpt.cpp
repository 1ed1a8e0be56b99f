#include "modules/torch/gpt.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cmath>
#include <optional>

#include "modules/torch/cpu.h"
#include "modules/torch/cuda.h"
#include "modules/torch/l3_segment.h"
#include "modules/torch/registry.h"

namespace l3lab::modules {

using torch::nn::Linear;
using torch::nn::LinearOptions;

// float32 on the CPU: the fused kernels of modules/torch/cpu.h (ATen runs these as chains of elementwise
// ops there); elsewhere, and for bfloat16 activations, ATen's ops.
static bool fused_cpu(const at::Tensor& x) { return x.device().is_cpu() && x.scalar_type() == at::kFloat; }

at::Tensor rms_norm(const at::Tensor& x) { return fused_cpu(x) ? rms_norm_cpu(x) : at::rms_norm(x, {x.size(-1)}); }

static Linear linear(int64_t in, int64_t out) { return Linear(LinearOptions(in, out).bias(false)); }

// Rotate channel halves: y1 = x1 cos + x2 sin, y2 = -x1 sin + x2 cos (x [B, T, H, D]). One fused kernel
// on CUDA.
static at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
    if (x.is_cuda() && cuda_kernels_built()) return rotary_cuda(x, cos, sin);
    if (fused_cpu(x)) return rotary_cpu(x, cos, sin);
    const int64_t d = x.size(3) / 2;
    at::Tensor x1 = x.slice(3, 0, d), x2 = x.slice(3, d);
    at::Tensor y1 = x1 * cos + x2 * sin;
    at::Tensor y2 = x1 * (-sin) + x2 * cos;
    return at::cat({y1, y2}, 3);
}

// ---------------------------------------------------------------------------------------------

at::Tensor windowed_causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window) {
    // q [B, H, T, D]; k, v [B, H, T, D] (kv heads already expanded).
    const int64_t T = q.size(2);
    if (window < 0 || window >= T - 1) return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true);
    at::Tensor i = at::arange(T, q.options().dtype(at::kLong)).unsqueeze(1);
    at::Tensor j = at::arange(T, q.options().dtype(at::kLong)).unsqueeze(0);
    at::Tensor visible = (j <= i).logical_and_(i - j <= window);
    return at::scaled_dot_product_attention(q, k, v, visible, 0.0, /*is_causal=*/false);
}

at::Tensor flash_causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window) {
    const int64_t T = q.size(1);
    auto bf16 = [](const at::Tensor& t) { return t.to(at::kBFloat16).contiguous(); };
    // The reference's window_size = (left, 0); a window covering the sequence is plain causal attention.
    std::optional<int64_t> left, right;
    if (window >= 0 && window < T - 1) {
        left = window;
        right = 0;
    }
    auto result = at::_flash_attention_forward(bf16(q), bf16(k), bf16(v), std::nullopt, std::nullopt, T, T,
                                               /*dropout_p=*/0.0, /*is_causal=*/true, /*return_debug_mask=*/false,
                                               /*scale=*/std::nullopt, left, right);
    return std::get<0>(result);
}

AttentionImpl::AttentionImpl(const GPTOptions& o, int64_t layer)
    : n_head(o.n_head), n_kv_head(o.n_kv_head), head_dim(o.head_dim()) {
    c_q = register_module("c_q", linear(o.n_embd, n_head * head_dim));
    c_k = register_module("c_k", linear(o.n_embd, n_kv_head * head_dim));
    c_v = register_module("c_v", linear(o.n_embd, n_kv_head * head_dim));
    c_proj = register_module("c_proj", linear(o.n_embd, o.n_embd));
    if (o.has_value_embedding(layer))
        ve_gate = register_module("ve_gate", linear(GPTOptions::kValueEmbedGateChannels, n_kv_head));
}

at::Tensor AttentionImpl::forward(const at::Tensor& x, const at::Tensor& ve, const at::Tensor& cos,
                                  const at::Tensor& sin, int64_t window) {
    const int64_t B = x.size(0), T = x.size(1);
    at::Tensor q = c_q(x).view({B, T, n_head, head_dim});
    at::Tensor k = c_k(x).view({B, T, n_kv_head, head_dim});
    at::Tensor v = c_v(x).view({B, T, n_kv_head, head_dim});
    if (ve.defined()) {
        // Value residual: mix in the value embedding with an input-dependent gate in (0, 2) per kv head.
        at::Tensor gate = 2 * at::sigmoid(ve_gate(x.slice(-1, 0, GPTOptions::kValueEmbedGateChannels)));
        v = v + gate.unsqueeze(-1) * ve.view({B, T, n_kv_head, head_dim});
    }
    q = rms_norm(apply_rotary(q, cos, sin));
    k = rms_norm(apply_rotary(k, cos, sin));
    if (x.is_cuda()) return c_proj(flash_causal_attention(q, k, v, window).view({B, T, -1}));
    q = q.transpose(1, 2);
    k = k.transpose(1, 2);
    v = v.transpose(1, 2);
    if (n_kv_head != n_head) {
        k = k.repeat_interleave(n_head / n_kv_head, 1);
        v = v.repeat_interleave(n_head / n_kv_head, 1);
    }
    at::Tensor y = windowed_causal_attention(q, k, v, window);
    y = y.transpose(1, 2).contiguous().view({B, T, -1});
    return c_proj(y);
}

at::Tensor AttentionImpl::forward_cached(const at::Tensor& x, const at::Tensor& ve, const at::Tensor& cos,
                                         const at::Tensor& sin, int64_t window, KVCache& cache, int64_t layer) {
    const int64_t B = x.size(0), t = x.size(1), start = cache.pos, end = start + t;
    TORCH_CHECK(end <= cache.capacity, "KV cache of ", cache.capacity, " tokens is full");
    at::Tensor q = c_q(x).view({B, t, n_head, head_dim});
    at::Tensor k = c_k(x).view({B, t, n_kv_head, head_dim});
    at::Tensor v = c_v(x).view({B, t, n_kv_head, head_dim});
    if (ve.defined()) {
        at::Tensor gate = 2 * at::sigmoid(ve_gate(x.slice(-1, 0, GPTOptions::kValueEmbedGateChannels)));
        v = v + gate.unsqueeze(-1) * ve.view({B, t, n_kv_head, head_dim});
    }
    q = rms_norm(apply_rotary(q, cos, sin)).transpose(1, 2);
    k = rms_norm(apply_rotary(k, cos, sin)).transpose(1, 2);
    cache.k[layer].slice(2, start, end).copy_(k);
    cache.v[layer].slice(2, start, end).copy_(v.transpose(1, 2));
    at::Tensor keys = cache.k[layer].slice(2, 0, end), values = cache.v[layer].slice(2, 0, end);
    if (n_kv_head != n_head) {
        keys = keys.repeat_interleave(n_head / n_kv_head, 1);
        values = values.repeat_interleave(n_head / n_kv_head, 1);
    }
    // Query i (absolute position start + i) sees key j iff j <= start + i and (start + i) - j <= window.
    at::Tensor i = at::arange(start, end, x.options().dtype(at::kLong)).unsqueeze(1);
    at::Tensor j = at::arange(0, end, x.options().dtype(at::kLong)).unsqueeze(0);
    at::Tensor visible = (j <= i).logical_and_(i - j <= window);
    at::Tensor y = at::scaled_dot_product_attention(q, keys, values, visible);
    return c_proj(y.transpose(1, 2).contiguous().view({B, t, -1}));
}

MLPImpl::MLPImpl(int64_t n_embd) {
    c_fc = register_module("c_fc", linear(n_embd, 4 * n_embd));
    c_proj = register_module("c_proj", linear(4 * n_embd, n_embd));
}

at::Tensor MLPImpl::forward(const at::Tensor& x) {
    at::Tensor h = c_fc(x);
    if (h.is_cuda() && cuda_kernels_built()) return c_proj(relu_square_cuda(h));
    return c_proj(fused_cpu(h) ? relu_square_cpu(h) : at::relu(h).square());
}

at::Tensor BlockImpl::forward_cached(const at::Tensor& x_in, const at::Tensor& ve, const at::Tensor& cos,
                                     const at::Tensor& sin, int64_t window, KVCache& cache, int64_t layer) {
    at::Tensor x = x_in + attn->forward_cached(rms_norm(x_in), ve, cos, sin, window, cache, layer);
    return x + mlp(rms_norm(x));
}

BlockImpl::BlockImpl(const GPTOptions& o, int64_t layer) {
    attn = register_module("attn", Attention(o, layer));
    mlp = register_module("mlp", MLP(o.n_embd));
}

at::Tensor BlockImpl::forward(const at::Tensor& x_in, const at::Tensor& ve, const at::Tensor& cos, const at::Tensor& sin,
                              int64_t window) {
    at::Tensor x = x_in + attn(rms_norm(x_in), ve, cos, sin, window);
    return x + mlp(rms_norm(x));
}

// ---------------------------------------------------------------------------------------------

L3LayerImpl::L3LayerImpl(const L3LayerOptions& opts, int64_t n_embd_) : options(opts), n_embd(n_embd_) {
    if (options.d_emb <= 0) options.d_emb = n_embd;  // unset value width: the model's
    const L3LayerOptions& o = options;
    TORCH_CHECK(o.n_emb > 0 && o.d_up > 0, "L3 layer needs n_emb > 0 and d_up > 0 (got ", o.n_emb, ", ", o.d_up, ")");
    TORCH_CHECK(!o.tie_kv || o.d_emb == n_embd, "a tied L3 table has the model's width ", n_embd, ", not d_emb ", o.d_emb);
    if (o.tie_kv) {
        kv_weight = register_parameter("kv_weight", at::empty({o.n_emb, n_embd}));
    } else {
        k_weight = register_parameter("k_weight", at::empty({o.n_emb, n_embd}));
        v_weight = register_parameter("v_weight", at::empty({o.n_emb, o.d_emb}));
    }
    bounds = register_buffer("bounds", at::zeros({1}, at::kLong));
    w_up = register_module("w_up", linear(o.d_emb, o.d_up));
    w_mix = register_module("w_mix", linear(o.d_up + n_embd, n_embd));
}

void L3LayerImpl::set_bounds(const at::Tensor& b) {
    TORCH_CHECK(b.dim() == 1 && b.scalar_type() == at::kLong, "L3 bounds must be a 1-D int64 tensor");
    TORCH_CHECK(b[-1].item<int64_t>() <= options.n_emb, "L3 bounds reach row ", b[-1].item<int64_t>(),
                " but the table has ", options.n_emb, " rows");
    const at::Tensor host = b.to(at::kCPU);
    const at::Tensor rows = host.slice(0, 1) - host.slice(0, 0, -1);
    TORCH_CHECK(rows.numel() == 0 || rows.min().item<int64_t>() >= 0, "L3 bounds must be non-decreasing");
    max_rows = rows.numel() ? rows.max().item<int64_t>() : 0;
    // Keep the registered buffer object (state_dict holds it) and swap its contents.
    bounds.set_data(b.to(keys().device()));
}

at::Tensor L3LayerImpl::forward(const at::Tensor& x, const at::Tensor& token_ids) {
    TORCH_CHECK(bounds.numel() >= 2, "L3 layer used before its bounds were set (set_bounds or load weights)");
    const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
    at::Tensor q = rms_norm(x).reshape({B * T, C});
    at::Tensor a;
    {
        // Under the CPU's bfloat16 autocast (precision: bf16) the segment kernel's small matmuls would come
        // back in bfloat16 into its float32 buffers: the lookup stays in float32 there, as its tables are.
        std::optional<c10::impl::ExcludeDispatchKeyGuard> float32_lookup;
        if (!x.is_cuda()) float32_lookup.emplace(c10::DispatchKey::AutocastCPU);
        a = l3_segment_attention(q, keys(), values(), token_ids.reshape({B * T}), bounds, max_rows);
    }
    at::Tensor up = rms_norm(w_up(a.view({B, T, -1})));
    return w_mix(at::cat({up, x}, -1));
}

// ---------------------------------------------------------------------------------------------

TransformerImpl::TransformerImpl(const GPTOptions& o) {
    wte = register_module("wte", torch::nn::Embedding(o.padded_vocab_size(), o.n_embd));
    h = register_module("h", torch::nn::ModuleList());
    for (int64_t i = 0; i < o.n_layer; ++i) h->push_back(module_builder("block")(o, i));
}

GPTImpl::GPTImpl(const GPTOptions& o) : options(o), windows_(o.window_sizes()) {
    transformer = register_module("transformer", Transformer(o));
    lm_head = register_module("lm_head", linear(o.n_embd, o.padded_vocab_size()));
    resid_lambdas = register_parameter("resid_lambdas", at::ones({o.n_layer}));
    x0_lambdas = register_parameter("x0_lambdas", at::zeros({o.n_layer}));
    std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> ve, l3;
    for (int64_t i = 0; i < o.n_layer; ++i)
        if (o.has_value_embedding(i))
            ve.emplace_back(std::to_string(i), torch::nn::Embedding(o.padded_vocab_size(), o.kv_dim()).ptr());
    for (const auto& placement : o.l3)
        l3.emplace_back(std::to_string(placement.after_block), module_builder("l3")(o, placement.after_block));
    value_embeds = register_module("value_embeds", torch::nn::ModuleDict(ve));
    l3_layers = register_module("l3_layers", torch::nn::ModuleDict(l3));
    build_rotary(at::kCPU);
}

void GPTImpl::build_rotary(const at::Device& device) {
    // As the reference: 10x the sequence length, base 10000, halves split, rounded to bfloat16.
    const int64_t head_dim = options.head_dim(), seq = options.sequence_len * 10;
    auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
    at::Tensor channel = at::arange(0, head_dim, 2, f32);
    at::Tensor inv_freq = at::reciprocal(at::pow(10000, channel / static_cast<double>(head_dim)));
    at::Tensor freqs = at::outer(at::arange(seq, f32), inv_freq);
    cos = freqs.cos().to(at::kBFloat16).unsqueeze(0).unsqueeze(2);
    sin = freqs.sin().to(at::kBFloat16).unsqueeze(0).unsqueeze(2);
}

void GPTImpl::init_weights() {
    torch::NoGradGuard no_grad;
    auto& wte = transformer->wte->weight;
    wte.normal_(0.0, 1.0);
    lm_head->weight.normal_(0.0, 0.001);
    // Uniform with the same standard deviation as N(0, 1/C): bound sqrt(3) / sqrt(C).
    const double s = std::pow(3.0, 0.5) * std::pow(static_cast<double>(options.n_embd), -0.5);
    for (const auto& module : *transformer->h) {
        auto block = module->as<BlockImpl>();
        block->attn->c_q->weight.uniform_(-s, s);
        block->attn->c_k->weight.uniform_(-s, s);
        block->attn->c_v->weight.uniform_(-s, s);
        block->attn->c_proj->weight.zero_();
        block->mlp->c_fc->weight.uniform_(-s, s);
        block->mlp->c_proj->weight.zero_();
    }
    resid_lambdas.fill_(1.0);
    x0_lambdas.fill_(0.1);
    for (const auto& item : value_embeds->items()) item.second->as<torch::nn::EmbeddingImpl>()->weight.uniform_(-s, s);
    for (const auto& module : *transformer->h) {
        auto block = module->as<BlockImpl>();
        if (!block->attn->ve_gate.is_empty()) block->attn->ve_gate->weight.zero_();
    }
    for (const auto& item : l3_layers->items()) {
        auto l3 = item.second->as<L3LayerImpl>();
        if (l3->options.tie_kv) {
            l3->kv_weight.normal_(0.0, 1.0);
        } else {
            l3->k_weight.normal_(0.0, 1.0);
            l3->v_weight.normal_(0.0, 1.0);
        }
        l3->w_up->weight.uniform_(-s, s);
        l3->w_mix->weight.zero_();
    }
    build_rotary(wte.device());
}

void GPTImpl::cast_embeddings_to_bf16() {
    torch::NoGradGuard no_grad;
    auto cast = [](at::Tensor& p) { p.set_data(p.to(at::kBFloat16)); };
    cast(transformer->wte->weight);
    for (const auto& item : value_embeds->items()) cast(item.second->as<torch::nn::EmbeddingImpl>()->weight);
    for (const auto& item : l3_layers->items()) {
        auto l3 = item.second->as<L3LayerImpl>();
        if (l3->options.tie_kv) {
            cast(l3->kv_weight);
        } else {
            cast(l3->k_weight);
            cast(l3->v_weight);
        }
    }
}

at::Tensor GPTImpl::hidden(const at::Tensor& idx, KVCache* cache) {
    const int64_t T = idx.size(1), start = cache ? cache->pos : 0;
    TORCH_CHECK(start + T <= cos.size(1), "sequence of ", start + T, " tokens is longer than the rotary cache (", cos.size(1), ")");
    if (cos.device() != idx.device()) build_rotary(idx.device());
    at::Tensor c = cos.slice(1, start, start + T), s = sin.slice(1, start, start + T);
    at::Tensor x = rms_norm(transformer->wte(idx));
    const at::Tensor x0 = x;
    for (int64_t i = 0; i < options.n_layer; ++i) {
        x = fused_cpu(x) ? residual_mix_cpu(x, x0, resid_lambdas[i], x0_lambdas[i])
                         : resid_lambdas[i] * x + x0_lambdas[i] * x0;
        const std::string key = std::to_string(i);
        at::Tensor ve;
        if (value_embeds->contains(key)) ve = value_embeds[key]->as<torch::nn::EmbeddingImpl>()->forward(idx);
        auto block = transformer->h[i]->as<BlockImpl>();
        x = cache ? block->forward_cached(x, ve, c, s, windows_[i], *cache, i) : block->forward(x, ve, c, s, windows_[i]);
        if (l3_layers->contains(key)) x = x + l3_layers[key]->as<L3LayerImpl>()->forward(x, idx);
    }
    return rms_norm(x);
}

at::Tensor GPTImpl::logits_from(const at::Tensor& h) {
    at::Tensor logits = lm_head(h).slice(-1, 0, options.vocab_size).to(at::kFloat);
    return options.softcap * at::tanh(logits / options.softcap);
}

at::Tensor GPTImpl::forward(const at::Tensor& idx) {
    const Bf16Autocast autocast(idx.device().type(), idx.is_cuda() || cpu_bf16_);
    return logits_from(hidden(idx));
}

at::Tensor GPTImpl::forward_cached(const at::Tensor& idx, KVCache& cache) {
    const Bf16Autocast autocast(idx.device().type(), idx.is_cuda() || cpu_bf16_);
    at::Tensor logits = logits_from(hidden(idx, &cache));
    cache.pos += idx.size(1);
    return logits;
}

KVCache GPTImpl::new_cache(int64_t batch, int64_t capacity) const {
    KVCache cache;
    cache.capacity = capacity;
    auto opts = lm_head->weight.options();
    for (int64_t i = 0; i < options.n_layer; ++i) {
        cache.k.push_back(at::zeros({batch, options.n_kv_head, capacity, options.head_dim()}, opts));
        cache.v.push_back(at::zeros({batch, options.n_kv_head, capacity, options.head_dim()}, opts));
    }
    return cache;
}

at::Tensor GPTImpl::loss(const at::Tensor& idx, const at::Tensor& targets, LossReduction reduction) {
    const bool fused_cuda = idx.is_cuda() && cuda_kernels_built();
    if (options.softcap > 0 && (fused_cuda || idx.device().is_cpu())) {
        // The lm_head output straight into the fused soft-cap + cross-entropy kernel (CUDA: bfloat16 in,
        // CPU: float32): the same float32 arithmetic as logits_from() + cross_entropy, without the
        // [B*T, V] float32 soft-capped logits, their log-softmax and the backward's intermediates.
        at::Tensor logits;
        {
            const Bf16Autocast autocast(idx.device().type(), idx.is_cuda() || cpu_bf16_);
            logits = lm_head(hidden(idx));
        }
        logits = logits.view({-1, logits.size(-1)});
        at::Tensor flat_targets = targets.reshape({-1});
        at::Tensor losses = fused_cuda ? softcap_cross_entropy_cuda(logits, flat_targets, options.vocab_size,
                                                                    options.softcap)
                                       : softcap_cross_entropy_cpu(logits.to(at::kFloat), flat_targets,
                                                                   options.vocab_size, options.softcap);
        if (reduction == LossReduction::None) return losses;
        return losses.sum() / flat_targets.ne(-1).sum();  // mean over counted targets, as ignore_index=-1
    }
    at::Tensor logits = forward(idx);
    return at::cross_entropy_loss(logits.view({-1, logits.size(-1)}), targets.reshape({-1}), {},
                                  reduction == LossReduction::Mean ? at::Reduction::Mean : at::Reduction::None,
                                  /*ignore_index=*/-1);
}

std::vector<std::pair<std::string, Role>> GPTImpl::parameter_roles() const {
    std::vector<std::pair<std::string, Role>> roles;
    for (const auto& p : describe(options).params) roles.emplace_back(p.name, p.role);
    return roles;
}

}  // namespace l3lab::modules
