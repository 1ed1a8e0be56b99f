#include "runner/config/model_options.h"

#include <algorithm>

#include "modules/shapes/shapes.h"
#include "modules/shapes/size_check.h"

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

// L3 placements of an explicit graph; n_emb 0 marks "auto" until the rule is applied.
static std::vector<modules::L3Placement> graph_placements(const Experiment& e, int64_t n_embd, ErrorList& errors) {
    std::vector<modules::L3Placement> placements;
    long long blocks = 0;
    for (const auto& entry : e.model.graph) {
        if (entry.type == "block") {
            blocks += entry.repeat;
            continue;
        }
        if (blocks == 0) {
            errors.add(e.where(entry.path), entry.path, "an L3 layer must follow a block (it is applied after one)");
            continue;
        }
        if (!placements.empty() && placements.back().after_block == blocks - 1) {
            errors.add(e.where(entry.path), entry.path, "two L3 layers after block " + std::to_string(blocks - 1));
            continue;
        }
        modules::L3Placement p;
        p.after_block = blocks - 1;
        const auto& l3 = e.model.l3;
        p.options.tie_kv = entry.tie_kv.value_or(l3.tie_kv);
        p.options.k_max = entry.k_max.value_or(l3.k_max);
        p.options.d_up = (entry.d_up ? *entry.d_up : l3.d_up).value_or(4 * n_embd);
        p.options.d_emb = (entry.d_emb ? *entry.d_emb : l3.d_emb).value_or(n_embd);
        p.options.n_emb = (entry.n_emb ? *entry.n_emb : l3.n_emb).value_or(0);
        placements.push_back(p);
    }
    if (blocks != e.model.depth)
        errors.add(e.where("model.graph"), "model.graph",
                   "the graph has " + std::to_string(blocks) + " blocks but model.depth is " +
                       std::to_string(e.model.depth) + " (depth also sets the width: set both)");
    if (!e.model.l3.after_layers.empty())
        errors.add(e.where("model.l3.after_layers"), "model.l3.after_layers",
                   "place L3 layers either here or in model.graph, not both");
    return placements;
}

modules::GPTOptions model_options(const Experiment& e) {
    modules::GPTOptions o = dense_options(e, e.model.depth);
    if (e.model.n_kv_head) o.n_kv_head = *e.model.n_kv_head;
    ErrorList errors;

    if (!e.model.graph.empty()) {
        o.l3 = graph_placements(e, o.n_embd, errors);
        errors.throw_if_any();
    } else {
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
    }
    // Counting a model too large for 64-bit counters would overflow (describe() runs next).
    if (std::string problem = modules::size_problem(o); !problem.empty()) {
        errors.add(e.where_any({"model.depth", "model.aspect_ratio", "model.vocab_size", "model.l3.n_emb",
                                "model.sequence_len", "model.head_dim", "model.n_kv_head", "model.l3.d_up",
                                "model.l3.d_emb", "model.pad_vocab_to", "model.graph"}),
                   "model", problem);
        errors.throw_if_any();
    }
    // `auto` n_emb: the reference's rule, on the model with every table at V rows.
    if (std::any_of(o.l3.begin(), o.l3.end(), [](const auto& p) { return p.options.n_emb == 0; })) {
        const int64_t n_emb = modules::auto_l3_n_emb(o);
        for (auto& p : o.l3)
            if (p.options.n_emb == 0) p.options.n_emb = n_emb;
    }

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
