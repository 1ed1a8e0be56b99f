#include "modules/shapes/gpt_options.h"
#include "modules/shapes/size_check.h"

#include <algorithm>
#include <cctype>
#include <cstdio>

namespace l3lab::modules {

int64_t model_dim_for(int64_t depth, int64_t aspect_ratio, int64_t head_dim) {
    int64_t base_dim = depth * aspect_ratio;
    return (base_dim + head_dim - 1) / head_dim * head_dim;
}

std::vector<int64_t> GPTOptions::window_sizes() const {
    std::vector<int64_t> sizes;
    const int64_t long_window = sequence_len, short_window = sequence_len / 2;
    for (int64_t layer = 0; layer < n_layer; ++layer) {
        char c = static_cast<char>(std::toupper(static_cast<unsigned char>(window_pattern[layer % window_pattern.size()])));
        sizes.push_back(c == 'S' ? short_window : long_window);
    }
    if (!sizes.empty()) sizes.back() = long_window;
    return sizes;
}

std::vector<OptionError> L3LayerOptions::validate(int64_t n_embd, int64_t vocab_size) const {
    std::vector<OptionError> errors;
    if (n_emb < vocab_size)
        errors.push_back({"l3.n_emb", "n_emb " + std::to_string(n_emb) + " is smaller than the vocabulary (" +
                                          std::to_string(vocab_size) + "): every token needs at least one row"});
    if (k_max < 1) errors.push_back({"l3.k_max", "must be at least 1"});
    if (d_up < 1) errors.push_back({"l3.d_up", "must be at least 1"});
    if (tie_kv && d_emb != n_embd)
        errors.push_back({"l3.d_emb", "tied tables use the model width; set tie_kv: false for a value width of " +
                                          std::to_string(d_emb)});
    return errors;
}

std::string size_problem(const GPTOptions& o) {
    using F = long double;  // no overflow: every option is bounded far below 1e300
    const F C = static_cast<F>(o.n_embd), L = static_cast<F>(o.n_layer), V = static_cast<F>(o.padded_vocab_size()),
            T = static_cast<F>(o.sequence_len), kv_heads = static_cast<F>(o.n_kv_head),
            kv = kv_heads * static_cast<F>(o.n_head > 0 ? o.n_embd / o.n_head : o.n_embd);
    // An upper bound of describe(): blocks, embeddings and lm_head, value embeddings on every layer.
    const F dense = 2 * V * C + L * (10 * C * C + 2 * kv * C + kv_heads * GPTOptions::kValueEmbedGateChannels + V * kv + 2);
    auto l3_params = [&](F rows, const L3LayerOptions& l3) {
        const F d_emb = static_cast<F>(l3.d_emb), d_up = static_cast<F>(l3.d_up);
        return rows * (C + d_emb) + d_up * d_emb + C * (d_up + C);
    };
    F with_v_rows = dense;
    for (const auto& p : o.l3) with_v_rows += l3_params(p.options.n_emb > 0 ? static_cast<F>(p.options.n_emb) : V, p.options);
    const F auto_rows = std::max(V, with_v_rows / 1000);  // the `n_emb: auto` rule
    F params = dense, flops = 12 * C * T * L;              // attention: 12 x heads x head_dim x window per layer
    for (const auto& p : o.l3) {
        const F rows = p.options.n_emb > 0 ? static_cast<F>(p.options.n_emb) : auto_rows;
        params += l3_params(rows, p.options);
        flops += 2 * rows / std::max<F>(1, static_cast<F>(o.vocab_size)) * C +
                 2 * static_cast<F>(p.options.d_emb) * static_cast<F>(p.options.d_up) +
                 2 * (static_cast<F>(p.options.d_up) + C) * C;
    }
    flops += 6 * params;
    if (params < kMaxCount && flops < kMaxCount) return "";
    char text[200];
    std::snprintf(text, sizeof text,
                  "the model would have about %.2Le parameters and %.2Le FLOPs per token, more than the %.2e "
                  "l3lab can count (2^62)",
                  params, flops, kMaxCount);
    return text;
}

std::vector<OptionError> GPTOptions::validate() const {
    std::vector<OptionError> errors;
    auto err = [&](std::string field, std::string message) { errors.push_back({std::move(field), std::move(message)}); };
    if (n_head < 1 || n_embd % n_head != 0) err("n_head", "model width must be a multiple of the head count");
    if (n_head >= 1 && head_dim() % 2 != 0) err("head_dim", "head_dim must be even (rotary rotates pairs)");
    if (n_kv_head < 1 || n_kv_head > n_head || n_head % n_kv_head != 0)
        err("n_kv_head", "n_kv_head " + std::to_string(n_kv_head) + " must divide n_head " + std::to_string(n_head));
    if (n_embd < kValueEmbedGateChannels)
        err("n_embd", "model width " + std::to_string(n_embd) + " is below 32, the value-embedding gate's input width");
    if (window_pattern.empty() ||
        !std::all_of(window_pattern.begin(), window_pattern.end(), [](char c) { return std::toupper(c) == 'S' || std::toupper(c) == 'L'; }))
        err("window_pattern", "'" + window_pattern + "' must use only S (half context) and L (full context)");
    for (size_t i = 0; i < l3.size(); ++i) {
        const auto& p = l3[i];
        if (p.after_block < 0 || p.after_block >= n_layer)
            err("l3.after_layers", "L3 after block " + std::to_string(p.after_block) + " is past the last block (" +
                                       std::to_string(n_layer - 1) + ")");
        if (i > 0 && l3[i - 1].after_block == p.after_block)
            err("l3.after_layers", "block " + std::to_string(p.after_block) + " is listed twice");
        for (auto& e : p.options.validate(n_embd, vocab_size)) errors.push_back(std::move(e));
    }
    return errors;
}

}  // namespace l3lab::modules
