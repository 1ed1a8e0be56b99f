#include "runner/config/experiment.h"

#include <algorithm>
#include <filesystem>

#include "runner/config/schema.h"

namespace fs = std::filesystem;

namespace l3lab::config {

Location Experiment::where(const std::string& key) const { return location_of(tree, key); }

Location Experiment::where_any(const std::vector<std::string>& keys) const {
    for (const auto& key : keys) {
        Location at = where(key);
        if (at.line > 0 && (at.file == source || at.file.rfind("<override", 0) == 0)) return at;
    }
    return where(keys.front());
}

static std::optional<long long> int_or_auto(const Node& tree, const std::string& key) {
    if (is_keyword(tree, key, "auto")) return std::nullopt;
    return get_int(tree, key);
}

static void check_name(const Node& tree, ErrorList& errors) {
    const std::string name = get_string(tree, "name");
    if (name.empty() || name.size() > 200 ||
        name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != std::string::npos ||
        name == "." || name == "..")
        errors.add(location_of(tree, "name"), "name",
                   "'" + name + "' cannot name a run directory: use letters, digits, '.', '_' and '-'");
}

static void read_optimizer_groups(const Node& list, OptimizerConfig& out, ErrorList& errors) {
    static const std::vector<std::string> roles = {"token_embedding", "value_embedding", "lm_head",  "matrix",
                                                   "resid_lambda",    "x0_lambda",       "l3_table", "l3_matrix"};
    std::vector<std::string> seen;
    for (size_t i = 0; i < list.items.size(); ++i) {
        const Node& item = list.items[i];
        OptimizerGroupConfig g;
        g.path = "optimizer.groups[" + std::to_string(i) + "]";
        auto text = [&](const char* key) -> const Node* { return item.find(key); };
        if (auto n = text("name")) g.name = n->scalar;
        if (auto n = text("kind")) g.kind = n->scalar;
        if (auto n = text("lr")) g.lr = std::stod(n->scalar);
        if (auto n = text("lr_scale")) g.lr_scale = n->scalar;
        if (auto n = text("beta1")) g.beta1 = std::stod(n->scalar);
        if (auto n = text("beta2")) g.beta2 = std::stod(n->scalar);
        if (auto n = text("eps")) g.eps = std::stod(n->scalar);
        if (auto n = text("ns_steps")) g.ns_steps = std::stoll(n->scalar);
        if (auto n = text("weight_decay"))
            g.weight_decay = n->scalar_type == ScalarType::Keyword ? std::optional<double>{} : std::stod(n->scalar);
        else if (g.kind == "adamw")
            g.weight_decay = 0.0;
        if (auto n = text("roles"))
            for (const auto& r : n->items) {
                if (std::find(roles.begin(), roles.end(), r.scalar) == roles.end()) {
                    std::string message = "unknown role '" + r.scalar + "'";
                    if (std::string near = did_you_mean(r.scalar, roles); !near.empty()) message += "; did you mean '" + near + "'?";
                    else message += " (roles: token_embedding, value_embedding, lm_head, matrix, resid_lambda, x0_lambda, l3_table, l3_matrix)";
                    errors.add(r.where, g.path + ".roles", message);
                }
                g.roles.push_back(r.scalar);
            }
        if (auto n = text("names"))
            for (const auto& r : n->items) g.names.push_back(r.scalar);
        if (g.roles.empty() && g.names.empty() && item.find("name"))
            errors.add(item.where, g.path, "selects nothing: give roles and/or names");
        // Options that belong to the other kind are mistakes, not silently ignored settings.
        const std::vector<const char*> only_adamw = {"beta1", "eps"}, only_muon = {"ns_steps"};
        for (const char* key : g.kind == "muon" ? only_adamw : only_muon)
            if (const Node* n = text(key))
                errors.add(n->key_where, g.path + "." + key, std::string("a ") + g.kind + " group has no " + key);
        if (g.kind == "adamw" && !g.weight_decay)
            errors.add(text("weight_decay")->where, g.path + ".weight_decay", "`scaled` applies to muon groups only");
        if (std::find(seen.begin(), seen.end(), g.name) != seen.end())
            errors.add(text("name")->where, g.path + ".name", "another group is already named '" + g.name + "'");
        seen.push_back(g.name);
        out.groups.push_back(std::move(g));
    }
}

// Checks that involve more than one key, or a key's shape beyond its type.
static void check_cross_fields(const Experiment& e, ErrorList& errors) {
    const std::string& pattern = e.model.window_pattern;
    if (pattern.empty() || pattern.find_first_not_of("SLsl") != std::string::npos)
        errors.add(e.where("model.window_pattern"), "model.window_pattern",
                   "'" + pattern + "' must be a non-empty string of S (half context) and L (full context)");
    if (e.model.head_dim % 2 != 0)
        errors.add(e.where("model.head_dim"), "model.head_dim", "must be even: rotary embeddings rotate pairs of channels");
    for (long long block : e.model.l3.after_layers)
        if (block >= e.model.depth)
            errors.add(e.where("model.l3.after_layers"), "model.l3.after_layers",
                       "L3 after block " + std::to_string(block) + " is past the last block (depth " +
                           std::to_string(e.model.depth) + " has blocks 0.." + std::to_string(e.model.depth - 1) + ")");
    if (e.model.l3.tie_kv && e.model.l3.d_emb)
        errors.add(e.where("model.l3.d_emb"), "model.l3.d_emb",
                   "a tied table has the model's width; set model.l3.tie_kv: false to give values their own width");
    if (e.horizon.target_param_data_ratio == 0.0)
        errors.add(e.where("horizon.target_param_data_ratio"), "horizon.target_param_data_ratio",
                   "must not be 0: batch size and weight decay are scaled by it (use a negative value to turn the "
                   "horizon rule off)");
    if (e.horizon.num_iterations <= 0 && e.horizon.target_flops <= 0 && e.horizon.target_param_data_ratio < 0)
        errors.add(e.where_any({"horizon.target_param_data_ratio", "horizon.target_flops", "horizon.num_iterations"}),
                   "horizon",
                   "no training horizon: set num_iterations, target_flops or a positive target_param_data_ratio");
    if (e.schedule.warmup_ratio + e.schedule.warmdown_ratio > 1.0)
        errors.add(e.where_any({"schedule.warmup_ratio", "schedule.warmdown_ratio"}), "schedule",
                   "warmup_ratio + warmdown_ratio exceeds 1 (" + format_float(e.schedule.warmup_ratio) + " + " +
                       format_float(e.schedule.warmdown_ratio) + ")");
}

Experiment load_experiment(const std::string& path, const std::vector<std::string>& overrides) {
    ErrorList errors;
    Node tree = load_with_extends(path, errors);
    for (size_t i = 0; i < overrides.size(); ++i) apply_override(tree, overrides[i], static_cast<int>(i + 1), errors);
    errors.throw_if_any();  // unreadable files make every later message noise

    tree.where = {path, 0, 0};
    if (!tree.find("name")) {
        Node name = Node::make_scalar(fs::path(path).stem().string(), {path, 0, 0});
        name.quoted = true;
        tree.set("name", std::move(name));
    }
    validate_and_complete(tree, experiment_schema(), errors);
    errors.throw_if_any();
    check_name(tree, errors);

    Experiment e;
    e.source = path;
    e.name = get_string(tree, "name");
    e.seed = get_int(tree, "seed");
    e.device = get_string(tree, "device");
    e.precision = get_string(tree, "precision");
    if (!is_keyword(tree, "device_peak_flops", "auto")) e.device_peak_flops = get_float(tree, "device_peak_flops");

    ModelConfig& m = e.model;
    m.vocab_size = get_int(tree, "model.vocab_size");
    m.sequence_len = get_int(tree, "model.sequence_len");
    m.depth = get_int(tree, "model.depth");
    m.aspect_ratio = get_int(tree, "model.aspect_ratio");
    m.head_dim = get_int(tree, "model.head_dim");
    m.n_kv_head = int_or_auto(tree, "model.n_kv_head");
    m.window_pattern = get_string(tree, "model.window_pattern");
    m.softcap = get_float(tree, "model.softcap");
    m.pad_vocab_to = get_int(tree, "model.pad_vocab_to");
    m.l3.after_layers = get_int_list(tree, "model.l3.after_layers");
    m.l3.n_emb = int_or_auto(tree, "model.l3.n_emb");
    m.l3.d_up = int_or_auto(tree, "model.l3.d_up");
    m.l3.d_emb = int_or_auto(tree, "model.l3.d_emb");
    m.l3.k_max = get_int(tree, "model.l3.k_max");
    m.l3.tie_kv = get_bool(tree, "model.l3.tie_kv");
    m.l3.allocation = get_string(tree, "model.l3.allocation");
    m.l3.sample_rows = get_int(tree, "model.l3.sample_rows");
    const Node& graph = *tree.find_path("model.graph");
    for (size_t i = 0; i < graph.items.size(); ++i) {
        const Node& item = graph.items[i];
        GraphEntry entry;
        entry.path = "model.graph[" + std::to_string(i) + "]";
        if (const Node* n = item.find("type")) entry.type = n->scalar;
        if (const Node* n = item.find("repeat")) entry.repeat = std::stoll(n->scalar);
        auto int_or_auto_entry = [&](const char* key, std::optional<std::optional<long long>>& into) {
            if (const Node* n = item.find(key))
                into = n->scalar_type == ScalarType::Keyword ? std::optional<long long>{} : std::stoll(n->scalar);
        };
        int_or_auto_entry("n_emb", entry.n_emb);
        int_or_auto_entry("d_up", entry.d_up);
        int_or_auto_entry("d_emb", entry.d_emb);
        if (const Node* n = item.find("k_max")) entry.k_max = std::stoll(n->scalar);
        if (const Node* n = item.find("tie_kv")) entry.tie_kv = n->scalar == "true";
        static const char* l3_only[] = {"n_emb", "d_up", "d_emb", "k_max", "tie_kv"};
        if (entry.type == "block") {
            for (const char* key : l3_only)
                if (const Node* n = item.find(key))
                    errors.add(n->key_where, entry.path + "." + key, "only an l3 entry takes this option");
        } else if (const Node* n = item.find("repeat")) {
            errors.add(n->key_where, entry.path + ".repeat", "only a block entry repeats");
        }
        m.graph.push_back(std::move(entry));
    }

    e.horizon.num_iterations = get_int(tree, "horizon.num_iterations");
    e.horizon.target_flops = get_float(tree, "horizon.target_flops");
    e.horizon.target_param_data_ratio = get_float(tree, "horizon.target_param_data_ratio");

    e.batch.device_batch_size = get_int(tree, "batch.device_batch_size");
    e.batch.total_batch_size = int_or_auto(tree, "batch.total_batch_size");
    e.batch.reference_depth = get_int(tree, "batch.reference_depth");
    e.batch.reference_batch_size = get_int(tree, "batch.reference_batch_size");

    e.optimizer.weight_decay = get_float(tree, "optimizer.weight_decay");
    read_optimizer_groups(*tree.find_path("optimizer.groups"), e.optimizer, errors);

    e.schedule.warmup_ratio = get_float(tree, "schedule.warmup_ratio");
    e.schedule.warmdown_ratio = get_float(tree, "schedule.warmdown_ratio");
    e.schedule.final_lr_frac = get_float(tree, "schedule.final_lr_frac");
    e.schedule.muon_momentum_start = get_float(tree, "schedule.muon_momentum_start");
    e.schedule.muon_momentum_end = get_float(tree, "schedule.muon_momentum_end");
    e.schedule.muon_momentum_warmup_steps = get_int(tree, "schedule.muon_momentum_warmup_steps");
    e.schedule.weight_decay_linear = get_string(tree, "schedule.weight_decay") == "linear";

    e.eval_every = get_int(tree, "eval.every");
    e.eval_tokens = get_int(tree, "eval.tokens");
    e.core_every = get_int(tree, "eval.core_every");
    e.core_max_per_task = get_int(tree, "eval.core_max_per_task");
    e.core_bundle = get_string(tree, "eval.core_bundle");
    e.sample_every = get_int(tree, "sample.every");
    e.sample_prompts = get_string_list(tree, "sample.prompts");
    e.sample_max_tokens = get_int(tree, "sample.max_tokens");
    e.checkpoint_every = get_int(tree, "checkpoint.every");
    e.checkpoint_keep_last = get_int(tree, "checkpoint.keep_last");
    e.train_skip_nonfinite_steps = get_int(tree, "train.skip_nonfinite_steps");
    e.data_tokenizer = get_string(tree, "data.tokenizer");
    e.data_train = get_string(tree, "data.train");
    e.data_val = get_string(tree, "data.val");
    e.data_row_group_docs = get_int(tree, "data.row_group_docs");
    e.output_dir = get_string(tree, "output.dir");
    e.distributed_timeout_s = get_float(tree, "distributed.timeout_s");
    e.tracking_tensorboard = get_bool(tree, "tracking.tensorboard");
    e.tree = std::move(tree);

    check_cross_fields(e, errors);
    errors.throw_if_any();
    return e;
}

std::string to_yaml(const Experiment& experiment) { return emit_yaml(experiment.tree, experiment_schema()); }

static std::string flow(const Node& n) {
    if (n.is_map()) {
        std::string out = "{";
        for (const auto& [k, v] : n.entries) out += (out.size() > 1 ? ", " : "") + k + ": " + flow(v);
        return out + "}";
    }
    if (n.is_sequence()) {
        std::string out = "[";
        for (size_t i = 0; i < n.items.size(); ++i) out += (i ? ", " : "") + flow(n.items[i]);
        return out + "]";
    }
    return n.is_null() ? "null" : n.scalar;
}

static void flatten_into(const Node& n, const std::string& prefix, std::map<std::string, std::string>& out) {
    if (n.is_map()) {
        for (const auto& [k, v] : n.entries) flatten_into(v, prefix.empty() ? k : prefix + "." + k, out);
        return;
    }
    out[prefix] = flow(n);
}

std::map<std::string, std::string> flatten(const Node& tree) {
    std::map<std::string, std::string> out;
    flatten_into(tree, "", out);
    return out;
}

}  // namespace l3lab::config
