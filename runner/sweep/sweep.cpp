#include "runner/sweep/sweep.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "runner/config/schema.h"
#include "runner/data/sha256.h"
#include "runner/util/format.h"

namespace fs = std::filesystem;

namespace l3lab::sweep {

using config::ErrorList;
using config::Location;
using config::Node;

namespace {

constexpr size_t kMaxCells = 100000;

const std::vector<std::string> kTopKeys = {"name",   "experiment", "set",    "grid",          "zip",
                                           "seeds",  "on_failure", "output", kL3Fraction};

// One `dotted.key = value` taken from the sweep file; `value` keeps its location there.
struct Assignment {
    std::string key;
    const Node* value;
};

// An axis: its choices, each a set of assignments made together (one for a grid key, several for a zip).
using Axis = std::vector<std::vector<Assignment>>;

std::string last_component(const std::string& key) {
    size_t dot = key.rfind('.');
    return dot == std::string::npos ? key : key.substr(dot + 1);
}

bool needs_quotes(const std::string& s) {
    if (s.empty() || s.front() == ' ' || s.back() == ' ') return true;
    return s.find_first_of(",[]{}:#'\"&*!|>%@`") != std::string::npos;
}

std::string quote(const std::string& s) {
    std::string out = "'";
    for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
    return out + "'";
}

// A value as one line of flow YAML, read back by apply_override as the same value.
std::string flow(const Node& n) {
    switch (n.kind) {
        case Node::Kind::Null: return "null";
        case Node::Kind::Scalar: return n.quoted || needs_quotes(n.scalar) ? quote(n.scalar) : n.scalar;
        case Node::Kind::Sequence: {
            std::string out = "[";
            for (size_t i = 0; i < n.items.size(); ++i) out += (i ? ", " : "") + flow(n.items[i]);
            return out + "]";
        }
        case Node::Kind::Map: {
            std::string out = "{";
            for (size_t i = 0; i < n.entries.size(); ++i)
                out += (i ? ", " : "") + n.entries[i].first + ": " + flow(n.entries[i].second);
            return out + "}";
        }
    }
    return "null";
}

// A value as shown in tables and directory names: scalars as they are, lists joined by '+', [] as none.
std::string display(const Node& n) {
    if (n.is_scalar()) return n.scalar;
    if (n.is_sequence()) {
        if (n.items.empty()) return "none";
        std::string out;
        for (const auto& item : n.items) out += (out.empty() ? "" : "+") + display(item);
        return out;
    }
    return flow(n);
}

std::string sanitize(const std::string& s) {
    std::string out = s;
    for (char& c : out)
        if (!std::isalnum(static_cast<unsigned char>(c)) && std::string("._=,+-").find(c) == std::string::npos) c = '_';
    return out;
}

bool parse_double(const Node& n, double& out) {
    if (!n.is_scalar() || n.quoted || n.scalar.empty()) return false;
    std::string text = n.scalar;
    text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
    char* end = nullptr;
    out = std::strtod(text.c_str(), &end);
    return end && *end == '\0' && std::isfinite(out);
}

bool parse_int(const Node& n, long long& out) {
    double d;
    if (!parse_double(n, d) || d != std::floor(d) || std::fabs(d) > 9e15) return false;
    out = static_cast<long long>(d);
    return true;
}

// Every schema path and every map above one (model, model.l3): what a dotted key may name.
const std::set<std::string>& known_keys() {
    static const std::set<std::string> keys = [] {
        std::set<std::string> out;
        for (const auto& f : config::experiment_schema()) {
            out.insert(f.path);
            for (size_t dot = f.path.find('.'); dot != std::string::npos; dot = f.path.find('.', dot + 1))
                out.insert(f.path.substr(0, dot));
        }
        return out;
    }();
    return keys;
}

struct Parser {
    std::string file;
    ErrorList& errors;
    std::set<std::string> used;  // dotted keys given in set, grid or zip
    std::map<std::string, Location> where_used;

    // Checks a dotted key found in `section`; false when it cannot be used.
    bool check_key(const std::string& key, const Location& where, const std::string& section) {
        const std::string path = section + "." + key;
        if (key.empty() || key.front() == '.' || key.back() == '.' || key.find("..") != std::string::npos ||
            key.find_first_of(" \t") != std::string::npos) {
            errors.add(where, path, "malformed key (expected names joined by dots, like model.l3.k_max)");
            return false;
        }
        if (key == "seed") {
            errors.add(where, path, "set seeds with the top-level `seeds:` list, which is the seed axis");
            return false;
        }
        if (key != kL3Fraction && !known_keys().count(key)) {
            std::vector<std::string> candidates(known_keys().begin(), known_keys().end());
            candidates.push_back(kL3Fraction);
            std::string hint = config::did_you_mean(key, candidates);
            if (hint.empty()) {
                // "depth" for "model.depth": match on the last component
                for (const auto& c : candidates)
                    if (last_component(c) == key) hint = c;
            }
            errors.add(where, path,
                       "'" + key + "' is not an experiment key" + (hint.empty() ? "" : "; did you mean '" + hint + "'?") +
                           " (see l3lab config --keys)");
            return false;
        }
        where_used.emplace(key, where);
        if (!used.insert(key).second) {
            errors.add(where, path, "'" + key + "' is given more than once across set, grid and zip");
            return false;
        }
        return true;
    }

    // l3_at_fraction's value: a list of fractions in (0, 1] ([] = no L3 layers).
    void check_fractions(const Node& v, const std::string& path) {
        if (!v.is_sequence()) {
            errors.add(v.where, path, "expected a list of depth fractions in (0, 1] (e.g. [0.25, 0.75]), got " + v.describe());
            return;
        }
        for (const auto& item : v.items) {
            double f;
            if (!parse_double(item, f) || f <= 0 || f > 1)
                errors.add(item.where, path, "expected a depth fraction in (0, 1], got " + item.describe());
        }
    }

    // A non-empty list of values for `key`; no value twice unless `repeats` (zip lists vary together).
    bool check_list(const Node& v, const std::string& key, const std::string& path, bool repeats = false) {
        if (!v.is_sequence() || v.items.empty()) {
            errors.add(v.where, path, "expected a non-empty list of values, got " + v.describe());
            return false;
        }
        std::set<std::string> seen;
        bool ok = true;
        for (const auto& item : v.items) {
            if (!repeats && !seen.insert(flow(item)).second) {
                errors.add(item.where, path, "the value " + flow(item) + " is listed twice");
                ok = false;
            }
            if (key == kL3Fraction) check_fractions(item, path);
        }
        return ok;
    }
};

std::string resolve_experiment_path(const Node& v) {
    fs::path p(v.scalar);
    if (p.is_absolute()) return p.string();
    return (fs::path(v.where.file).parent_path() / p).lexically_normal().string();
}

// model.l3.after_layers from fractions of the depth: block round(f * depth) - 1, clamped, deduplicated.
std::vector<long long> layers_at(const Node& fractions, long long depth) {
    std::set<long long> layers;
    for (const auto& item : fractions.items) {
        double f = 0;
        parse_double(item, f);
        long long layer = plan::python_round(f * static_cast<double>(depth)) - 1;
        layers.insert(std::clamp(layer, 0LL, depth - 1));
    }
    return {layers.begin(), layers.end()};
}

// The override number in "<override 3: model.depth=x>", or 0.
int override_number(const std::string& file) {
    static const std::string prefix = "<override ";
    if (file.rfind(prefix, 0) != 0) return 0;
    return std::atoi(file.c_str() + prefix.size());
}

std::string si(double v) {
    const char* suffix[] = {"", "K", "M", "B", "T"};
    int i = 0;
    while (std::fabs(v) >= 1000 && i < 4) {
        v /= 1000;
        ++i;
    }
    if (i == 0) return fmt::format("{:.0f}", v);
    return fmt::format("{:.{}f}{}", v, std::fabs(v) >= 100 ? 0 : std::fabs(v) >= 10 ? 1 : 2, suffix[i]);
}

}  // namespace

std::string Sweep::sweep_dir() const { return (fs::path(output) / name).string(); }

double device_hours(const plan::Plan& plan, const Throughput& t) {
    return plan.total_flops / (t.peak_flops * t.mfu) / 3600.0;
}

Sweep load_sweep(const std::string& path) {
    ErrorList errors;
    Node root = config::load_with_extends(path, errors);
    errors.throw_if_any();

    Sweep sweep;
    sweep.source = path;
    Parser parser{path, errors, {}, {}};

    for (const auto& [key, value] : root.entries) {
        if (std::find(kTopKeys.begin(), kTopKeys.end(), key) != kTopKeys.end()) continue;
        std::string hint = config::did_you_mean(key, kTopKeys);
        errors.add(value.key_where.line ? value.key_where : value.where, key,
                   "unknown sweep key" + (hint.empty() ? std::string() : "; did you mean '" + hint + "'?") +
                       " (sweep keys: name, experiment, set, grid, zip, seeds, on_failure, output, l3_at_fraction)");
    }
    auto string_key = [&](const char* key, const std::string& fallback) -> std::string {
        const Node* v = root.find(key);
        if (!v) return fallback;
        if (!v->is_scalar() || v->scalar.empty()) {
            errors.add(v->where, key, std::string("expected a string, got ") + v->describe());
            return fallback;
        }
        return v->scalar;
    };

    sweep.name = string_key("name", fs::path(path).stem().string());
    if (sweep.name.empty() || sweep.name.size() > 200 || sweep.name == "." || sweep.name == ".." ||
        sweep.name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
            std::string::npos)
        errors.add(config::location_of(root, "name"), "name",
                   "'" + sweep.name + "' cannot name a sweep directory: use letters, digits, '.', '_' and '-'");

    if (const Node* exp = root.find("experiment")) {
        if (exp->is_scalar() && !exp->scalar.empty()) sweep.experiment = resolve_experiment_path(*exp);
        else errors.add(exp->where, "experiment", "expected the base experiment's path, got " + exp->describe());
    } else {
        errors.add({path, 0, 0}, "experiment", "missing: the base experiment file, relative to this file");
    }

    sweep.on_failure = string_key("on_failure", "continue");
    if (sweep.on_failure != "continue" && sweep.on_failure != "abort")
        errors.add(config::location_of(root, "on_failure"), "on_failure",
                   "expected continue or abort, got '" + sweep.on_failure + "'");
    sweep.output = string_key("output", "sweeps_out");

    // Fixed overrides: `set`, plus the top-level l3_at_fraction shorthand.
    std::vector<Assignment> fixed;
    if (const Node* set = root.find("set"); set && !set->is_null()) {
        if (!set->is_map()) {
            errors.add(set->where, "set", "expected a map of dotted.key: value, got " + set->describe());
        } else {
            for (const auto& [key, value] : set->entries) {
                if (!parser.check_key(key, value.key_where, "set")) continue;
                if (key == kL3Fraction) parser.check_fractions(value, "set." + key);
                fixed.push_back({key, &value});
            }
        }
    }
    if (const Node* f = root.find(kL3Fraction)) {
        if (parser.check_key(kL3Fraction, f->key_where.line ? f->key_where : f->where, "(top level)")) {
            parser.check_fractions(*f, kL3Fraction);
            fixed.push_back({kL3Fraction, f});
        }
    }

    std::vector<Axis> axes;
    if (const Node* grid = root.find("grid"); grid && !grid->is_null()) {
        if (!grid->is_map()) {
            errors.add(grid->where, "grid", "expected a map of dotted.key: [values], got " + grid->describe());
        } else {
            for (const auto& [key, value] : grid->entries) {
                if (!parser.check_key(key, value.key_where, "grid")) continue;
                if (!parser.check_list(value, key, "grid." + key)) continue;
                Axis axis;
                for (const auto& item : value.items) axis.push_back({{key, &item}});
                axes.push_back(std::move(axis));
                sweep.swept_keys.push_back(key);
            }
        }
    }
    if (const Node* zip = root.find("zip"); zip && !zip->is_null()) {
        if (!zip->is_sequence()) {
            errors.add(zip->where, "zip", "expected a list of groups ({key: [values], ...}), got " + zip->describe());
        } else {
            for (size_t g = 0; g < zip->items.size(); ++g) {
                const Node& group = zip->items[g];
                const std::string gpath = "zip[" + std::to_string(g) + "]";
                if (!group.is_map() || group.entries.empty()) {
                    errors.add(group.where, gpath, "expected a map of dotted.key: [values] that vary together, got " +
                                                       group.describe());
                    continue;
                }
                std::vector<Assignment> lists;
                for (const auto& [key, value] : group.entries) {
                    if (!parser.check_key(key, value.key_where, gpath)) continue;
                    if (!parser.check_list(value, key, gpath + "." + key, true)) continue;
                    lists.push_back({key, &value});
                }
                bool same_length = true;
                for (const auto& l : lists)
                    if (l.value->items.size() != lists.front().value->items.size()) {
                        errors.add(l.value->where, gpath + "." + l.key,
                                   fmt::format("has {} values but {} has {}: lists zipped together need equal lengths",
                                               l.value->items.size(), lists.front().key,
                                               lists.front().value->items.size()));
                        same_length = false;
                    }
                if (lists.empty() || !same_length) continue;
                Axis axis(lists.front().value->items.size());
                for (size_t i = 0; i < axis.size(); ++i)
                    for (const auto& l : lists) axis[i].push_back({l.key, &l.value->items[i]});
                axes.push_back(std::move(axis));
                for (const auto& l : lists) sweep.swept_keys.push_back(l.key);
            }
        }
    }
    // Seeds: the fastest axis. Given explicitly, `seed` is a swept key (it names the cell directories).
    static const Node default_seed = [] {
        Node s = Node::make_scalar("42");
        return s;
    }();
    if (const Node* seeds = root.find("seeds")) {
        if (parser.check_list(*seeds, "seed", "seeds")) {
            Axis axis;
            for (const auto& item : seeds->items) {
                long long s;
                if (!parse_int(item, s) || s < 0) errors.add(item.where, "seeds", "expected a seed (an integer >= 0), got " + item.describe());
                axis.push_back({{"seed", &item}});
            }
            axes.push_back(std::move(axis));
            sweep.swept_keys.push_back("seed");
        }
    } else {
        axes.push_back({{{"seed", &default_seed}}});
    }
    if (parser.used.count(kL3Fraction) && parser.used.count("model.l3.after_layers"))
        errors.add(parser.where_used[kL3Fraction], kL3Fraction,
                   "cannot be combined with model.l3.after_layers (one decides the L3 placement)");

    size_t count = 1;
    for (const auto& axis : axes) {
        count *= axis.size();
        if (count > kMaxCells) {
            errors.add({path, 0, 0}, "grid", fmt::format("the sweep has more than {} cells", kMaxCells));
            break;
        }
    }
    errors.throw_if_any();

    // Expand: mixed radix over the axes, the first axis slowest.
    std::map<std::string, std::string> seen_errors;  // dedup key -> already reported
    std::vector<config::ConfigError> cell_errors;
    std::map<std::string, int> ids;
    for (size_t index = 0; index < count; ++index) {
        std::vector<Assignment> assignments = fixed;
        std::vector<Assignment> swept;
        size_t rest = index;
        std::vector<size_t> choice(axes.size());
        for (size_t a = axes.size(); a-- > 0;) {
            choice[a] = rest % axes[a].size();
            rest /= axes[a].size();
        }
        for (size_t a = 0; a < axes.size(); ++a)
            for (const auto& as : axes[a][choice[a]]) assignments.push_back(as);
        for (const auto& as : assignments)
            if (std::find(sweep.swept_keys.begin(), sweep.swept_keys.end(), as.key) != sweep.swept_keys.end())
                swept.push_back(as);

        Cell cell;
        cell.index = static_cast<int>(index);
        std::vector<Location> sources;  // override i+1 came from here
        const Node* fractions = nullptr;
        for (const auto& as : assignments) {
            if (as.key == kL3Fraction) {
                fractions = as.value;
                continue;
            }
            cell.overrides.push_back(as.key + "=" + flow(*as.value));
            sources.push_back(as.value->where);
        }
        std::string raw_swept;
        for (const auto& as : swept) raw_swept += (raw_swept.empty() ? "" : ",") + last_component(as.key) + "=" + display(*as.value);

        try {
            cell.experiment = config::load_experiment(sweep.experiment, cell.overrides);
            if (fractions) {
                std::string layers;
                for (long long l : layers_at(*fractions, cell.experiment.model.depth))
                    layers += (layers.empty() ? "" : ", ") + std::to_string(l);
                cell.overrides.push_back("model.l3.after_layers=[" + layers + "]");
                sources.push_back(fractions->where);
                cell.experiment = config::load_experiment(sweep.experiment, cell.overrides);
            }
            cell.plan = plan::make_plan(cell.experiment);
        } catch (const config::ConfigException& e) {
            for (config::ConfigError err : e.errors()) {
                int n = override_number(err.where.file);
                if (n >= 1 && n <= static_cast<int>(sources.size())) err.where = sources[n - 1];
                std::string dedup = err.str();
                if (seen_errors.count(dedup)) continue;
                seen_errors[dedup] = "";
                err.message = fmt::format("cell {} [{}]: {}", index, raw_swept, err.message);
                cell_errors.push_back(std::move(err));
            }
            continue;
        }

        std::string dir = fmt::format("{:04d}", index);
        for (size_t i = 0; i < swept.size(); ++i) {
            const Assignment& as = swept[i];
            std::string shown = display(*as.value);
            if (as.key != kL3Fraction)
                if (const Node* resolved = cell.experiment.tree.find_path(as.key)) shown = display(*resolved);
            cell.swept.emplace_back(as.key, shown);
            dir += (i ? "," : "-") + last_component(as.key) + "=" + shown;
        }
        cell.dir = sanitize(dir);
        cell.id = data::sha256_hex(config::to_yaml(cell.experiment)).substr(0, 12);
        if (auto [it, fresh] = ids.emplace(cell.id, cell.index); !fresh)
            cell_errors.push_back({{path, 0, 0}, "grid",
                                   fmt::format("cells {} and {} resolve to the same experiment (id {}): a swept value "
                                               "changes nothing",
                                               it->second, cell.index, cell.id)});
        sweep.cells.push_back(std::move(cell));
    }
    if (!cell_errors.empty()) throw config::ConfigException(cell_errors);
    return sweep;
}

std::string plan_table(const Sweep& s, const Throughput& t) {
    std::vector<std::string> header = {"#"};
    for (const auto& k : s.swept_keys) header.push_back(last_component(k));
    for (const char* h : {"params", "l3 params", "scaling", "FLOPs/tok", "iters", "batch", "tokens", "FLOPs", "dev-h",
                          "id", "dir"})
        header.push_back(h);
    std::vector<std::vector<std::string>> rows;
    double total_flops = 0, total_hours = 0;
    for (const auto& c : s.cells) {
        const auto& counts = c.plan.shape.counts;
        std::vector<std::string> row = {std::to_string(c.index)};
        for (const auto& [k, v] : c.swept) row.push_back(v);
        const double hours = device_hours(c.plan, t);
        row.insert(row.end(), {si(static_cast<double>(counts.total)),
                               si(static_cast<double>(counts.l3_embeds + counts.l3_matrices)),
                               si(static_cast<double>(c.plan.scaling_params)),
                               fmt::format("{:.3e}", static_cast<double>(c.plan.shape.flops_per_token)),
                               std::to_string(c.plan.num_iterations), std::to_string(c.plan.total_batch_size),
                               si(static_cast<double>(c.plan.total_tokens)), fmt::format("{:.3e}", c.plan.total_flops),
                               fmt::format("{:.2f}", hours), c.id, c.dir});
        total_flops += c.plan.total_flops;
        total_hours += hours;
        rows.push_back(std::move(row));
    }
    std::ostringstream out;
    out << "sweep " << s.name << " (" << s.source << "): " << s.cells.size() << " cell" << (s.cells.size() == 1 ? "" : "s")
        << " of " << s.experiment << ", into " << s.sweep_dir() << "/, on_failure " << s.on_failure << "\n\n";
    const size_t left_from = header.size() - 2;  // id and dir
    rows.insert(rows.begin(), header);
    out << util::aligned_table(rows, left_from);
    out << fmt::format("\ntotal: {} cells, {:.3e} FLOPs, {:.1f} device-hours\n", s.cells.size(), total_flops, total_hours);
    out << fmt::format("device-hours = FLOPs / (peak {:.4g} FLOP/s x MFU {:.2f}) / 3600 (--peak-flops, --mfu)\n",
                       t.peak_flops, t.mfu);
    return out.str();
}

std::string plan_json(const Sweep& s, const Throughput& t) {
    nlohmann::ordered_json j;
    j["name"] = s.name;
    j["source"] = s.source;
    j["experiment"] = s.experiment;
    j["on_failure"] = s.on_failure;
    j["output"] = s.sweep_dir();
    j["swept_keys"] = s.swept_keys;
    j["cells"] = nlohmann::ordered_json::array();
    double total_flops = 0, total_hours = 0;
    for (const auto& c : s.cells) {
        const auto& counts = c.plan.shape.counts;
        nlohmann::ordered_json cell;
        cell["index"] = c.index;
        cell["id"] = c.id;
        cell["dir"] = c.dir;
        cell["overrides"] = c.overrides;
        cell["swept"] = nlohmann::ordered_json::object();
        for (const auto& [k, v] : c.swept) cell["swept"][k] = v;
        cell["params"] = {{"wte", counts.wte},
                          {"value_embeds", counts.value_embeds},
                          {"lm_head", counts.lm_head},
                          {"transformer_matrices", counts.transformer_matrices},
                          {"l3_embeds", counts.l3_embeds},
                          {"l3_matrices", counts.l3_matrices},
                          {"scalars", counts.scalars},
                          {"total", counts.total}};
        cell["scaling_params"] = c.plan.scaling_params;
        cell["flops_per_token"] = c.plan.shape.flops_per_token;
        cell["num_iterations"] = c.plan.num_iterations;
        cell["total_batch_size"] = c.plan.total_batch_size;
        cell["total_tokens"] = c.plan.total_tokens;
        cell["total_flops"] = c.plan.total_flops;
        cell["device_hours"] = device_hours(c.plan, t);
        total_flops += c.plan.total_flops;
        total_hours += device_hours(c.plan, t);
        j["cells"].push_back(std::move(cell));
    }
    j["total_flops"] = total_flops;
    j["device_hours"] = total_hours;
    j["throughput"] = {{"peak_flops", t.peak_flops}, {"mfu", t.mfu}};
    return j.dump(2) + "\n";
}

}  // namespace l3lab::sweep
