#include "runner/config/schema.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <map>
#include <sstream>

namespace l3lab::config {

// ---------------------------------------------------------------------------------------------
// The experiment schema. Defaults are nanochat's scripts/base_train.py defaults at b7629ef;
// experiments/base.yaml spells the same values out (a test keeps the two equal).

const Schema& experiment_schema() {
    static const Schema schema = [] {
        using T = FieldType;
        const double disabled = -1;
        Schema s;
        auto add = [&](Field f) { s.push_back(std::move(f)); };
        add({"name", T::String, "\"\"", "run name (part of the run directory); default: the file's stem"});
        add({"seed", T::Int, "42", "random seed for weights and data order", {}, {}, 0, 4294967295.0});
        add({"device", T::Enum, "auto", "where to train", {"auto", "cpu", "cuda"}});
        add({"precision", T::Enum, "auto",
             "auto: bfloat16 autocast on CUDA and float32 on the CPU, as the reference; bf16: bfloat16 autocast "
             "on the CPU too (needs AVX512-BF16 or AMX)",
             {"auto", "bf16"}});
        add({"device_peak_flops", T::Float, "auto",
             "peak bf16 FLOP/s for MFU; auto = the reference's table by GPU name (0 on a CPU)", {}, {"auto"}, 0, 1e20});

        add({"model.vocab_size", T::Int, "32768", "vocabulary size V (the tokenizer's)", {}, {}, 2, 1e9});
        add({"model.sequence_len", T::Int, "2048", "context length T", {}, {}, 1, 1e7});
        add({"model.depth", T::Int, "20", "number of transformer blocks", {}, {}, 1, 10000});
        add({"model.aspect_ratio", T::Int, "64", "model_dim = depth * aspect_ratio, rounded up to head_dim",
             {}, {}, 1, 1e6});
        add({"model.head_dim", T::Int, "128", "attention head dimension (even, for rotary)", {}, {}, 2, 1e5});
        add({"model.n_kv_head", T::Int, "auto", "key/value heads for GQA; auto = n_head", {}, {"auto"}, 1, 1e5});
        add({"model.window_pattern", T::String, "SSSL",
             "sliding windows tiled over layers: L = sequence_len, S = sequence_len/2; last layer always L"});
        add({"model.softcap", T::Float, "15.0", "logit soft-cap c in c*tanh(x/c)", {}, {}, 1e-6, 1e9});
        add({"model.pad_vocab_to", T::Int, "64", "pad the embedding/lm_head rows to a multiple of this",
             {}, {}, 1, 1e6});
        add({"model.l3.after_layers", T::IntList, "[]", "L3 layers go after these block indices (0-based)",
             {}, {}, 0, 1e6});
        add({"model.l3.n_emb", T::Int, "auto", "rows per L3 table; auto = max(V, params_with_n_emb=V // 1000)",
             {}, {"auto"}, 1, 1e12});
        add({"model.l3.d_up", T::Int, "auto", "L3 up-projection width; auto = 4 * model_dim", {}, {"auto"}, 1, 1e7});
        add({"model.l3.d_emb", T::Int, "auto", "untied value width; auto = model_dim (tied tables need auto)",
             {}, {"auto"}, 1, 1e7});
        add({"model.l3.k_max", T::Int, "512", "most rows one token may own", {}, {}, 1, 1e7});
        add({"model.l3.tie_kv", T::Bool, "true", "one table for keys and values"});
        add({"model.l3.allocation", T::Enum, "lzw", "rows per token: lzw (paper Algorithm 1) or frequency (reference)",
             {"lzw", "frequency"}});
        add({"model.l3.sample_rows", T::Int, "100", "rows of sequence_len tokens sampled for the allocation",
             {}, {}, 1, 1e9});
        {
            // An explicit stack: blocks and L3 layers in order; L3 options default to model.l3's.
            Field graph{"model.graph", T::RecordList, "[]",
                        "explicit stack, e.g. [{type: block, repeat: 4}, {type: l3}, {type: block, repeat: 8}]"};
            graph.record = {
                {"type", T::Enum, "", "module type", {"block", "l3"}},
                {"repeat", T::Int, "", "block: how many blocks in a row", {}, {}, 1, 10000},
                {"n_emb", T::Int, "", "l3: rows in the table", {}, {"auto"}, 1, 1e12},
                {"d_up", T::Int, "", "l3: up-projection width", {}, {"auto"}, 1, 1e7},
                {"d_emb", T::Int, "", "l3: untied value width", {}, {"auto"}, 1, 1e7},
                {"k_max", T::Int, "", "l3: most rows per token", {}, {}, 1, 1e7},
                {"tie_kv", T::Bool, "", "l3: one table for keys and values"},
            };
            graph.record.front().required = true;
            add(std::move(graph));
        }

        add({"horizon.num_iterations", T::Int, "-1", "explicit number of steps (-1 = off)", {}, {}, 1, 1e15,
             disabled});
        add({"horizon.target_flops", T::Float, "-1.0", "train for this many FLOPs (-1 = off)", {}, {}, 1.0, 1e40,
             disabled});
        add({"horizon.target_param_data_ratio", T::Float, "10.5",
             "tokens per scaling parameter (negative = off; still scales batch and weight decay)", {}, {}, -1e9,
             1e9});

        add({"batch.device_batch_size", T::Int, "32", "sequences per device per micro-step", {}, {}, 1, 1e9});
        add({"batch.total_batch_size", T::Int, "auto", "tokens per optimizer step; auto = Power-Lines rule",
             {}, {"auto"}, 1, 1e15});
        add({"batch.reference_depth", T::Int, "12", "depth of the reference model for batch/LR/WD transfer",
             {}, {}, 1, 10000});
        add({"batch.reference_batch_size", T::Int, "524288", "optimal batch size (tokens) at the reference depth",
             {}, {}, 1, 1e15});

        add({"optimizer.weight_decay", T::Float, "0.2",
             "base weight decay of groups with `weight_decay: scaled`, before batch/horizon scaling", {}, {}, 0, 1e6});
        {
            // The reference's setup_optimizer(), group by group (nanochat gpt.py at b7629ef).
            Field groups{"optimizer.groups", T::RecordList,
                         "[{name: lm_head, kind: adamw, roles: [lm_head], lr: 0.004, lr_scale: dmodel},"
                         " {name: wte, kind: adamw, roles: [token_embedding], lr: 0.3, lr_scale: dmodel},"
                         " {name: value_embeds, kind: adamw, roles: [value_embedding], lr: 0.3, lr_scale: dmodel},"
                         " {name: resid_lambdas, kind: adamw, roles: [resid_lambda], lr: 0.5, lr_scale: 0.01},"
                         " {name: x0_lambdas, kind: adamw, roles: [x0_lambda], lr: 0.5, beta1: 0.96},"
                         " {name: l3_tables, kind: adamw, roles: [l3_table], lr: 0.3, lr_scale: dmodel},"
                         " {name: matrices, kind: muon, roles: [matrix, l3_matrix], lr: 0.02}]",
                         "parameter groups: each selects parameters by roles and/or name globs"};
            groups.record = {
                {"name", T::String, "", "group name (unique)"},
                {"kind", T::Enum, "", "adamw or muon", {"adamw", "muon"}},
                {"roles", T::StringList, "", "parameter roles this group takes"},
                {"names", T::StringList, "", "name globs (fnmatch) this group takes; with roles: both must match"},
                {"lr", T::Float, "", "learning rate before the batch-size scale", {}, {}, 0, 1e6},
                {"lr_scale", T::Float, "", "none (default), dmodel = x (model_dim/768)^-0.5, or a factor", {},
                 {"none", "dmodel"}, 0, 1e6},
                {"beta1", T::Float, "", "adamw: first-moment decay (default 0.8)", {}, {}, 0, 0.999999},
                {"beta2", T::Float, "", "adamw: second moment (0.95); muon: NorMuon variance decay (0.95)", {}, {}, 0,
                 0.999999},
                {"eps", T::Float, "", "adamw: epsilon (default 1e-10)", {}, {}, 1e-30, 1},
                {"weight_decay", T::Float, "",
                 "adamw: decoupled decay (default 0); muon: cautious decay, default `scaled` (optimizer.weight_decay "
                 "x sqrt(B/B_ref) x D_ref/D)", {}, {"scaled"}, 0, 1e6},
                {"ns_steps", T::Int, "", "muon: Polar Express iterations (default 5)", {}, {}, 1, 5},
            };
            for (const char* required : {"name", "kind", "lr"})
                for (auto& r : groups.record)
                    if (r.path == required) r.required = true;
            add(std::move(groups));
        }

        add({"schedule.warmup_ratio", T::Float, "0.0", "fraction of steps warming the LR up", {}, {}, 0, 1});
        add({"schedule.warmdown_ratio", T::Float, "0.5", "fraction of steps decaying the LR", {}, {}, 0, 1});
        add({"schedule.final_lr_frac", T::Float, "0.0", "LR multiplier at the last step", {}, {}, 0, 1e3});
        add({"schedule.muon_momentum_start", T::Float, "0.85", "Muon momentum at step 0", {}, {}, 0, 0.999999});
        add({"schedule.muon_momentum_end", T::Float, "0.95", "Muon momentum after the warmup", {}, {}, 0, 0.999999});
        add({"schedule.muon_momentum_warmup_steps", T::Int, "300", "steps of the linear momentum warmup", {}, {}, 0,
             1e12});
        add({"schedule.weight_decay", T::Enum, "linear",
             "Muon weight decay over training: linear (to zero at the end, the reference) or constant",
             {"linear", "constant"}});

        add({"eval.every", T::Int, "250", "validation bpb every N steps (-1 = only at start and end)", {}, {}, 1,
             1e15, disabled});
        add({"eval.tokens", T::Int, "20971520", "validation tokens per evaluation", {}, {}, 1, 1e15});
        add({"eval.core_every", T::Int, "2000",
             "the CORE metric every N steps and at the end (-1 = off; needs the eval bundle, never downloaded)", {}, {}, 1,
             1e15, disabled});
        add({"eval.core_max_per_task", T::Int, "500", "CORE examples per task (-1 = all)", {}, {}, 1, 1e12, disabled});
        add({"eval.core_bundle", T::String, "\"\"",
             "the CORE eval bundle (empty: nanochat's, $NANOCHAT_BASE_DIR/eval_bundle or ~/.cache/nanochat/eval_bundle)"});
        add({"sample.every", T::Int, "2000", "print samples every N steps (-1 = only at the end)", {}, {}, 1, 1e15,
             disabled});
        add({"sample.prompts", T::StringList,
             "[\"The capital of France is\", \"The chemical symbol of gold is\", "
             "\"If yesterday was Friday, then tomorrow will be\", \"The opposite of hot is\", "
             "\"The planets of the solar system are:\", \"My favorite color is\", \"If 5*x + 3 = 13, then x is\"]",
             "prompts for the periodic greedy samples"});
        add({"sample.max_tokens", T::Int, "16", "tokens generated per sample", {}, {}, 1, 1e6});
        add({"checkpoint.every", T::Int, "-1", "checkpoint every N steps (-1 = only at the end)", {}, {}, 1, 1e15,
             disabled});
        add({"checkpoint.keep_last", T::Int, "2", "complete checkpoints kept", {}, {}, 1, 1e6});
        add({"train.skip_nonfinite_steps", T::Int, "0",
             "steps whose loss or gradients hold a NaN or inf that are skipped (not applied, counted in "
             "summary.json) before the run stops at the next one with a checkpoint of the state before it",
             {}, {}, 0, 1e15});
        add({"data.tokenizer", T::String, "data/tokenizer", "tokenizer: nanochat's tokenizer.pkl or its directory, or a SentencePiece model (relative to the working directory)"});
        add({"data.train", T::String, "data/shards/train_*.bin", "training shards: a file, a glob or a directory"});
        add({"data.val", T::String, "data/shards/val_*.bin", "validation shards: a file, a glob or a directory"});
        add({"data.row_group_docs", T::Int, "1024",
             "documents per row group; rank r of W reads row groups r, r+W, ... (the reference's parquet row groups)",
             {}, {}, 1, 1e9});
        add({"output.dir", T::String, "runs", "runs go to <dir>/<name>/<timestamp>-<hash>/"});
        add({"tracking.tensorboard", T::Bool, "true",
             "TensorBoard event files in <run>/tb/, appended live (docs/tracking.md)"});
        add({"distributed.timeout_s", T::Float, "600",
             "data-parallel runs: seconds a collective may wait before a dead or hung rank ends the run "
             "(docs/distributed.md)", {}, {}, 0.1, 1e7});
        return s;
    }();
    return schema;
}

// ---------------------------------------------------------------------------------------------
// small helpers

static size_t edit_distance(const std::string& a, const std::string& b) {
    std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        cur[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            size_t sub = prev[j - 1] + (std::tolower(a[i - 1]) == std::tolower(b[j - 1]) ? 0 : 1);
            cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
        }
        std::swap(prev, cur);
    }
    return prev[b.size()];
}

std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates) {
    std::string best;
    size_t best_distance = std::max<size_t>(2, word.size() / 3) + 1;
    for (const auto& c : candidates) {
        size_t d = edit_distance(word, c);
        if (d < best_distance) best_distance = d, best = c;
    }
    return best;
}

std::string format_float(double value) {
    if (std::isnan(value)) return ".nan";
    if (std::isinf(value)) return value > 0 ? ".inf" : "-.inf";
    char buf[64];
    auto res = std::to_chars(buf, buf + sizeof buf, value);
    std::string text(buf, res.ptr);
    size_t e = text.find('e');
    std::string mantissa = text.substr(0, e);
    std::string exponent = e == std::string::npos ? "" : text.substr(e);
    if (mantissa.find('.') == std::string::npos) mantissa += ".0";
    return mantissa + exponent;  // to_chars writes exponents with a sign: 1.0e+18
}

static std::string strip_underscores(std::string s) {
    std::erase(s, '_');
    return s;
}

static std::optional<long long> parse_int(const std::string& raw) {
    std::string text = strip_underscores(raw);
    if (text.empty()) return std::nullopt;
    long long value = 0;
    const char* begin = text.data() + (text[0] == '+' ? 1 : 0);
    auto [ptr, ec] = std::from_chars(begin, text.data() + text.size(), value);
    if (ec == std::errc() && ptr == text.data() + text.size()) return value;
    return std::nullopt;
}

static std::optional<double> parse_float(const std::string& raw) {
    std::string text = strip_underscores(raw);
    if (text == ".inf" || text == "+.inf" || text == ".Inf" || text == ".INF") return HUGE_VAL;
    if (text == "-.inf" || text == "-.Inf" || text == "-.INF") return -HUGE_VAL;
    if (text == ".nan" || text == ".NaN" || text == ".NAN") return std::nan("");
    if (text.empty() || text.find_first_not_of("0123456789+-.eE") != std::string::npos) return std::nullopt;
    if (text.find_first_of("0123456789") == std::string::npos) return std::nullopt;
    char* end = nullptr;
    double value = std::strtod(text.c_str(), &end);
    if (end != text.c_str() + text.size()) return std::nullopt;
    return value;
}

static std::string quote_list(const std::vector<std::string>& words) {
    std::string out;
    for (size_t i = 0; i < words.size(); ++i) {
        if (i) out += i + 1 == words.size() ? " or " : ", ";
        out += words[i];
    }
    return out;
}

static std::string type_name(const Field& f) {
    std::string base;
    switch (f.type) {
        case FieldType::Int: base = "an integer"; break;
        case FieldType::Float: base = "a number"; break;
        case FieldType::Bool: base = "true or false"; break;
        case FieldType::String: base = "a string"; break;
        case FieldType::Enum: base = "one of " + quote_list(f.choices); break;
        case FieldType::IntList: base = "a list of integers, like [3, 7]"; break;
        case FieldType::StringList: base = "a list of strings"; break;
        case FieldType::RecordList: base = "a list of maps"; break;
    }
    for (const auto& k : f.keywords) base += " or `" + k + "`";
    return base;
}

static std::string range_text(const Field& f) {
    std::string r;
    auto num = [&](double v) {
        if (v == std::floor(v) && std::fabs(v) < 1e15) return std::to_string(static_cast<long long>(v));
        std::ostringstream os;
        os << v;
        return os.str();
    };
    if (f.min && f.max) r = "between " + num(*f.min) + " and " + num(*f.max);
    else if (f.min) r = "at least " + num(*f.min);
    else if (f.max) r = "at most " + num(*f.max);
    if (f.disabled) r += " (or " + num(*f.disabled) + " to turn it off)";
    return r;
}

// ---------------------------------------------------------------------------------------------
// validation

namespace {

struct Validator {
    const Schema& schema;
    ErrorList& errors;

    const Field* field(const std::string& path) const {
        for (const auto& f : schema)
            if (f.path == path) return &f;
        return nullptr;
    }
    bool is_section(const std::string& path) const {
        for (const auto& f : schema)
            if (f.path.size() > path.size() && f.path.compare(0, path.size(), path) == 0 && f.path[path.size()] == '.')
                return true;
        return false;
    }
    std::vector<std::string> children(const std::string& prefix) const {
        std::vector<std::string> names;
        for (const auto& f : schema) {
            if (!prefix.empty() && (f.path.size() <= prefix.size() || f.path.compare(0, prefix.size(), prefix) != 0 ||
                                    f.path[prefix.size()] != '.'))
                continue;
            std::string rest = prefix.empty() ? f.path : f.path.substr(prefix.size() + 1);
            std::string name = rest.substr(0, rest.find('.'));
            if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
        }
        return names;
    }

    void unknown_key(const std::string& prefix, const std::string& key, const Node& value) {
        std::string dotted = prefix.empty() ? key : prefix + "." + key;
        std::string message = "unknown key";
        std::string near = did_you_mean(key, children(prefix));
        if (!near.empty()) {
            message += "; did you mean '" + (prefix.empty() ? near : prefix + "." + near) + "'?";
        } else {
            // The key may belong to another section: `depth: 12` at the top level.
            std::vector<std::string> elsewhere;
            for (const auto& f : schema) {
                std::string last = f.path.substr(f.path.rfind('.') + 1);
                if (last == key || edit_distance(last, key) <= 1) elsewhere.push_back(f.path);
            }
            if (!elsewhere.empty()) message += "; did you mean '" + elsewhere.front() + "'?";
            else message += " (valid keys here: " + quote_list(children(prefix)) + ")";
        }
        errors.add(value.key_where.line ? value.key_where : value.where, dotted, message);
    }

    void section(Node& node, const std::string& prefix) {
        if (node.is_null()) node = Node::map(node.where);  // `model:` with everything commented out
        if (!node.is_map()) {
            errors.add(node.where, prefix, "expected a map of settings (" + quote_list(children(prefix)) +
                                               "), got " + node.describe());
            node = Node::map(node.where);
            return;
        }
        std::vector<std::string> bad;
        for (auto& [key, value] : node.entries) {
            std::string path = prefix.empty() ? key : prefix + "." + key;
            if (const Field* f = field(path)) leaf(value, *f);
            else if (is_section(path)) section(value, path);
            else unknown_key(prefix, key, value), bad.push_back(key);
        }
        for (const auto& key : bad) node.erase(key);
    }

    bool check_range(const Node& node, const Field& f, double value) {
        if (f.disabled && value == *f.disabled) return true;
        if ((f.min && value < *f.min) || (f.max && value > *f.max)) {
            errors.add(node.where, f.path, "value " + node.scalar + " is out of range: must be " + range_text(f));
            return false;
        }
        return true;
    }

    // Canonicalises one scalar in place; returns false (after reporting) when it does not fit.
    bool scalar(Node& node, const Field& f, FieldType type) {
        if (!node.is_scalar()) {
            errors.add(node.where, f.path, "expected " + type_name(f) + ", got " + node.describe());
            return false;
        }
        if (!node.quoted && std::find(f.keywords.begin(), f.keywords.end(), node.scalar) != f.keywords.end()) {
            node.scalar_type = ScalarType::Keyword;
            return true;
        }
        switch (type) {
            case FieldType::Int: {
                std::optional<long long> v = node.quoted ? std::nullopt : parse_int(node.scalar);
                if (!v && !node.quoted) {
                    // 5.0e5 is accepted for an integer key when it is exactly an integer.
                    if (auto d = parse_float(node.scalar); d && std::isfinite(*d) && *d == std::floor(*d) &&
                                                           std::fabs(*d) < 9.0e18)
                        v = static_cast<long long>(*d);
                }
                if (!v) {
                    errors.add(node.where, f.path, "expected " + type_name(f) + ", got " + node.describe());
                    return false;
                }
                if (!check_range(node, f, static_cast<double>(*v))) return false;
                node.scalar = std::to_string(*v);
                node.scalar_type = ScalarType::Int;
                return true;
            }
            case FieldType::Float: {
                std::optional<double> v = node.quoted ? std::nullopt : parse_float(node.scalar);
                if (!v) {
                    errors.add(node.where, f.path, "expected " + type_name(f) + ", got " + node.describe());
                    return false;
                }
                if (!std::isfinite(*v)) {
                    errors.add(node.where, f.path, "must be a finite number, got " + node.describe());
                    return false;
                }
                if (!check_range(node, f, *v)) return false;
                node.scalar = format_float(*v);
                node.scalar_type = ScalarType::Float;
                return true;
            }
            case FieldType::Bool: {
                static const std::map<std::string, bool> words = {{"true", true},   {"True", true},   {"TRUE", true},
                                                                  {"false", false}, {"False", false}, {"FALSE", false}};
                auto it = node.quoted ? words.end() : words.find(node.scalar);
                if (it == words.end()) {
                    errors.add(node.where, f.path, "expected true or false, got " + node.describe());
                    return false;
                }
                node.scalar = it->second ? "true" : "false";
                node.scalar_type = ScalarType::Bool;
                return true;
            }
            case FieldType::Enum: {
                if (std::find(f.choices.begin(), f.choices.end(), node.scalar) == f.choices.end()) {
                    std::string message = "expected " + type_name(f) + ", got " + node.describe();
                    if (std::string near = did_you_mean(node.scalar, f.choices); !near.empty())
                        message += "; did you mean '" + near + "'?";
                    errors.add(node.where, f.path, message);
                    return false;
                }
                node.scalar_type = ScalarType::Keyword;
                return true;
            }
            default:
                node.scalar_type = ScalarType::String;
                return true;
        }
    }

    void record_list(Node& node, const Field& f) {
        if (!node.is_sequence()) {
            errors.add(node.where, f.path, "expected " + type_name(f) + ", got " + node.describe());
            return;
        }
        std::vector<std::string> names;
        for (const auto& r : f.record) names.push_back(r.path);
        for (size_t i = 0; i < node.items.size(); ++i) {
            Node& item = node.items[i];
            const std::string item_path = f.path + "[" + std::to_string(i) + "]";
            if (!item.is_map()) {
                errors.add(item.where, item_path, "expected a map with keys " + quote_list(names) + ", got " + item.describe());
                continue;
            }
            std::vector<std::string> bad;
            for (auto& [key, value] : item.entries) {
                auto it = std::find_if(f.record.begin(), f.record.end(), [&](const Field& r) { return r.path == key; });
                if (it == f.record.end()) {
                    std::string message = "unknown key";
                    if (std::string near = did_you_mean(key, names); !near.empty()) message += "; did you mean '" + near + "'?";
                    else message += " (valid keys here: " + quote_list(names) + ")";
                    errors.add(value.key_where.line ? value.key_where : value.where, item_path + "." + key, message);
                    bad.push_back(key);
                    continue;
                }
                Field located = *it;
                located.path = item_path + "." + key;
                leaf(value, located);
            }
            for (const auto& key : bad) item.erase(key);
            for (const auto& r : f.record)
                if (r.required && !item.find(r.path))
                    errors.add(item.where, item_path, "missing required key '" + r.path + "'");
        }
    }

    void leaf(Node& node, const Field& f) {
        switch (f.type) {
            case FieldType::RecordList:
                record_list(node, f);
                return;
            case FieldType::IntList:
            case FieldType::StringList: {
                if (!node.is_sequence()) {
                    errors.add(node.where, f.path, "expected " + type_name(f) + ", got " + node.describe());
                    return;
                }
                FieldType item_type = f.type == FieldType::IntList ? FieldType::Int : FieldType::String;
                for (auto& item : node.items) scalar(item, f, item_type);
                return;
            }
            default:
                scalar(node, f, f.type);
        }
    }

    void fill_defaults(Node& root) {
        for (const auto& f : schema) {
            if (root.find_path(f.path)) continue;
            // Make sure every enclosing section exists, then parse the default.
            Node* parent = &root;
            std::string path = f.path;
            size_t start = 0;
            for (size_t dot = path.find('.'); dot != std::string::npos; start = dot + 1, dot = path.find('.', start)) {
                std::string name = path.substr(start, dot - start);
                Node* child = parent->find(name);
                if (!child || !child->is_map()) child = &parent->set(name, Node::map({"<defaults>", 0, 0}));
                parent = child;
            }
            ErrorList default_errors;
            Node value = parse_yaml(f.default_yaml, "<default of " + f.path + ">", default_errors);
            value.where = {"<default of " + f.path + ">", 0, 0};
            leaf(value, f);
            parent->set(path.substr(start), std::move(value));
        }
    }
};

}  // namespace

void validate_and_complete(Node& root, const Schema& schema, ErrorList& errors) {
    Validator v{schema, errors};
    v.section(root, "");
    v.fill_defaults(root);
}

// ---------------------------------------------------------------------------------------------
// emission

static bool plain_safe(const std::string& s) {
    if (s.empty()) return false;
    static const char* reserved[] = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"};
    std::string lower = s;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    for (const char* r : reserved)
        if (lower == r) return false;
    if (parse_float(s) || parse_int(s)) return false;
    if (!(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_' || s[0] == '/' || s[0] == '.')) return false;
    return s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-") ==
           std::string::npos;
}

static std::string quote(const std::string& s) {
    std::string out = "\"";
    for (unsigned char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\t': out += "\\t"; break;
            case '\r': out += "\\r"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\x%02x", c);
                    out += buf;
                } else {
                    out += static_cast<char>(c);
                }
        }
    }
    return out + "\"";
}

static std::string scalar_text(const Node& n) {
    if (n.is_null()) return "null";
    switch (n.scalar_type) {
        case ScalarType::Int:
        case ScalarType::Float:
        case ScalarType::Bool:
        case ScalarType::Keyword: return n.scalar;
        default: return plain_safe(n.scalar) ? n.scalar : quote(n.scalar);
    }
}

namespace {

struct Emitter {
    const Schema& schema;
    std::ostringstream out;

    size_t order(const std::string& path) const {
        for (size_t i = 0; i < schema.size(); ++i) {
            const std::string& p = schema[i].path;
            if (p == path || (p.size() > path.size() && p.compare(0, path.size(), path) == 0 && p[path.size()] == '.'))
                return i;
        }
        return schema.size();
    }

    void map(const Node& node, const std::string& prefix, int indent) {
        std::vector<const std::pair<std::string, Node>*> entries;
        for (const auto& e : node.entries) entries.push_back(&e);
        std::stable_sort(entries.begin(), entries.end(), [&](auto* a, auto* b) {
            return order(prefix.empty() ? a->first : prefix + "." + a->first) <
                   order(prefix.empty() ? b->first : prefix + "." + b->first);
        });
        for (const auto* e : entries) {
            const std::string& key = e->first;
            const Node& value = e->second;
            std::string path = prefix.empty() ? key : prefix + "." + key;
            out << std::string(indent, ' ') << key << ":";
            if (value.is_map()) {
                out << "\n";
                map(value, path, indent + 2);
            } else if (value.is_sequence() && !value.items.empty() && value.items.front().is_map()) {
                out << "\n";
                const Field* f = nullptr;
                for (const auto& field : schema)
                    if (field.path == path) f = &field;
                for (const auto& item : value.items) {
                    bool first = true;
                    auto emit_entry = [&](const std::string& k, const Node& v) {
                        out << std::string(indent + 2, ' ') << (first ? "- " : "  ") << k << ": ";
                        if (v.is_sequence()) {
                            out << "[";
                            for (size_t i = 0; i < v.items.size(); ++i) out << (i ? ", " : "") << scalar_text(v.items[i]);
                            out << "]\n";
                        } else {
                            out << scalar_text(v) << "\n";
                        }
                        first = false;
                    };
                    if (f) {  // record keys in schema order
                        for (const auto& r : f->record)
                            if (const Node* v = item.find(r.path)) emit_entry(r.path, *v);
                    } else {
                        for (const auto& [k, v] : item.entries) emit_entry(k, v);
                    }
                }
            } else if (value.is_sequence()) {
                bool strings = std::any_of(value.items.begin(), value.items.end(),
                                           [](const Node& n) { return n.scalar_type == ScalarType::String; });
                if (value.items.empty() || !strings) {
                    out << " [";
                    for (size_t i = 0; i < value.items.size(); ++i) out << (i ? ", " : "") << scalar_text(value.items[i]);
                    out << "]\n";
                } else {
                    out << "\n";
                    for (const auto& item : value.items) out << std::string(indent + 2, ' ') << "- " << scalar_text(item) << "\n";
                }
            } else {
                out << " " << scalar_text(value) << "\n";
            }
        }
    }
};

}  // namespace

std::string emit_yaml(const Node& root, const Schema& schema) {
    Emitter e{schema, {}};
    e.map(root, "", 0);
    return e.out.str();
}

// ---------------------------------------------------------------------------------------------
// typed access

static const Node& require(const Node& root, const std::string& path) {
    const Node* n = root.find_path(path);
    if (!n) throw std::logic_error("config key missing after validation: " + path);
    return *n;
}

long long get_int(const Node& root, const std::string& path) {
    const Node& n = require(root, path);
    if (n.scalar_type != ScalarType::Int) throw std::logic_error("not an integer: " + path);
    return std::stoll(n.scalar);
}

double get_float(const Node& root, const std::string& path) {
    const Node& n = require(root, path);
    if (n.scalar_type != ScalarType::Float && n.scalar_type != ScalarType::Int)
        throw std::logic_error("not a number: " + path);
    return *parse_float(n.scalar);
}

bool get_bool(const Node& root, const std::string& path) { return require(root, path).scalar == "true"; }

std::string get_string(const Node& root, const std::string& path) { return require(root, path).scalar; }

std::vector<long long> get_int_list(const Node& root, const std::string& path) {
    std::vector<long long> out;
    for (const auto& item : require(root, path).items) out.push_back(std::stoll(item.scalar));
    return out;
}

std::vector<std::string> get_string_list(const Node& root, const std::string& path) {
    std::vector<std::string> out;
    for (const auto& item : require(root, path).items) out.push_back(item.scalar);
    return out;
}

bool is_keyword(const Node& root, const std::string& path, const std::string& keyword) {
    const Node& n = require(root, path);
    return n.scalar_type == ScalarType::Keyword && n.scalar == keyword;
}

Location location_of(const Node& root, const std::string& path) {
    // Defaults have no line of their own: point at the experiment file itself.
    const Node* n = root.find_path(path);
    if (!n || n->where.file.rfind("<default", 0) == 0) return {root.where.file, 0, 0};
    return n->where.line ? n->where : n->key_where;
}

}  // namespace l3lab::config
