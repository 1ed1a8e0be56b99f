#include "runner/sweep/results.h"

#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runner/metrics/table.h"
#include "runner/util/atomic_file.h"
#include "runner/util/format.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace l3lab::sweep {

namespace {

constexpr double kMissing = std::numeric_limits<double>::quiet_NaN();

std::optional<json> read_json(const fs::path& path) {
    std::ifstream in(path);
    if (!in) return std::nullopt;
    try {
        return json::parse(in);
    } catch (const json::exception&) {
        return std::nullopt;
    }
}

std::optional<double> number(const json& j, const char* key) {
    if (!j.contains(key) || !j[key].is_number()) return std::nullopt;
    double v = j[key].get<double>();
    return std::isfinite(v) ? std::optional(v) : std::nullopt;
}

std::string short_key(const std::string& key) {
    size_t dot = key.rfind('.');
    return dot == std::string::npos ? key : key.substr(dot + 1);
}

std::string shown(const std::optional<double>& v, const char* format = "{:.6f}") {
    return v ? fmt::format(fmt::runtime(format), *v) : "";
}

// RFC 4180: a field with a comma, quote or line break is quoted, quotes doubled.
std::string csv_field(const std::string& s) {
    if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
    std::string out = "\"";
    for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
    return out + "\"";
}

std::string full(double v) { return std::isfinite(v) ? fmt::format("{}", v) : ""; }

}  // namespace

std::vector<CellResult> gather_results(const Sweep& sweep) {
    std::vector<CellResult> results;
    for (const auto& cell : sweep.cells) {
        CellResult r;
        r.cell = &cell;
        r.status = read_cell_status(sweep, cell);
        for (const auto& a : r.status.attempts) r.wall_time_s += a.seconds;
        if (r.status.state == CellState::Completed) {
            auto summary = read_json(fs::path(r.status.run_dir) / "summary.json");
            if (summary) {
                r.metric = summary->value("metric", "");
                r.final_val_bpb = number(*summary, "final_val");
                r.min_val_bpb = number(*summary, "min_val_bpb");
                r.core_score = number(*summary, "core_metric");
                r.train_time_s = number(*summary, "total_training_time").value_or(0);
            }
            if (!r.final_val_bpb) {
                r.status.state = CellState::Failed;
                r.status.last_error = summary ? "completed without a final validation metric in summary.json"
                                              : "completed, but summary.json is missing or unreadable";
            }
        }
        if (r.status.attempts.empty()) r.wall_time_s = r.train_time_s;  // trained outside `sweep run`
        results.push_back(std::move(r));
    }
    return results;
}

std::string status_table(const Sweep& sweep, const std::vector<CellResult>& results) {
    std::vector<std::string> header = {"#"};
    for (const auto& k : sweep.swept_keys) header.push_back(short_key(k));
    for (const char* h : {"state", "step", "tries", "val bpb", "wall s", "dir", "last error"}) header.push_back(h);
    std::vector<std::vector<std::string>> rows = {header};
    std::map<std::string, int> counts;
    for (const auto& r : results) {
        const auto& s = r.status;
        std::vector<std::string> row = {std::to_string(r.cell->index)};
        for (const auto& [k, v] : r.cell->swept) row.push_back(v);
        std::string state = to_string(s.state);
        if (s.config_changed) state += "*";
        counts[to_string(s.state)]++;
        std::string error = s.last_error.size() > 120 ? s.last_error.substr(0, 117) + "..." : s.last_error;
        row.insert(row.end(), {state, std::to_string(s.step) + "/" + std::to_string(s.num_iterations),
                               std::to_string(s.attempts.size()), shown(r.final_val_bpb, "{:.4f}"),
                               r.wall_time_s > 0 ? fmt::format("{:.1f}", r.wall_time_s) : "", r.cell->dir, error});
        rows.push_back(std::move(row));
    }
    std::ostringstream out;
    out << "sweep " << sweep.name << ": " << results.size() << " cells in " << sweep.sweep_dir() << "/\n\n";
    out << util::aligned_table(rows, header.size() - 2);
    out << "\n";
    bool first = true;
    for (const char* state : {"completed", "running", "interrupted", "failed", "pending"}) {
        out << (first ? "" : ", ") << counts[state] << " " << state;
        first = false;
    }
    out << "\n";
    bool changed = false;
    for (const auto& r : results) changed = changed || r.status.config_changed;
    if (changed) out << "* the run directory's frozen config differs from what the sweep file now gives this cell\n";
    return out.str();
}

std::string status_json(const Sweep& sweep, const std::vector<CellResult>& results) {
    nlohmann::ordered_json j;
    j["name"] = sweep.name;
    j["output"] = sweep.sweep_dir();
    j["cells"] = nlohmann::ordered_json::array();
    for (const auto& r : results) {
        nlohmann::ordered_json c;
        c["index"] = r.cell->index;
        c["id"] = r.cell->id;
        c["dir"] = r.cell->dir;
        c["run_dir"] = r.status.run_dir;
        c["swept"] = nlohmann::ordered_json::object();
        for (const auto& [k, v] : r.cell->swept) c["swept"][k] = v;
        c["state"] = to_string(r.status.state);
        c["step"] = r.status.step;
        c["num_iterations"] = r.status.num_iterations;
        c["attempts"] = r.status.attempts.size();
        c["last_error"] = r.status.last_error;
        c["config_changed"] = r.status.config_changed;
        c["final_val_bpb"] = r.final_val_bpb ? json(*r.final_val_bpb) : json(nullptr);
        c["min_val_bpb"] = r.min_val_bpb ? json(*r.min_val_bpb) : json(nullptr);
        c["core_score"] = r.core_score ? json(*r.core_score) : json(nullptr);
        c["wall_time_s"] = r.wall_time_s;
        j["cells"].push_back(std::move(c));
    }
    return j.dump(2) + "\n";
}

std::pair<std::string, std::string> write_results(const Sweep& sweep, const std::vector<CellResult>& results) {
    // Column by column, in the order of the CSV header (docs/sweeps.md lists them).
    std::vector<metrics::TableColumn> columns;
    auto ints = [&](const std::string& name, auto get) {
        std::vector<int64_t> v;
        for (const auto& r : results) v.push_back(static_cast<int64_t>(get(r)));
        columns.push_back({name, std::move(v)});
    };
    auto doubles = [&](const std::string& name, auto get) {
        std::vector<double> v;
        for (const auto& r : results) v.push_back(get(r));
        columns.push_back({name, std::move(v)});
    };
    auto texts = [&](const std::string& name, auto get) {
        std::vector<std::string> v;
        for (const auto& r : results) v.push_back(get(r));
        columns.push_back({name, std::move(v)});
    };
    auto plan = [](const CellResult& r) -> const plan::Plan& { return r.cell->plan; };
    ints("index", [](const CellResult& r) { return r.cell->index; });
    texts("id", [](const CellResult& r) { return r.cell->id; });
    texts("dir", [](const CellResult& r) { return r.cell->dir; });
    texts("state", [](const CellResult& r) { return std::string(to_string(r.status.state)); });
    for (size_t k = 0; k < sweep.swept_keys.size(); ++k)
        texts(sweep.swept_keys[k], [k](const CellResult& r) { return r.cell->swept[k].second; });
    ints("depth", [&](const CellResult& r) { return plan(r).model.n_layer; });
    ints("n_l3_layers", [&](const CellResult& r) { return plan(r).model.l3.size(); });
    doubles("target_flops", [](const CellResult& r) { return r.cell->experiment.horizon.target_flops; });
    doubles("target_param_data_ratio",
            [](const CellResult& r) { return r.cell->experiment.horizon.target_param_data_ratio; });
    ints("params_total", [&](const CellResult& r) { return plan(r).shape.counts.total; });
    ints("params_scaling", [&](const CellResult& r) { return plan(r).scaling_params; });
    ints("params_l3", [&](const CellResult& r) {
        return plan(r).shape.counts.l3_embeds + plan(r).shape.counts.l3_matrices;
    });
    ints("flops_per_token", [&](const CellResult& r) { return plan(r).shape.flops_per_token; });
    ints("num_iterations", [&](const CellResult& r) { return plan(r).num_iterations; });
    ints("total_batch_size", [&](const CellResult& r) { return plan(r).total_batch_size; });
    ints("tokens", [&](const CellResult& r) { return plan(r).total_tokens; });
    doubles("total_flops", [&](const CellResult& r) { return plan(r).total_flops; });
    doubles("final_val_bpb", [](const CellResult& r) { return r.final_val_bpb.value_or(kMissing); });
    doubles("min_val_bpb", [](const CellResult& r) { return r.min_val_bpb.value_or(kMissing); });
    doubles("core_score", [](const CellResult& r) { return r.core_score.value_or(kMissing); });  // empty, never 0
    doubles("wall_time_s", [](const CellResult& r) { return r.wall_time_s; });
    ints("step", [](const CellResult& r) { return r.status.step; });
    texts("last_error", [](const CellResult& r) { return r.status.last_error; });
    texts("metric", [](const CellResult& r) { return r.metric; });
    doubles("train_time_s", [](const CellResult& r) { return r.train_time_s; });
    ints("attempts", [](const CellResult& r) { return r.status.attempts.size(); });
    ints("config_changed", [](const CellResult& r) { return r.status.config_changed ? 1 : 0; });

    std::ostringstream csv;
    for (size_t c = 0; c < columns.size(); ++c) csv << (c ? "," : "") << csv_field(columns[c].name);
    csv << "\n";
    for (size_t i = 0; i < results.size(); ++i) {
        for (size_t c = 0; c < columns.size(); ++c) {
            std::string field;
            if (auto* d = std::get_if<std::vector<double>>(&columns[c].values)) field = full((*d)[i]);
            else if (auto* n = std::get_if<std::vector<int64_t>>(&columns[c].values)) field = std::to_string((*n)[i]);
            else field = std::get<std::vector<std::string>>(columns[c].values)[i];
            csv << (c ? "," : "") << csv_field(field);
        }
        csv << "\n";
    }
    const fs::path dir = sweep.sweep_dir();
    fs::create_directories(dir);
    const std::string csv_path = (dir / "results.csv").string(), h5_path = (dir / "results.h5").string();
    util::write_file_atomic(csv_path, csv.str());
    metrics::write_table(h5_path, "cells", columns,
                         {{"sweep", sweep.name}, {"source", sweep.source}, {"experiment", sweep.experiment}});
    return {csv_path, h5_path};
}

}  // namespace l3lab::sweep
