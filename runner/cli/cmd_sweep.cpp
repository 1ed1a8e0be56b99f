// `l3lab sweep SUBCOMMAND`: sweeps of experiments (docs/sweeps.md): plan, run, status, collect, slurm.
#include <boost/program_options.hpp>

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "runner/cli/commands.h"
#include "runner/sweep/results.h"
#include "runner/sweep/slurm.h"
#include "runner/sweep/supervisor.h"
#include "runner/sweep/sweep.h"

namespace po = boost::program_options;

namespace l3lab::cli {

namespace {

constexpr const char* kSubcommands = "plan, run, status, collect, slurm";

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


std::string one_sweep_file(const std::vector<std::string>& positionals, const char* sub) {
    if (positionals.empty()) throw UsageError("missing the sweep file");
    if (positionals.size() > 1)
        throw UsageError(std::string("sweep ") + sub + " takes one sweep file, got '" + positionals[1] + "' too");
    return positionals.front();
}

int sweep_run(const std::vector<std::string>& args, std::ostream& out) {
    po::options_description options("options");
    options.add_options()("jobs,j", po::value<int>()->default_value(1), "cells trained at the same time")(
        "retry-failed", "rerun failed cells (from their newest complete checkpoint)")(
        "cells", po::value<std::string>(), "only these cell indices, e.g. 0,3,5-7")(
        "devices", po::value<std::string>(),
        "CUDA devices, one per job slot, e.g. 0,1,2,3 (default: the visible GPUs when cells use CUDA)")(
        "srun-tasks", po::value<int>()->default_value(0),
        "launch each cell with 'srun --ntasks=N' (multi-GPU cells inside a SLURM allocation)");
    po::variables_map vm;
    std::vector<std::string> positionals;
    if (!parse_command(args, options, "sweep run SWEEP.yaml [--jobs K] [--retry-failed] [--cells LIST] [--devices LIST]",
                       "Trains the sweep's cells, K at a time, each as 'l3lab train ... --run-dir <cell> --resume auto'.\n"
                       "Completed cells are skipped, interrupted ones resume from their checkpoints, failed ones rerun\n"
                       "only with --retry-failed; a cell another process is running is left to it (cell locks).\n"
                       "SIGTERM/SIGINT/SIGUSR1 are passed on: the trainings checkpoint, and the exit code is 3.\n"
                       "Exit 0: every selected cell completed (or running elsewhere); 1: a cell failed.",
                       vm, positionals, out))
        return 0;
    sweep::Sweep s = sweep::load_sweep(one_sweep_file(positionals, "run"));
    sweep::RunOptions o;
    o.jobs = vm["jobs"].as<int>();
    if (o.jobs < 1) throw UsageError("--jobs must be at least 1");
    o.retry_failed = vm.count("retry-failed") > 0;
    o.srun_tasks = vm["srun-tasks"].as<int>();
    if (o.srun_tasks < 0) throw UsageError("--srun-tasks must be positive");
    try {
        if (vm.count("cells")) o.cells = sweep::parse_cell_list(vm["cells"].as<std::string>(), static_cast<int>(s.cells.size()));
    } catch (const std::invalid_argument& e) {
        throw UsageError(std::string("--cells: ") + e.what());
    }
    if (vm.count("devices")) {
        std::stringstream list(vm["devices"].as<std::string>());
        std::string d;
        while (std::getline(list, d, ','))
            if (!d.empty()) o.devices.push_back(d);
        if (o.devices.size() < static_cast<size_t>(o.jobs))
            throw UsageError("--jobs " + std::to_string(o.jobs) + " needs a device per job; --devices lists " +
                             std::to_string(o.devices.size()));
    } else if (o.jobs > 1) {
        auto detected = sweep::detect_devices(s);
        if (detected.size() >= static_cast<size_t>(o.jobs)) o.devices = detected;
    }
    if (const char* exe = std::getenv("L3LAB_SWEEP_EXECUTABLE")) o.executable = exe;
    return sweep::run_sweep(s, o, out);
}

int sweep_status(const std::vector<std::string>& args, std::ostream& out) {
    po::options_description options("options");
    options.add_options()("json", "print one JSON object instead of the table");
    po::variables_map vm;
    std::vector<std::string> positionals;
    if (!parse_command(args, options, "sweep status SWEEP.yaml [--json]",
                       "Every cell's state (pending, running, interrupted, completed, failed), step, attempts,\n"
                       "final validation bpb, wall time and last error, from the files alone. Changes nothing.",
                       vm, positionals, out))
        return 0;
    sweep::Sweep s = sweep::load_sweep(one_sweep_file(positionals, "status"));
    auto results = sweep::gather_results(s);
    out << (vm.count("json") ? sweep::status_json(s, results) : sweep::status_table(s, results));
    return 0;
}

int sweep_collect(const std::vector<std::string>& args, std::ostream& out) {
    po::options_description options("options");
    po::variables_map vm;
    std::vector<std::string> positionals;
    if (!parse_command(args, options, "sweep collect SWEEP.yaml",
                       "Writes <sweep dir>/results.csv and results.h5 (group /cells): one row per cell with its swept\n"
                       "values, parameter counts, tokens, FLOPs, final and minimum validation bpb, wall time and state.\n"
                       "A cell without its final metric is failed, never zero. Then: tools/scaling/fit.py <sweep dir>.",
                       vm, positionals, out))
        return 0;
    sweep::Sweep s = sweep::load_sweep(one_sweep_file(positionals, "collect"));
    auto results = sweep::gather_results(s);
    sweep::write_manifest(s);
    auto [csv, h5] = sweep::write_results(s, results);
    std::map<std::string, int> counts;
    for (const auto& r : results) counts[sweep::to_string(r.status.state)]++;
    out << "collected " << results.size() << " cells (" << counts["completed"] << " completed, " << counts["failed"]
        << " failed, " << counts["running"] + counts["interrupted"] + counts["pending"] << " unfinished) into\n  " << csv
        << "\n  " << h5 << "\n";
    return 0;
}

int sweep_slurm(const std::vector<std::string>& args, std::ostream& out) {
    po::options_description options("options");
    options.add_options()("out", po::value<std::string>(), "directory for the sbatch script (required)")(
        "throttle", po::value<int>()->default_value(0), "at most N array tasks at once (--array=...%N)")(
        "partition", po::value<std::string>(), "SLURM partition")(
        "gpus-per-cell", po::value<int>()->default_value(0), "GPUs per cell; > 1 launches the ranks with srun")(
        "cpus-per-cell", po::value<int>()->default_value(0), "--cpus-per-task of each array task")(
        "time", po::value<std::string>(), "--time limit of each array task, e.g. 04:00:00")(
        "signal-seconds", po::value<int>()->default_value(120), "USR1 this many seconds before the time limit")(
        "sbatch-arg", po::value<std::vector<std::string>>()->composing(), "extra #SBATCH line (repeatable)")(
        "retry-failed", "include failed cells")("submit", "run sbatch on the script");
    po::variables_map vm;
    std::vector<std::string> positionals;
    if (!parse_command(args, options,
                       "sweep slurm SWEEP.yaml --out DIR [--throttle N] [--partition P] [--gpus-per-cell G] [--sbatch-arg A]... [--submit]",
                       "Writes DIR/<name>.sbatch, a job array with one task per unfinished cell; each task runs\n"
                       "'l3lab sweep run SWEEP --cells $SLURM_ARRAY_TASK_ID'. SLURM sends USR1 ahead of the time limit\n"
                       "(--signal-seconds); the training checkpoints and the task requeues itself. Prints the submit\n"
                       "command; --submit runs it.",
                       vm, positionals, out))
        return 0;
    sweep::Sweep s = sweep::load_sweep(one_sweep_file(positionals, "slurm"));
    if (!vm.count("out")) throw UsageError("--out DIR is required (where the sbatch script goes)");
    sweep::SlurmOptions o;
    o.out_dir = vm["out"].as<std::string>();
    o.throttle = vm["throttle"].as<int>();
    o.gpus_per_cell = vm["gpus-per-cell"].as<int>();
    o.cpus_per_cell = vm["cpus-per-cell"].as<int>();
    o.signal_seconds = vm["signal-seconds"].as<int>();
    if (o.throttle < 0 || o.gpus_per_cell < 0 || o.cpus_per_cell < 0 || o.signal_seconds < 0)
        throw UsageError("--throttle, --gpus-per-cell, --cpus-per-cell and --signal-seconds must not be negative");
    if (vm.count("partition")) o.partition = vm["partition"].as<std::string>();
    if (vm.count("time")) o.time_limit = vm["time"].as<std::string>();
    if (vm.count("sbatch-arg")) o.sbatch_args = vm["sbatch-arg"].as<std::vector<std::string>>();
    for (const auto& a : o.sbatch_args)
        if (a.find('\n') != std::string::npos) throw UsageError("--sbatch-arg must be one line");
    o.retry_failed = vm.count("retry-failed") > 0;
    if (const char* exe = std::getenv("L3LAB_SWEEP_EXECUTABLE")) o.executable = exe;
    sweep::SlurmScript script = sweep::write_slurm_script(s, o);
    if (script.cells.empty()) {
        out << "sweep " << s.name << ": every cell is completed" << (o.retry_failed ? "" : " or failed (--retry-failed)")
            << "; nothing to submit\n";
        return 0;
    }
    const std::string submit = "sbatch " + script.path;
    out << "wrote " << script.path << ": " << script.cells.size() << " array task(s), --array=" << script.array << "\n";
    if (!vm.count("submit")) {
        out << "submit with:\n  " << submit << "\n";
        return 0;
    }
    out << "$ " << submit << std::endl;
    FILE* pipe = ::popen(("sbatch '" + script.path + "' 2>&1").c_str(), "r");
    if (!pipe) throw std::runtime_error("cannot run sbatch");
    char buffer[512];
    while (std::fgets(buffer, sizeof buffer, pipe)) out << buffer;
    const int rc = ::pclose(pipe);
    if (rc != 0) {
        out << "sbatch failed (exit status " << (WIFEXITED(rc) ? WEXITSTATUS(rc) : -1) << ")\n";
        return 1;
    }
    return 0;
}

}  // namespace

int cmd_sweep(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
    (void)err;
    if (args.empty()) throw UsageError(std::string("missing the subcommand (") + kSubcommands + ")");
    const std::string& sub = args.front();
    if (sub == "--help" || sub == "-h") {
        out << "usage: l3lab sweep plan|run|status|collect|slurm SWEEP.yaml [options]\n\n"
               "Sweeps of experiments (grid, zip, seeds over a base experiment). Subcommands:\n"
               "  plan     every cell's plan: parameters, FLOPs, tokens, iterations, batch, device-hours\n"
               "  run      train the cells here, K at a time; idempotent and resumable\n"
               "  status   every cell's state, step, attempts, last error\n"
               "  collect  results.csv and results.h5, one row per cell\n"
               "  slurm    an sbatch job array over the unfinished cells\n"
               "'l3lab sweep SUBCOMMAND --help' lists its options.\n";
        return 0;
    }
    std::vector<std::string> rest(args.begin() + 1, args.end());
    if (sub == "plan") return sweep_plan(rest, out);
    if (sub == "run") return sweep_run(rest, out);
    if (sub == "status") return sweep_status(rest, out);
    if (sub == "collect") return sweep_collect(rest, out);
    if (sub == "slurm") return sweep_slurm(rest, out);
    throw UsageError("unknown sweep subcommand '" + sub + "' (the sweep subcommands are: " + kSubcommands + ")");
}

}  // namespace l3lab::cli
