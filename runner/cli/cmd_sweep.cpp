// `l3lab sweep SUBCOMMAND`: sweeps of experiments (docs/sweeps.md). Only `plan` exists so far.
#include <boost/program_options.hpp>

#include "runner/cli/commands.h"
#include "runner/sweep/sweep.h"

namespace po = boost::program_options;

namespace l3lab::cli {

namespace {

constexpr const char* kSubcommands = "plan";

int sweep_plan(const std::vector<std::string>& args, std::ostream& out) {
    po::options_description options("options");
    options.add_options()("json", "print one JSON object instead of the table")(
        "peak-flops", po::value<double>()->default_value(989e12, "989e12"),
        "device peak FLOP/s of the throughput model (H100/H200 bf16 dense)")(
        "mfu", po::value<double>()->default_value(0.45, "0.45"), "model FLOPs utilization of the throughput model");
    po::variables_map vm;
    std::vector<std::string> positionals;
    if (!parse_command(args, options, "sweep plan SWEEP.yaml [--json] [--peak-flops X] [--mfu Y]",
                       "Expands the sweep into its cells and plans every one as 'l3lab plan' would, without libtorch:\n"
                       "swept values, parameter counts, FLOPs per token, iterations, batch, tokens, total FLOPs and\n"
                       "device-hours = total FLOPs / (peak FLOP/s x MFU) / 3600. Creates nothing.",
                       vm, positionals, out))
        return 0;
    if (positionals.empty()) throw UsageError("missing the sweep file");
    if (positionals.size() > 1) throw UsageError("sweep plan takes one sweep file, got '" + positionals[1] + "' too");
    sweep::Throughput t{vm["peak-flops"].as<double>(), vm["mfu"].as<double>()};
    if (!(t.peak_flops > 0)) throw UsageError("--peak-flops must be positive");
    if (!(t.mfu > 0 && t.mfu <= 1)) throw UsageError("--mfu must be in (0, 1]");
    sweep::Sweep s = sweep::load_sweep(positionals.front());
    out << (vm.count("json") ? sweep::plan_json(s, t) : sweep::plan_table(s, t));
    return 0;
}

}  // namespace

int cmd_sweep(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
    (void)err;
    if (args.empty()) throw UsageError(std::string("missing the subcommand (") + kSubcommands + ")");
    const std::string& sub = args.front();
    if (sub == "--help" || sub == "-h") {
        out << "usage: l3lab sweep plan SWEEP.yaml [--json] [--peak-flops X] [--mfu Y]\n\n"
               "Sweeps of experiments (grid, zip, seeds over a base experiment). Subcommands:\n"
               "  plan    every cell's plan: parameters, FLOPs, tokens, iterations, batch, device-hours\n";
        return 0;
    }
    std::vector<std::string> rest(args.begin() + 1, args.end());
    if (sub == "plan") return sweep_plan(rest, out);
    throw UsageError("unknown sweep subcommand '" + sub + "' (the sweep subcommands are: " + kSubcommands + ")");
}

}  // namespace l3lab::cli
