#include "modules/shapes/shapes.h"

#include <stdexcept>

namespace l3lab::modules {

const char* role_name(Role role) {
    switch (role) {
        case Role::TokenEmbedding: return "token_embedding";
        case Role::ValueEmbedding: return "value_embedding";
        case Role::LmHead: return "lm_head";
        case Role::Matrix: return "matrix";
        case Role::ResidLambda: return "resid_lambda";
        case Role::X0Lambda: return "x0_lambda";
        case Role::L3Table: return "l3_table";
        case Role::L3Matrix: return "l3_matrix";
    }
    return "?";
}

int64_t ParamShape::numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

static std::vector<ParamShape> block_shapes(const GPTOptions& o, int64_t layer, const std::string& prefix) {
    const int64_t C = o.n_embd, kv = o.kv_dim();
    std::vector<ParamShape> p = {
        {prefix + "attn.c_q.weight", {o.n_head * o.head_dim(), C}, Role::Matrix},
        {prefix + "attn.c_k.weight", {kv, C}, Role::Matrix},
        {prefix + "attn.c_v.weight", {kv, C}, Role::Matrix},
        {prefix + "attn.c_proj.weight", {C, C}, Role::Matrix},
    };
    if (o.has_value_embedding(layer))
        p.push_back({prefix + "attn.ve_gate.weight", {o.n_kv_head, GPTOptions::kValueEmbedGateChannels}, Role::Matrix});
    p.push_back({prefix + "mlp.c_fc.weight", {4 * C, C}, Role::Matrix});
    p.push_back({prefix + "mlp.c_proj.weight", {C, 4 * C}, Role::Matrix});
    return p;
}

static std::vector<ParamShape> l3_shapes(const GPTOptions& o, int64_t index, const std::string& prefix) {
    const L3LayerOptions* l3 = nullptr;
    for (const auto& p : o.l3)
        if (p.after_block == index) l3 = &p.options;
    if (!l3) throw std::invalid_argument("no L3 layer after block " + std::to_string(index));
    const int64_t C = o.n_embd;
    std::vector<ParamShape> p;
    if (l3->tie_kv) {
        p.push_back({prefix + "kv_weight", {l3->n_emb, C}, Role::L3Table});
    } else {
        p.push_back({prefix + "k_weight", {l3->n_emb, C}, Role::L3Table});
        p.push_back({prefix + "v_weight", {l3->n_emb, l3->d_emb}, Role::L3Table});
    }
    p.push_back({prefix + "w_up.weight", {l3->d_up, l3->d_emb}, Role::L3Matrix});
    p.push_back({prefix + "w_mix.weight", {C, l3->d_up + C}, Role::L3Matrix});
    return p;
}

const std::map<std::string, ShapeBuilder>& shape_registry() {
    static const std::map<std::string, ShapeBuilder> registry = {{"block", block_shapes}, {"l3", l3_shapes}};
    return registry;
}

const ShapeBuilder& shape_builder(const std::string& type) {
    const auto& registry = shape_registry();
    auto it = registry.find(type);
    if (it == registry.end()) {
        std::string names;
        for (const auto& [name, _] : registry) names += (names.empty() ? "" : ", ") + name;
        throw std::invalid_argument("unknown module type '" + type + "' (known: " + names + ")");
    }
    return it->second;
}

ParamCounts count_params(const std::vector<ParamShape>& params) {
    ParamCounts c;
    for (const auto& p : params) {
        const int64_t n = p.numel();
        switch (p.role) {
            case Role::TokenEmbedding: c.wte += n; break;
            case Role::ValueEmbedding: c.value_embeds += n; break;
            case Role::LmHead: c.lm_head += n; break;
            case Role::Matrix: c.transformer_matrices += n; break;
            case Role::ResidLambda:
            case Role::X0Lambda: c.scalars += n; break;
            case Role::L3Table: c.l3_embeds += n; break;
            case Role::L3Matrix: c.l3_matrices += n; break;
        }
        c.total += n;
    }
    return c;
}

// Mirrors GPT.estimate_flops() at b7629ef term by term, including its float arithmetic for the L3
// term (avg_k = n_emb / vocab_size, int() of the sum) so that target_flops horizons agree exactly.
int64_t estimate_flops(const GPTOptions& o, const std::vector<ParamShape>& params) {
    int64_t nparams = 0, exclude = 0;
    for (const auto& p : params) {
        nparams += p.numel();
        if (p.role == Role::TokenEmbedding || p.role == Role::ValueEmbedding || p.role == Role::L3Table ||
            p.role == Role::ResidLambda || p.role == Role::X0Lambda)
            exclude += p.numel();
    }
    const int64_t h = o.n_head, q = o.head_dim(), t = o.sequence_len;
    int64_t attn_flops = 0;
    for (int64_t window : o.window_sizes()) {
        int64_t effective = window < 0 ? t : std::min(window, t);
        attn_flops += 12 * h * q * effective;
    }
    int64_t l3_flops = 0;
    if (!o.l3.empty()) {
        const int64_t C = o.n_embd;
        auto per_layer = [&](const L3LayerOptions& l3) {
            double avg_k = static_cast<double>(l3.n_emb) / static_cast<double>(o.vocab_size);
            return 2 * avg_k * C + static_cast<double>(2 * l3.d_emb * l3.d_up) + static_cast<double>(2 * (l3.d_up + C) * C);
        };
        bool uniform = true;
        for (const auto& p : o.l3) {
            const auto& a = p.options;
            const auto& b = o.l3.front().options;
            uniform = uniform && a.n_emb == b.n_emb && a.d_up == b.d_up && a.d_emb == b.d_emb;
        }
        if (uniform) {
            // The reference's own form: int(per_l3 * number_of_layers).
            l3_flops = static_cast<int64_t>(per_layer(o.l3.front().options) * static_cast<double>(o.l3.size()));
        } else {
            double sum = 0.0;
            for (const auto& p : o.l3) sum += per_layer(p.options);
            l3_flops = static_cast<int64_t>(sum);
        }
    }
    return 6 * (nparams - exclude) + attn_flops + l3_flops;
}

ModelShape describe(const GPTOptions& o) {
    ModelShape m;
    auto append = [&](std::vector<ParamShape> more) {
        for (auto& p : more) m.params.push_back(std::move(p));
    };
    const int64_t V = o.padded_vocab_size(), C = o.n_embd;
    // named_parameters() order: GPT's own parameters first, then submodules in registration order.
    m.params.push_back({"resid_lambdas", {o.n_layer}, Role::ResidLambda});
    m.params.push_back({"x0_lambdas", {o.n_layer}, Role::X0Lambda});
    m.params.push_back({"transformer.wte.weight", {V, C}, Role::TokenEmbedding});
    for (int64_t i = 0; i < o.n_layer; ++i)
        append(shape_builder("block")(o, i, "transformer.h." + std::to_string(i) + "."));
    m.params.push_back({"lm_head.weight", {V, C}, Role::LmHead});
    for (int64_t i = 0; i < o.n_layer; ++i)
        if (o.has_value_embedding(i))
            m.params.push_back({"value_embeds." + std::to_string(i) + ".weight", {V, o.kv_dim()}, Role::ValueEmbedding});
    for (const auto& placement : o.l3)
        append(shape_builder("l3")(o, placement.after_block, "l3_layers." + std::to_string(placement.after_block) + "."));
    m.counts = count_params(m.params);
    m.flops_per_token = estimate_flops(o, m.params);
    return m;
}

int64_t auto_l3_n_emb(GPTOptions options) {
    for (auto& placement : options.l3)
        if (placement.options.n_emb <= 0) placement.options.n_emb = options.vocab_size;
    const int64_t total = count_params(describe(options).params).total;
    return std::max(options.vocab_size, total / 1000);
}

}  // namespace l3lab::modules
