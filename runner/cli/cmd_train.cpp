// `l3lab train` and `l3lab resume`: everything that can be checked without libtorch is checked here,
// before any run directory exists (bad config or data: exit 2); then the run directory is made and the
// torch module trains in it.
#include <boost/program_options.hpp>

#include <cmath>
#include <filesystem>
#include <functional>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "modules/shapes/shapes.h"
#include "runner/cli/cli.h"
#include "runner/cli/commands.h"
#include "runner/config/experiment.h"
#include "runner/config/schema.h"
#include "runner/data/core_tasks.h"
#include "runner/util/cpu_features.h"
#include "runner/data/errors.h"
#include "runner/data/shard_set.h"
#include "runner/data/tokenizer.h"
#include "runner/dist/launch.h"
#include "runner/io/safetensors.h"
#include "runner/metrics/metrics.h"
#include "runner/plan/plan.h"
#include "runner/run/run_dir.h"
#include "runner/torch_module.h"
#include "runner/train/checkpoints.h"
#include "runner/train/nanochat_files.h"
#include "runner/util/format.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace l3lab::cli {

namespace {

std::string read_text(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream buffer;
    buffer << in.rdbuf();
    return buffer.str();
}

// Data parallelism: rank r of W reads row groups r, r + W, ... of every shard (the reference's striding),
// so data whose largest shard has fewer than W row groups leaves the last ranks without a document.
void check_every_rank_reads(const config::Experiment& e, const std::string& key, const data::ShardSet& shards,
                            int world_size) {
    if (world_size <= 1) return;
    const uint64_t G = static_cast<uint64_t>(e.data_row_group_docs);
    uint64_t largest = 0, groups = 0;
    for (const auto& shard : shards.shards()) {
        largest = std::max<uint64_t>(largest, shard.documents());
        groups += (shard.documents() + G - 1) / G;
    }
    const uint64_t most = (largest + G - 1) / G;  // row groups of the largest shard: ranks 0 .. most-1 read
    if (most >= static_cast<uint64_t>(world_size)) return;
    const std::string first_idle = std::to_string(most), last = std::to_string(world_size - 1);
    std::string remedy = "use at most " + std::to_string(most) + (most == 1 ? " process" : " processes");
    if (largest >= static_cast<uint64_t>(world_size))
        remedy += ", data.row_group_docs <= " + std::to_string((largest - 1) / static_cast<uint64_t>(world_size - 1));
    remedy += " or more documents";
    throw config::ConfigException(
        {{e.where(key), key,
          shards.spec() + ": " + util::group_digits(static_cast<int64_t>(shards.documents())) + " documents make " +
              util::group_digits(static_cast<int64_t>(groups)) + (groups == 1 ? " row group" : " row groups") +
              " of data.row_group_docs = " + util::group_digits(e.data_row_group_docs) + " (at most " +
              std::to_string(most) + " in one shard) for " + std::to_string(world_size) + " ranks: rank" +
              (most + 1 == static_cast<uint64_t>(world_size) ? " " + first_idle : "s " + first_idle + "-" + last) +
              " would get no documents (rank r of W reads row groups r, r + W, ... of every shard); " + remedy}});
}

// Opening the data checks every shard and the tokenizer/shard pairing: problems exit 2 here, before a
// run directory is made, with the file (and offset) named.
void check_data(const config::Experiment& e, int world_size) {
    // device: cuda needs the torch module's CUDA kernels and a visible device (docs/cuda.md). Asking the
    // module loads libtorch now rather than after the run directory exists; training loads it anyway.
    if (e.device == "cuda") {
        std::string error;
        if (const TorchModule* module = torch_module(&error)) {
            const int devices = module->cuda_devices();
            if (devices < 0)
                throw config::ConfigException(
                    {{e.where("device"), "device",
                      "cuda but this l3lab was built without its CUDA kernels (CMake found no CUDA libtorch or no "
                      "nvcc, or L3LAB_CUDA=OFF; docs/cuda.md); use device: cpu"}});
            if (devices == 0)
                throw config::ConfigException(
                    {{e.where("device"), "device",
                      "cuda but no CUDA device is visible (no GPU, no driver, or CUDA_VISIBLE_DEVICES hides them); "
                      "use device: cpu, or auto to take a GPU when there is one"}});
        }
    }
    data::ShardSetOptions options;
    if (fs::exists(e.data_tokenizer)) {
        std::unique_ptr<data::Tokenizer> tokenizer;
        try {
            tokenizer = data::load_tokenizer(e.data_tokenizer);
        } catch (const data::DataError& err) {  // located at the key that names the file, as for shards
            std::vector<config::ConfigError> errors = err.errors();
            errors.insert(errors.begin(), {e.where("data.tokenizer"), "data.tokenizer",
                                           "cannot use this tokenizer (" + e.data_tokenizer + "):"});
            throw config::ConfigException(errors);
        }
        options.vocab_size = tokenizer->vocab_size();
        options.bos_id = tokenizer->bos_id();
        options.tokenizer_sha256 = tokenizer->sha256();
        options.tokenizer_name = e.data_tokenizer;
        if (tokenizer->vocab_size() != e.model.vocab_size)
            throw config::ConfigException({{e.where("model.vocab_size"), "model.vocab_size",
                                            std::to_string(e.model.vocab_size) + " differs from the tokenizer's " +
                                                std::to_string(tokenizer->vocab_size()) + " (" + e.data_tokenizer + ")"}});
    }
    for (const auto& [key, spec, split] : {std::tuple{"data.train", e.data_train, "train"}, std::tuple{"data.val", e.data_val, "val"}}) {
        options.split = split;
        try {
            auto shards = data::ShardSet::open(spec, options);
            if (shards->vocab_size() > e.model.vocab_size)
                throw config::ConfigException({{e.where("model.vocab_size"), "model.vocab_size",
                                                "the shards " + spec + " use a vocabulary of " +
                                                    std::to_string(shards->vocab_size()) + " tokens, more than the model's " +
                                                    std::to_string(e.model.vocab_size)}});
            check_every_rank_reads(e, key, *shards, world_size);
        } catch (const data::DataError& err) {
            std::vector<config::ConfigError> errors = err.errors();
            errors.insert(errors.begin(), {e.where(key), key, "cannot use these shards (" + spec + "):"});
            throw config::ConfigException(errors);
        }
    }
    // CORE (eval.core_every > 0) needs nanochat's eval bundle, which l3lab never downloads.
    if (e.core_every > 0) {
        const std::string bundle = e.core_bundle.empty() ? data::default_core_bundle() : e.core_bundle;
        std::vector<data::CoreTask> tasks;
        try {
            tasks = data::read_core_bundle(bundle);
        } catch (const data::DataError& err) {
            std::vector<config::ConfigError> errors = err.errors();
            errors.insert(errors.begin(), {e.where("eval.core_every"), "eval.core_every",
                                           "CORE is on (every " + std::to_string(e.core_every) +
                                               " steps and at the end) but its bundle cannot be used; put nanochat's "
                                               "eval_bundle there, name it with eval.core_bundle, or set eval.core_every=-1:"});
            throw config::ConfigException(errors);
        }
        if (const std::string problem = data::core_max_per_task_problem(tasks, e.core_max_per_task); !problem.empty())
            throw config::ConfigException({{e.where("eval.core_max_per_task"), "eval.core_max_per_task", problem}});
    }
}

// A nanochat checkpoint (a directory with model_<step>.pt + meta_<step>.json, or a model_*.pt): its
// meta's model_config must describe the experiment's model, field by field (GPTConfig's names). The
// tensors themselves are checked name by name when the trainer loads them.
void check_nanochat_init_from(const plan::Plan& p, const std::string& path) {
    auto fail = [&](const std::string& message) { throw config::ConfigException({{{path, 0, 0}, "--init-from", message}}); };
    std::string model;
    try {
        model = train::nanochat_model_file(path);
    } catch (const std::runtime_error& e) {
        const std::string what = e.what();
        fail(what.rfind(path + ": ", 0) == 0 ? what.substr(path.size() + 2) : what);
    }
    const fs::path meta = train::nanochat_meta_file(model);
    nlohmann::json m;
    try {
        m = nlohmann::json::parse(read_text(meta)).at("model_config");
    } catch (const std::exception& err) {
        fail(meta.string() + ": cannot read its model_config (" + err.what() + ")");
    }
    std::string after;
    for (const auto& l3 : p.model.l3) after += (after.empty() ? "" : ",") + std::to_string(l3.after_block);
    const auto* l3 = p.model.l3.empty() ? nullptr : &p.model.l3.front().options;
    const std::vector<std::pair<std::string, nlohmann::json>> want = {
        {"sequence_len", p.model.sequence_len}, {"vocab_size", p.model.vocab_size}, {"n_layer", p.model.n_layer},
        {"n_head", p.model.n_head}, {"n_kv_head", p.model.n_kv_head}, {"n_embd", p.model.n_embd},
        {"window_pattern", p.model.window_pattern}, {"l3_after_layers", after}};
    std::vector<config::ConfigError> errors;
    auto differs = [&](const std::string& key, const nlohmann::json& ours) {
        if (!m.contains(key)) return errors.push_back({{meta.string(), 0, 0}, "--init-from", key + ": missing from model_config"});
        if (m[key] != ours)
            errors.push_back({{meta.string(), 0, 0}, "--init-from",
                              key + ": the checkpoint has " + m[key].dump() + ", the experiment " + ours.dump()});
    };
    for (const auto& [key, ours] : want) differs(key, ours);
    if (l3) {
        differs("l3_n_emb", l3->n_emb);
        differs("l3_k_max", l3->k_max);
        differs("l3_tie_kv", l3->tie_kv);
        if (m.value("l3_d_up", nlohmann::json(0)) != nlohmann::json(0)) differs("l3_d_up", l3->d_up);  // 0 = 4 * n_embd
    }
    if (!errors.empty()) throw config::ConfigException(errors);
}

// --init-from: the file must hold exactly the model's tensors (names and shapes), L3 bounds included.
void check_init_from(const config::Experiment& e, const plan::Plan& p, const std::string& path) {
    if (train::nanochat_init_path(path)) return check_nanochat_init_from(p, path);
    io::SafetensorsFile file;
    try {
        file = io::read_safetensors(path);
    } catch (const io::SafetensorsError& err) {
        throw config::ConfigException({{{path, 0, 0}, "--init-from", err.what()}});
    }
    std::vector<std::pair<std::string, std::vector<int64_t>>> expected;
    for (const auto& param : p.shape.params) expected.emplace_back(param.name, param.shape);
    for (const auto& placement : p.model.l3)
        expected.emplace_back("l3_layers." + std::to_string(placement.after_block) + ".bounds",
                              std::vector<int64_t>{e.model.vocab_size + 1});
    std::vector<config::ConfigError> errors;
    for (const auto& problem : io::check_names_and_shapes(file, expected))
        errors.push_back({{path, 0, 0}, "--init-from", problem});
    if (!errors.empty()) throw config::ConfigException(errors);
}

const TorchModule& require_torch() {
    std::string error;
    const TorchModule* module = torch_module(&error);
    if (!module) throw std::runtime_error("the libtorch module is unavailable: " + error);
    return *module;
}

int start_training(const std::string& run_dir, bool resume, const std::string& init_from) {
    nlohmann::json request = {{"run_dir", run_dir}, {"resume", resume}, {"init_from", init_from}};
    return require_torch().train(request.dump());
}

// Keys that may change when a run is resumed: they do not change what is trained.
bool resumable_change(const std::string& key) {
    static const char* allowed[] = {"eval.every",      "eval.tokens",           "sample.every",
                                    "sample.prompts",  "sample.max_tokens",     "checkpoint.every",
                                    "checkpoint.keep_last", "batch.device_batch_size", "device_peak_flops",
                                    "distributed.timeout_s", "train.skip_nonfinite_steps", "tracking.tensorboard",
                                    "eval.core_every", "eval.core_max_per_task", "eval.core_bundle"};
    for (const char* a : allowed)
        if (key == a) return true;
    return false;
}

// The run in <output>/<name>/ with this config hash that has not completed, newest first.
std::optional<std::string> unfinished_run(const config::Experiment& e, const std::string& resolved) {
    const fs::path parent = fs::path(e.output_dir) / e.name;
    const std::string suffix = "-" + run::sha256_hex(resolved).substr(0, 8);
    std::vector<std::string> candidates;
    std::error_code ec;
    if (!fs::is_directory(parent, ec)) return std::nullopt;
    for (const auto& entry : fs::directory_iterator(parent)) {
        const std::string name = entry.path().filename().string();
        if (name.find(suffix) == std::string::npos || !run::is_run_dir(entry.path().string())) continue;
        auto status = run::read_status(entry.path().string());
        if (status && status->state == "completed") continue;
        candidates.push_back(entry.path().string());
    }
    if (candidates.empty()) return std::nullopt;
    std::sort(candidates.begin(), candidates.end());
    return candidates.back();
}

// `precision: bf16` on the CPU needs bfloat16 matrix instructions; without them oneDNN would emulate
// bfloat16 far slower than float32.
void check_precision(const config::Experiment& e) {
    if (e.precision != "bf16" || e.device != "cpu") return;
    if (const std::string problem = util::cpu_bf16_problem(); !problem.empty())
        throw config::ConfigException({{e.where("precision"), "precision", problem}});
}

// Joins the launch (one process: nothing distributed) and runs, on every rank together, the checks that
// exit 2 before any run directory exists: the plan for this world size, `more` with it, the data.
dist::Launch join_and_check(const config::Experiment& e, const std::string& resolved,
                            const std::function<void(const plan::Plan&)>& more = {}) {
    const dist::Launch launch = dist::Launch::join(resolved, e.distributed_timeout_s);
    launch.agree([&] {
        const plan::Plan p = plan::make_plan(e, launch.world_size());
        if (more) more(p);
        check_precision(e);
        check_data(e, launch.world_size());
    });
    return launch;
}

// A run's optimizer state is sharded per rank: its newest checkpoint resumes only with as many processes
// as wrote it.
void check_world_size(const std::string& run_dir, int world_size) {
    auto newest = train::newest_checkpoint(run_dir);
    if (!newest) return;
    const int written_by = train::checkpoint_world_size(newest->dir);
    if (written_by == world_size) return;
    throw config::ConfigException(
        {{{(fs::path(newest->dir) / "state.json").string(), 0, 0}, "world_size",
          "this checkpoint was written by " + std::to_string(written_by) + (written_by == 1 ? " process" : " processes") +
              " and this launch has " + std::to_string(world_size) +
              "; resume with the same number (its optimizer state is sharded per rank; docs/distributed.md)"}});
}

// Refuses a resume whose config differs from the frozen one, except on the allow-list; accepted changes
// replace the frozen config (and are logged in resume_changes.log).
void reconcile_config(const std::string& run_dir, const config::Experiment& now) {
    const std::string frozen_path = (fs::path(run_dir) / "config.yaml").string();
    config::Experiment before = config::load_experiment(frozen_path, {});
    auto a = config::flatten(before.tree), b = config::flatten(now.tree);
    std::vector<std::string> refused, accepted;
    for (const auto& [key, value] : b) {
        auto it = a.find(key);
        const std::string old = it == a.end() ? "(absent)" : it->second;
        if (old == value) continue;
        (resumable_change(key) ? accepted : refused).push_back(key + ": " + old + " -> " + value);
    }
    // The device batch may change only at an equal total batch (same steps, same tokens per step).
    if (plan::make_plan(before).total_batch_size != plan::make_plan(now).total_batch_size)
        refused.push_back("batch: the total batch size changed");
    if (!refused.empty()) {
        std::vector<config::ConfigError> errors;
        for (const auto& r : refused)
            errors.push_back({{frozen_path, 0, 0}, "", "cannot resume with a changed config: " + r});
        throw config::ConfigException(errors);
    }
    if (accepted.empty()) return;
    std::ofstream log(fs::path(run_dir) / "resume_changes.log", std::ios::app);
    for (const auto& c : accepted) log << run::timestamp_now() << " " << c << "\n";
    std::ofstream(frozen_path) << config::to_yaml(now);
}

}  // namespace

int cmd_train(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
    (void)err;
    po::options_description options("options");
    options.add_options()("run-dir", po::value<std::string>(), "put the run exactly here")(
        "resume", po::value<std::string>()->default_value("never"),
        "auto: continue an unfinished run of this config (the --run-dir, or the newest in <output>/<name>/); never")(
        "init-from", po::value<std::string>(),
        "start from these weights: l3lab's reference-named safetensors, or a nanochat checkpoint (directory or model_<step>.pt)");
    po::variables_map vm;
    std::vector<std::string> positionals;
    if (!parse_command(args, options, "train EXP.yaml [key=value ...] [--run-dir D] [--resume auto|never] [--init-from W]",
                       "Trains one run with nanochat's base_train loop. Config and data are checked before the run directory\n"
                       "is made; then runs/<name>/<timestamp>-<confighash>/ (or --run-dir) holds everything it writes.",
                       vm, positionals, out))
        return 0;
    if (positionals.empty()) throw UsageError("missing the experiment file");
    const std::string resume = vm["resume"].as<std::string>();
    if (resume != "auto" && resume != "never") throw UsageError("--resume takes auto or never, not '" + resume + "'");
    std::vector<std::string> overrides(positionals.begin() + 1, positionals.end());
    for (const auto& o : overrides)
        if (o.find('=') == std::string::npos) throw UsageError("'" + o + "' is not an override: expected dotted.key=value");

    config::Experiment e = config::load_experiment(positionals.front(), overrides);
    const std::string resolved = config::to_yaml(e);
    const std::string init_from = vm.count("init-from") ? vm["init-from"].as<std::string>() : "";
    // Data parallelism (docs/distributed.md): every rank checks the same things; rank 0 alone makes or
    // picks the run directory, and the others follow its decision. One process: the plain sequence.
    const dist::Launch launch = join_and_check(e, resolved, [&](const plan::Plan& p) {
        if (!init_from.empty()) check_init_from(e, p, init_from);
    });

    std::optional<std::string> explicit_dir;
    if (vm.count("run-dir")) explicit_dir = vm["run-dir"].as<std::string>();
    const nlohmann::json decision = nlohmann::json::parse(launch.from_root([&] {
        if (resume == "auto") {
            std::optional<std::string> existing;
            if (explicit_dir && run::is_run_dir(*explicit_dir)) existing = explicit_dir;
            else if (!explicit_dir) existing = unfinished_run(e, resolved);
            if (existing) {
                check_world_size(*existing, launch.world_size());
                reconcile_config(*existing, e);
                out << "resuming " << *existing << "\n";
                return nlohmann::json{{"run_dir", *existing}, {"resume", true}}.dump();
            }
        }
        std::vector<std::string> command_line{"l3lab", "train"};
        command_line.insert(command_line.end(), args.begin(), args.end());
        const std::string dir = run::create_run_dir(e.output_dir, e.name, resolved, explicit_dir);
        run::initialise_run_dir(dir, resolved, overrides, positionals.front(), command_line);
        out << "run directory: " << dir << std::endl;
        return nlohmann::json{{"run_dir", dir}, {"resume", false}}.dump();
    }));
    const bool resuming = decision.at("resume").get<bool>();
    return start_training(decision.at("run_dir").get<std::string>(), resuming, resuming ? "" : init_from);
}

int cmd_resume(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
    (void)err;
    if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) {
        out << "usage: l3lab resume RUN_DIR\n\nContinues a run from its newest complete checkpoint (verified against the\n"
               "checksums in its DONE marker), with its frozen config.yaml.\n";
        return 0;
    }
    if (args.size() != 1) throw UsageError("expected exactly one run directory");
    const std::string& dir = args[0];
    if (!run::is_run_dir(dir))
        throw config::ConfigException({{{dir, 0, 0}, "", "not a run directory (no config.yaml and STATUS)"}});
    auto status = run::read_status(dir);
    if (status && status->state == "completed") {
        if (dist::read_launch_env().rank == 0)
            out << dir << " has completed (step " << status->step << "); nothing to resume\n";
        return 0;
    }
    config::Experiment e = config::load_experiment((fs::path(dir) / "config.yaml").string(), {});
    const dist::Launch launch = join_and_check(e, config::to_yaml(e));
    launch.from_root([&] {
        check_world_size(dir, launch.world_size());
        out << "resuming " << dir << std::endl;
        return std::string();
    });
    return start_training(dir, /*resume=*/true, "");
}

}  // namespace l3lab::cli

namespace l3lab::cli {

namespace {

// Largest absolute difference between two runs' logged metrics, step by step; a step present in one
// run and not the other counts as a difference of infinity.
struct MetricsComparison {
    double train = 0, val = 0;
    std::vector<std::string> mismatched_steps;
};

MetricsComparison compare_metrics(const std::string& a_dir, const std::string& b_dir) {
    const auto a = metrics::read_metrics(a_dir), b = metrics::read_metrics(b_dir);
    MetricsComparison c;
    auto by_step = [](const auto& records, auto value) {
        std::map<int64_t, double> out;
        for (const auto& r : records) out[r.step] = value(r);
        return out;
    };
    auto compare = [&](const std::map<int64_t, double>& x, const std::map<int64_t, double>& y, const char* what) {
        double worst = 0;
        for (const auto& [step, value] : x) {
            auto it = y.find(step);
            if (it == y.end()) {
                c.mismatched_steps.push_back(std::string(what) + " step " + std::to_string(step) + " missing");
                worst = INFINITY;
                continue;
            }
            const double d = std::isnan(value) && std::isnan(it->second) ? 0.0 : std::fabs(value - it->second);
            worst = std::max(worst, std::isnan(d) ? INFINITY : d);
        }
        for (const auto& [step, value] : y)
            if (!x.count(step)) {
                c.mismatched_steps.push_back(std::string(what) + " step " + std::to_string(step) + " extra");
                worst = INFINITY;
            }
        return worst;
    };
    c.train = compare(by_step(a.train, [](const auto& r) { return r.raw_loss; }),
                      by_step(b.train, [](const auto& r) { return r.raw_loss; }), "train");
    c.val = compare(by_step(a.val, [](const auto& r) { return r.bpb; }), by_step(b.val, [](const auto& r) { return r.bpb; }),
                    "val");
    return c;
}

}  // namespace

int cmd_reproduce(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
    po::options_description options("options");
    options.add_options()("check", "compare the new run's metrics with the original's, step by step")(
        "tolerance", po::value<double>()->default_value(0.0), "with --check: largest absolute difference accepted")(
        "run-dir", po::value<std::string>(), "put the new run exactly here");
    po::variables_map vm;
    std::vector<std::string> positionals;
    if (!parse_command(args, options, "reproduce RUN_DIR [--check [--tolerance X]] [--run-dir D]",
                       "Trains again from RUN_DIR's frozen config.yaml into a new run directory. With --check, compares the\n"
                       "two runs' training losses and validation metrics step by step and reports the largest difference\n"
                       "(exit 1 when it exceeds --tolerance; on the CPU the runs are identical).",
                       vm, positionals, out))
        return 0;
    if (positionals.size() != 1) throw UsageError("expected exactly one run directory to reproduce");
    const std::string original = positionals.front();
    if (!run::is_run_dir(original))
        throw config::ConfigException({{{original, 0, 0}, "", "not a run directory (no config.yaml and STATUS)"}});
    const std::string frozen = (fs::path(original) / "config.yaml").string();
    config::Experiment e = config::load_experiment(frozen, {});
    const std::string resolved = read_text(frozen);
    const dist::Launch launch = join_and_check(e, resolved);
    std::optional<std::string> explicit_dir;
    if (vm.count("run-dir")) explicit_dir = vm["run-dir"].as<std::string>();
    const std::string dir = launch.from_root([&] {
        const std::string made = run::create_run_dir(e.output_dir, e.name, resolved, explicit_dir);
        std::vector<std::string> command_line{"l3lab", "reproduce"};
        command_line.insert(command_line.end(), args.begin(), args.end());
        run::initialise_run_dir(made, resolved, {}, frozen, command_line);
        out << "reproducing " << original << " in " << made << std::endl;
        return made;
    });
    const int code = start_training(dir, /*resume=*/false, "");
    if (code != 0 || !vm.count("check") || !launch.is_root()) return code;

    const MetricsComparison c = compare_metrics(original, dir);
    const double tolerance = vm["tolerance"].as<double>();
    out << "largest difference: training loss " << c.train << ", validation " << c.val << "\n";
    for (const auto& m : c.mismatched_steps) out << "  " << m << "\n";
    if (c.train <= tolerance && c.val <= tolerance) {
        out << (c.train == 0 && c.val == 0 ? "identical" : "within tolerance") << "\n";
        return 0;
    }
    err << "l3lab reproduce: the runs differ by more than " << tolerance << "\n";
    return 1;
}

}  // namespace l3lab::cli

namespace l3lab::cli {

namespace {

void emit_to_stream(const char* text, void* stream) { *static_cast<std::ostream*>(stream) << text << std::flush; }

// A checkpoint directory (with DONE), or a run directory meaning its newest complete checkpoint.
std::string resolve_checkpoint(const std::string& path) {
    if (run::is_run_dir(path)) {
        std::vector<std::string> problems;
        auto newest = train::newest_checkpoint(path, &problems);
        if (!newest) throw config::ConfigException({{{path, 0, 0}, "", "this run has no complete checkpoint"}});
        return newest->dir;
    }
    if (!fs::exists(fs::path(path) / "DONE") || !fs::exists(fs::path(path) / "model.safetensors"))
        throw config::ConfigException(
            {{{path, 0, 0}, "", "not a complete checkpoint (no DONE marker or model.safetensors) nor a run directory"}});
    if (!fs::exists(fs::path(path).parent_path().parent_path() / "config.yaml"))
        throw config::ConfigException({{{path, 0, 0}, "", "its run directory's config.yaml is missing"}});
    if (const std::string problem = train::checkpoint_problem(path); !problem.empty())
        throw config::ConfigException({{{path, 0, 0}, "", "damaged checkpoint: " + problem}});
    return path;
}

// The request's "nanochat" part: the tokenizer (--tokenizer, else nanochat's $NANOCHAT_BASE_DIR/tokenizer,
// else ~/.cache/nanochat/tokenizer) and the validation shards (--data), which its files do not name.
nlohmann::json nanochat_request(const std::string& dir, const po::variables_map& vm) {
    const std::string tokenizer = vm.count("tokenizer") ? vm["tokenizer"].as<std::string>()
                                                        : (fs::path(data::nanochat_base_dir()) / "tokenizer").string();
    data::load_tokenizer(tokenizer);  // a missing or foreign tokenizer: exit 2 before libtorch loads
    nlohmann::json n = {{"dir", dir}, {"tokenizer", tokenizer}};
    if (vm.count("data")) n["val"] = vm["data"].as<std::string>();
    return n;
}

}  // namespace

int cmd_eval(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
    (void)err;
    po::options_description options("options");
    options.add_options()("tokens", po::value<long long>()->default_value(0), "validation tokens (default: eval.tokens)")(
        "json", "print one JSON object")("core", "the CORE metric instead (nanochat's evaluate_core)")(
        "max-per-task", po::value<long long>()->default_value(500), "CORE: examples per task (-1 = all), as nanochat's default")(
        "bundle", po::value<std::string>(), "CORE: the eval bundle (default $NANOCHAT_BASE_DIR/eval_bundle, else ~/.cache/nanochat/eval_bundle)")(
        "tokenizer", po::value<std::string>(), "a nanochat checkpoint's tokenizer (default nanochat's: $NANOCHAT_BASE_DIR/tokenizer)")(
        "data", po::value<std::string>(), "a nanochat checkpoint's validation shards (from l3lab data tokenize)");
    po::variables_map vm;
    std::vector<std::string> positionals;
    if (!parse_command(args, options, "eval CKPT_DIR|RUN_DIR|NANOCHAT_CKPT_DIR [--tokens N] [--json] [--core [--max-per-task N] [--bundle DIR]]",
                       "Validation bits per byte and mean loss of a checkpoint, on its run's validation shards; with\n"
                       "--core, the CORE metric on nanochat's eval bundle (never downloaded). A nanochat checkpoint\n"
                       "(model_<step>.pt + meta_<step>.json) takes --tokenizer (default nanochat's) and --data.",
                       vm, positionals, out))
        return 0;
    if (positionals.size() != 1) throw UsageError("expected exactly one checkpoint (or run) directory");
    const bool nanochat = train::is_nanochat_checkpoint(positionals.front());
    const std::string checkpoint = nanochat ? positionals.front() : resolve_checkpoint(positionals.front());
    nlohmann::json request = {{"checkpoint", checkpoint}, {"tokens", vm["tokens"].as<long long>()},
                              {"json", vm.count("json") > 0}};
    if (nanochat) {
        request["nanochat"] = nanochat_request(checkpoint, vm);
        if (!vm.count("core") && !vm.count("data"))
            throw UsageError("a nanochat checkpoint names no data: give its validation shards with --data (or use --core)");
    }
    if (vm.count("core")) {
        const std::string bundle = vm.count("bundle") ? vm["bundle"].as<std::string>() : data::default_core_bundle();
        // a missing or malformed bundle, or too few examples for its shots: exit 2 before libtorch loads
        const auto tasks = data::read_core_bundle(bundle);
        const long long max_per_task = vm["max-per-task"].as<long long>();
        if (const std::string problem = data::core_max_per_task_problem(tasks, max_per_task); !problem.empty())
            throw UsageError("--max-per-task " + std::to_string(max_per_task) + ": " + problem);
        request["core"] = {{"bundle", bundle}, {"max_per_task", max_per_task}};
    }
    return require_torch().eval_fn(request.dump().c_str(), emit_to_stream, &out);
}

int cmd_sample(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
    (void)err;
    po::options_description options("options");
    options.add_options()("prompt", po::value<std::vector<std::string>>(), "a prompt (repeat for several)")(
        "max-tokens", po::value<long long>()->default_value(32), "tokens to generate per prompt")(
        "temperature", po::value<double>()->default_value(0.0), "0 = greedy")(
        "top-k", po::value<long long>()->default_value(0), "sample among the k most likely tokens (0 = all)")(
        "seed", po::value<unsigned long long>()->default_value(42), "sampling seed")(
        "tokenizer", po::value<std::string>(), "a nanochat checkpoint's tokenizer (default nanochat's: $NANOCHAT_BASE_DIR/tokenizer)");
    po::variables_map vm;
    std::vector<std::string> positionals;
    if (!parse_command(args, options, "sample CKPT_DIR|RUN_DIR|NANOCHAT_CKPT_DIR --prompt TEXT [--prompt TEXT ...] [options]",
                       "Generates text from a checkpoint with a KV cache.", vm, positionals, out))
        return 0;
    if (positionals.size() != 1) throw UsageError("expected exactly one checkpoint (or run) directory");
    if (!vm.count("prompt")) throw UsageError("give at least one --prompt");
    if (vm["temperature"].as<double>() < 0) throw UsageError("--temperature must be >= 0");
    if (vm["max-tokens"].as<long long>() < 0 || vm["top-k"].as<long long>() < 0)
        throw UsageError("--max-tokens and --top-k must be >= 0");
    const bool nanochat = train::is_nanochat_checkpoint(positionals.front());
    const std::string checkpoint = nanochat ? positionals.front() : resolve_checkpoint(positionals.front());
    nlohmann::json request = {{"checkpoint", checkpoint},
                              {"prompts", vm["prompt"].as<std::vector<std::string>>()},
                              {"max_tokens", vm["max-tokens"].as<long long>()},
                              {"temperature", vm["temperature"].as<double>()},
                              {"top_k", vm["top-k"].as<long long>()},
                              {"seed", vm["seed"].as<unsigned long long>()}};
    if (nanochat) request["nanochat"] = nanochat_request(checkpoint, vm);
    return require_torch().sample_fn(request.dump().c_str(), emit_to_stream, &out);
}

int cmd_export(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
    (void)err;
    po::options_description options("options");
    options.add_options()("format", po::value<std::string>()->default_value("nanochat"), "nanochat (the only format)")(
        "output", po::value<std::string>(), "directory to write into (e.g. nanochat's base_checkpoints/)")(
        "tag", po::value<std::string>(), "subdirectory: nanochat's model tag (default d<depth>)")(
        "step", po::value<long long>(), "the checkpoint of this step (default: the newest)");
    po::variables_map vm;
    std::vector<std::string> positionals;
    if (!parse_command(args, options, "export RUN_DIR|CKPT_DIR --output DIR [--tag TAG] [--step N] [--format nanochat]",
                       "Writes a checkpoint as nanochat's model_<step>.pt and meta_<step>.json into DIR/TAG, where\n"
                       "nanochat's checkpoint_manager (build_model, load_model) loads it.",
                       vm, positionals, out))
        return 0;
    if (positionals.size() != 1) throw UsageError("expected exactly one run or checkpoint directory");
    if (vm["format"].as<std::string>() != "nanochat")
        throw UsageError("--format: '" + vm["format"].as<std::string>() + "' is not a format l3lab exports (nanochat)");
    if (!vm.count("output")) throw UsageError("give --output DIR");
    std::string checkpoint = positionals.front();
    if (vm.count("step")) {
        if (!run::is_run_dir(checkpoint)) throw UsageError("--step needs a run directory");
        checkpoint = (fs::path(train::checkpoints_root(checkpoint)) / train::checkpoint_name(vm["step"].as<long long>())).string();
    }
    checkpoint = resolve_checkpoint(checkpoint);
    std::string tag = vm.count("tag") ? vm["tag"].as<std::string>() : "";
    if (tag.empty()) {
        const auto e = config::load_experiment((fs::path(checkpoint).parent_path().parent_path() / "config.yaml").string(), {});
        tag = "d" + std::to_string(e.model.depth);
    }
    if (tag.find('/') != std::string::npos || tag == "." || tag == "..") throw UsageError("--tag must be a plain name");
    const nlohmann::json request = {{"checkpoint", checkpoint},
                                    {"output", (fs::path(vm["output"].as<std::string>()) / tag).string()}};
    return require_torch().export_fn(request.dump().c_str(), emit_to_stream, &out);
}

}  // namespace l3lab::cli
