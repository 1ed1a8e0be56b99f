// Sweep files: a base experiment, fixed overrides, and axes (grid, zip groups, seeds) whose cartesian
// product gives the cells. Every cell is an experiment loaded and planned exactly as `l3lab plan` would,
// so a sweep that plans is a sweep whose every cell trains. No libtorch here. See docs/sweeps.md.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "runner/config/experiment.h"
#include "runner/plan/plan.h"

namespace l3lab::sweep {

// Pseudo-key accepted in `set`, `grid` and `zip` (and as a top-level key): L3 placement as fractions of
// the cell's depth, turned into model.l3.after_layers per cell.
inline constexpr const char* kL3Fraction = "l3_at_fraction";

struct Cell {
    int index = 0;
    std::string id;   // first 12 hex of sha256(to_yaml(experiment)): stable for the same resolved config
    std::string dir;  // "0003-depth=12,target_flops=1.0e+18": index and swept keys only
    std::vector<std::string> overrides;                       // dotted.key=<YAML>, in the order applied
    std::vector<std::pair<std::string, std::string>> swept;  // swept key -> value as shown
    config::Experiment experiment;
    plan::Plan plan;
};

struct Sweep {
    std::string source;      // the sweep file as given
    std::string name;
    std::string experiment;  // the base experiment's path (resolved against the sweep file)
    std::string on_failure;  // continue | abort
    std::string output;      // cells go to <output>/<name>/<cell dir>
    std::vector<std::string> swept_keys;  // grid keys, zip keys, then seed when `seeds` is given
    std::vector<Cell> cells;

    std::string sweep_dir() const;
};

// Loads, validates and expands a sweep file and plans every cell. Throws config::ConfigException with
// every problem found: the sweep file's own errors located in it, a cell's errors prefixed with the cell
// and its swept values (locations pointing into the sweep file where the value came from it).
Sweep load_sweep(const std::string& path);

// The stated throughput model: hours = total_flops / (peak_flops * mfu) / 3600.
struct Throughput {
    double peak_flops = 989e12;  // H100/H200 bf16 dense (nanochat's table)
    double mfu = 0.45;
};

double device_hours(const plan::Plan& plan, const Throughput& throughput);

// `l3lab sweep plan`: an aligned table with a totals line, or one JSON object.
std::string plan_table(const Sweep& sweep, const Throughput& throughput);
std::string plan_json(const Sweep& sweep, const Throughput& throughput);

}  // namespace l3lab::sweep
