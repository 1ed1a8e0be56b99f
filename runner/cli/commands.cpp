#include "runner/cli/commands.h"

#include <boost/program_options.hpp>

#include <fmt/format.h>

#include "runner/config/experiment.h"
#include "runner/config/schema.h"
#include "runner/plan/plan.h"
#include "runner/plan/report.h"

namespace po = boost::program_options;

namespace l3lab::cli {

const std::vector<Command>& commands() {
    static const std::vector<Command> list = {
        {"config", "EXP.yaml [key=value ...] | --keys", "print the fully resolved experiment YAML (defaults included)",
         cmd_config},
        {"plan", "EXP.yaml [key=value ...] [--json] [--world-size N]",
         "model shapes, parameter groups, FLOPs/token, horizon, batch, LR/WD scaling", cmd_plan},
        {"train", "EXP.yaml [key=value ...] [--run-dir D] [--resume auto|never] [--init-from W]",
         "train one run (nanochat's base_train loop) into a new run directory", cmd_train},
        {"resume", "RUN_DIR", "continue a run from its newest complete checkpoint", cmd_resume},
        {"reproduce", "RUN_DIR [--check]", "rerun a run from its frozen config into a new run directory", cmd_reproduce},
        {"eval", "CKPT_DIR [--tokens N] [--json]", "validation bits-per-byte and mean loss of a checkpoint", cmd_eval},
        {"sample", "CKPT_DIR --prompt TEXT [...]", "generate text from a checkpoint (greedy, or temperature/top-k)",
         cmd_sample},
        {"export", "RUN_DIR|CKPT_DIR --output DIR [--tag TAG] [--step N]",
         "write a checkpoint as nanochat's model_<step>.pt + meta_<step>.json", cmd_export},
        {"data", "train-tokenizer|tokenize|inspect|batches [options]",
         "tokenizer training, token shards + manifest, shard inspection, batch preview", cmd_data},
        {"sweep", "plan|run|status|collect|slurm SWEEP.yaml [options]",
         "sweeps: plan every cell, run them (resumable, locked), status, collect results, SLURM arrays", cmd_sweep},
    };
    return list;
}

bool parse_command(const std::vector<std::string>& args, po::options_description options, const std::string& usage,
                   const std::string& about, po::variables_map& vm, std::vector<std::string>& positionals,
                   std::ostream& out) {
    options.add_options()("help,h", "show this help");
    po::options_description hidden;
    hidden.add_options()("positional", po::value<std::vector<std::string>>(), "");
    po::options_description all;
    all.add(options).add(hidden);
    po::positional_options_description positional;
    positional.add("positional", -1);
    po::store(po::command_line_parser(args).options(all).positional(positional).run(), vm);
    po::notify(vm);
    if (vm.count("help")) {
        out << "usage: l3lab " << usage << "\n\n" << about << "\n\n" << options << "\n";
        return false;
    }
    positionals.clear();
    if (vm.count("positional")) positionals = vm["positional"].as<std::vector<std::string>>();
    return true;
}

namespace {

// Parses `EXP [key=value ...]` plus the command's own flags. Returns false when --help was printed.
struct ExperimentArgs {
    std::string experiment;
    std::vector<std::string> overrides;
    po::variables_map vm;
};

bool parse_experiment_args(const std::vector<std::string>& args, po::options_description options,
                           const char* name, const char* usage, const char* about, ExperimentArgs& out,
                           std::ostream& stdout_, bool experiment_required = true) {
    std::vector<std::string> positionals;
    if (!parse_command(args, options, std::string(name) + " " + usage, about, out.vm, positionals, stdout_)) return false;
    if (positionals.empty()) {
        if (experiment_required) throw UsageError("missing the experiment file");
        return true;
    }
    out.experiment = positionals.front();
    for (size_t i = 1; i < positionals.size(); ++i) {
        if (positionals[i].find('=') == std::string::npos)
            throw UsageError("'" + positionals[i] + "' is not an override: expected dotted.key=value after the experiment");
        out.overrides.push_back(positionals[i]);
    }
    return true;
}

std::string keys_table() {
    std::string out;
    for (const auto& f : config::experiment_schema())
        out += fmt::format("{:<34} {:<28} {}\n", f.path, f.default_yaml.size() > 28 ? "[...]" : f.default_yaml, f.help);
    return out;
}

}  // namespace

int cmd_config(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
    (void)err;
    po::options_description options("options");
    options.add_options()("keys", "list every key with its default and meaning, then exit");
    ExperimentArgs a;
    const char* about =
        "Loads EXP.yaml with its extends chain, applies the overrides, validates every key and prints the\n"
        "resolved experiment with all defaults. Creates nothing. The output is byte-identical for the same inputs.\n"
        "The model and horizon are checked as by 'l3lab plan', so a config that prints is one that plans.";
    if (!parse_experiment_args(args, options, "config", commands()[0].usage, about, a, out, false)) return 0;
    if (a.vm.count("keys")) {
        out << keys_table();
        return 0;
    }
    if (a.experiment.empty()) throw UsageError("missing the experiment file");
    config::Experiment e = config::load_experiment(a.experiment, a.overrides);
    plan::make_plan(e);  // the same checks as `plan`: a config that prints is a config that plans
    out << config::to_yaml(e);
    return 0;
}

int cmd_plan(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
    po::options_description options("options");
    options.add_options()("json", "print one JSON object instead of the table")(
        "world-size", po::value<int>()->default_value(1), "number of data-parallel ranks to plan for");
    ExperimentArgs a;
    const char* about =
        "Derives everything the trainer decides before its first step: model shapes, parameter counts by\n"
        "group, FLOPs per token, the horizon and the rule that set it, total batch and gradient accumulation,\n"
        "and the batch-size LR and weight-decay scaling - exactly as nanochat's base_train.py does.";
    if (!parse_experiment_args(args, options, "plan", commands()[1].usage, about, a, out)) return 0;
    const int world_size = a.vm["world-size"].as<int>();
    if (world_size < 1) throw UsageError("--world-size must be at least 1");
    config::Experiment e = config::load_experiment(a.experiment, a.overrides);
    plan::Plan p = plan::make_plan(e, world_size);
    if (a.vm.count("json")) {
        out << plan::plan_json(e, p);
        for (const auto& w : p.warnings) err << "warning: " << w << "\n";
    } else {
        out << plan::plan_table(e, p);
    }
    return 0;
}

}  // namespace l3lab::cli
