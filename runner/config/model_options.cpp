#include "runner/config/model_options.h"

#include <algorithm>

#include "modules/shapes/shapes.h"

namespace l3lab::config {

static modules::GPTOptions dense_options(const Experiment& e, long long depth) {
    modules::GPTOptions o;
    o.sequence_len = e.model.sequence_len;
    o.vocab_size = e.model.vocab_size;
    o.n_layer = depth;
    o.n_embd = modules::model_dim_for(depth, e.model.aspect_ratio, e.model.head_dim);
    o.n_head = o.n_embd / e.model.head_dim;
    o.n_kv_head = o.n_head;
    o.window_pattern = e.model.window_pattern;
    o.softcap = e.model.softcap;
    o.pad_vocab_to = e.model.pad_vocab_to;
    return o;
}

modules::GPTOptions reference_model_options(const Experiment& e, long long depth) { return dense_options(e, depth); }

static std::string config_key(const std::string& field) {
    if (field == "n_head" || field == "n_embd") return "model.aspect_ratio";
    return "model." + field;
}

modules::GPTOptions model_options(const Experiment& e) {
    modules::GPTOptions o = dense_options(e, e.model.depth);
    if (e.model.n_kv_head) o.n_kv_head = *e.model.n_kv_head;

    std::vector<long long> blocks = e.model.l3.after_layers;
    std::sort(blocks.begin(), blocks.end());
    for (long long block : blocks) {
        modules::L3Placement p;
        p.after_block = block;
        p.options.d_up = e.model.l3.d_up.value_or(4 * o.n_embd);
        p.options.d_emb = e.model.l3.d_emb.value_or(o.n_embd);
        p.options.k_max = e.model.l3.k_max;
        p.options.tie_kv = e.model.l3.tie_kv;
        p.options.n_emb = e.model.l3.n_emb.value_or(0);
        o.l3.push_back(p);
    }
    if (!o.l3.empty() && !e.model.l3.n_emb) {
        const int64_t n_emb = modules::auto_l3_n_emb(o);
        for (auto& p : o.l3) p.options.n_emb = n_emb;
    }

    ErrorList errors;
    std::vector<std::string> seen;  // one L3 message per problem, not one per layer
    for (const auto& err : o.validate()) {
        if (std::find(seen.begin(), seen.end(), err.message) != seen.end()) continue;
        seen.push_back(err.message);
        std::string key = config_key(err.field);
        errors.add(e.where(key), key, err.message);
    }
    errors.throw_if_any();
    return o;
}

}  // namespace l3lab::config
