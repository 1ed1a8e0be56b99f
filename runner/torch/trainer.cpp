// The training loop reads top to bottom in the phases of nanochat's scripts/base_train.py:
// resolve config -> build model -> plan horizon -> build optimizer and data -> loop (eval, sample,
// checkpoint, step, log) -> summary. Each phase is one function below run_training().
#include "runner/torch/trainer.h"

#include "runner/torch/distributed.h"
#include "runner/torch/guard.h"
#include "runner/torch/core_eval.h"
#include "runner/torch/inference.h"
#include "runner/torch/nanochat_checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "modules/l3/allocation.h"
#include "modules/optim/dist_muon_adamw.h"
#include "modules/optim/muon_adamw.h"
#include "modules/optim/schedule.h"
#include "modules/torch/cuda.h"
#include "modules/torch/gpt.h"
#include "modules/torch/weights.h"
#include "runner/config/errors.h"
#include "runner/config/experiment.h"
#include "runner/data/bpb.h"
#include "runner/data/core_tasks.h"
#include "runner/data/errors.h"
#include "runner/data/loader.h"
#include "runner/data/sha256.h"
#include "runner/data/shard_set.h"
#include "runner/data/tokenizer.h"
#include "runner/metrics/metrics.h"
#include "runner/plan/plan.h"
#include "runner/plan/report.h"
#include "runner/run/run_dir.h"
#include "runner/train/checkpoints.h"
#include "runner/train/log.h"
#include "runner/train/nanochat_files.h"
#include "runner/train/peak_flops.h"
#include "runner/util/atomic_file.h"
#include "runner/util/fault.h"
#include "runner/util/format.h"
#include "runner/util/progress.h"
#include "runner/util/stop.h"
#include "runner/util/cpu_features.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace l3lab::train {

namespace {

// ---------------------------------------------------------------------------------------------
// signals (docs/stopping.md): SIGTERM, SIGUSR1 and SIGINT set util::stop_requested(); the loop polls it at
// step boundaries and inside evaluation, sampling, the allocation and data loading, then checkpoints and
// exits 3. A file-size limit (RLIMIT_FSIZE) must fail the write with EFBIG, reported like a full disk,
// instead of killing the process.

struct SignalGuard {
    util::StopSignals stop;
    struct sigaction old_xfsz {};
    SignalGuard() {
        struct sigaction ignore {};
        ignore.sa_handler = SIG_IGN;
        sigaction(SIGXFSZ, &ignore, &old_xfsz);
    }
    ~SignalGuard() { sigaction(SIGXFSZ, &old_xfsz, nullptr); }
};

// Progress of the trainer's long work on rank 0: a bar on a terminal, else plain lines in the log too.
util::ProgressOptions progress_options(const dist::Group& group) {
    util::ProgressOptions o;
    o.enabled = group.is_root();
    o.plain_line = [](const std::string& line) { log_line(line); };
    return o;
}

std::string read_text(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream buffer;
    buffer << in.rdbuf();
    return buffer.str();
}

using util::fixed;
using util::group_digits;

// ---------------------------------------------------------------------------------------------
// everything the loop carries from step to step, saved in every checkpoint's state.json

struct LoopState {
    long long step = 0;
    double smooth_train_loss = 0;  // EMA of the training loss (beta 0.9), not yet debiased
    double total_training_time = 0;  // seconds, excluding the first 10 steps (as the reference)
    std::optional<double> val_bpb;
    double min_val_bpb = INFINITY;
    long long skipped_steps = 0;  // non-finite steps skipped (train.skip_nonfinite_steps)
    std::optional<double> core_metric;  // the last CORE evaluation's (not carried across a resume)
};

json loop_state_json(const LoopState& s) {
    return {{"step", s.step},
            {"smooth_train_loss", s.smooth_train_loss},
            {"total_training_time", s.total_training_time},
            {"val_bpb", s.val_bpb ? json(*s.val_bpb) : json(nullptr)},
            {"min_val_bpb", std::isfinite(s.min_val_bpb) ? json(s.min_val_bpb) : json(nullptr)},
            {"skipped_steps", s.skipped_steps}};
}

LoopState loop_state_from(const json& j) {
    LoopState s;
    s.step = j.at("step").get<long long>();
    s.smooth_train_loss = j.at("smooth_train_loss").get<double>();
    s.total_training_time = j.at("total_training_time").get<double>();
    if (!j.at("val_bpb").is_null()) s.val_bpb = j.at("val_bpb").get<double>();
    s.min_val_bpb = j.at("min_val_bpb").is_null() ? INFINITY : j.at("min_val_bpb").get<double>();
    s.skipped_steps = j.value("skipped_steps", 0LL);
    return s;
}

// ---------------------------------------------------------------------------------------------
// the run

struct Run {
    TrainRequest request;
    config::Experiment config;
    plan::Plan plan;
    at::Device device{at::kCPU};
    std::string device_name = "cpu";
    double peak_flops = 0;

    std::unique_ptr<data::Tokenizer> tokenizer;  // optional: bpb and samples need it
    std::vector<data::CoreTask> core_tasks;       // the CORE bundle, read at the first CORE evaluation
    std::shared_ptr<const data::ShardSet> train_shards, val_shards;
    std::unique_ptr<data::PrefetchingLoader> loader;

    modules::GPT model{nullptr};
    dist::Group group;  // data parallelism (docs/distributed.md); one process: collectives are no-ops
    std::unique_ptr<optim::DistMuonAdamW> optimizer;
    std::unique_ptr<metrics::MetricsWriter> metrics;
    std::string allocation_sha256;
    std::string allocation_summary;  // the allocation's log line(s), for provenance.json and TensorBoard
    std::optional<long long> saved_step;  // the step of the checkpoint last saved or loaded
};

// --- phase 1: config and device ---------------------------------------------------------------

void resolve_config(Run& run) {
    const fs::path dir(run.request.run_dir);
    run.config = config::load_experiment((dir / "config.yaml").string(), {});
    run.plan = plan::make_plan(run.config, dist::world_size());  // gradient accumulation over all ranks
    // Every derived number once, with the rule that produced it (the same table as `l3lab plan`).
    std::istringstream table(plan::plan_table(run.config, run.plan));
    for (std::string line; std::getline(table, line);) log_line(line);
    // CUDA (docs/cuda.md) when asked for, or for `auto` when this build has the CUDA kernels and a device
    // is visible; `l3lab train` has already refused `cuda` without them (exit 2), this is the backstop.
    const bool cuda = modules::cuda_usable();
    if (run.config.device == "cuda" && !cuda)
        throw config::ConfigException({{run.config.where("device"), "device",
                                        modules::cuda_kernels_built()
                                            ? "cuda but no CUDA device is visible; use device: cpu or auto"
                                            : "cuda but this l3lab was built without its CUDA kernels; use device: cpu"}});
    if (run.config.device == "cuda" || (run.config.device == "auto" && cuda)) {
        modules::configure_cuda_training();  // TF32 and the allocator, before the first CUDA allocation
        run.device = at::Device(at::kCUDA, 0);
        run.device_name = modules::cuda_device_name(0);
    }
    run.peak_flops = run.config.device_peak_flops.value_or(peak_flops_for(run.device_name));
    // precision: bf16 on the CPU (device: cpu was checked before the run directory; this is `auto`'s)
    if (run.config.precision == "bf16" && !run.device.is_cuda())
        if (const std::string problem = util::cpu_bf16_problem(); !problem.empty())
            throw config::ConfigException({{run.config.where("precision"), "precision", problem}});
}

// --- phase 2: data ------------------------------------------------------------------------------

void open_data(Run& run) {
    const auto& c = run.config;
    data::ShardSetOptions options;
    if (fs::exists(c.data_tokenizer)) {
        run.tokenizer = data::load_tokenizer(c.data_tokenizer);
        options.vocab_size = run.tokenizer->vocab_size();
        options.bos_id = run.tokenizer->bos_id();
        options.tokenizer_sha256 = run.tokenizer->sha256();
        options.tokenizer_name = c.data_tokenizer;
        if (run.tokenizer->vocab_size() != c.model.vocab_size)
            throw config::ConfigException({{c.where("model.vocab_size"), "model.vocab_size",
                                            std::to_string(c.model.vocab_size) + " differs from the tokenizer's " +
                                                std::to_string(run.tokenizer->vocab_size()) + " (" + c.data_tokenizer + ")"}});
    } else {
        log_warning("no tokenizer at " + c.data_tokenizer + ": training from shards alone; validation reports loss, "
                    "not bits per byte, and no samples are generated");
    }
    options.split = "train";
    run.train_shards = data::ShardSet::open(c.data_train, options);
    fault::point("data:open");  // test hook (docs/reliability.md)
    options.split = "val";
    run.val_shards = data::ShardSet::open(c.data_val, options);
    util::throw_if_stop_requested("opening the data");
    for (const auto* shards : {run.train_shards.get(), run.val_shards.get()})
        if (shards->vocab_size() > c.model.vocab_size)
            throw config::ConfigException({{c.where("model.vocab_size"), "model.vocab_size",
                                            "the shards " + shards->spec() + " use a vocabulary of " +
                                                std::to_string(shards->vocab_size()) + " tokens, more than the model's " +
                                                std::to_string(c.model.vocab_size)}});
}

data::LoaderOptions loader_options(const Run& run, int batch_size) {
    data::LoaderOptions o;
    o.batch_size = batch_size;
    o.sequence_len = static_cast<int>(run.config.model.sequence_len);
    o.seed = static_cast<uint64_t>(run.config.seed);
    o.row_group_docs = static_cast<int>(run.config.data_row_group_docs);
    return o;
}

// --- phase 3: model -----------------------------------------------------------------------------

// The allocation sample as the reference takes it: the first sample_rows rows (T tokens each) of a
// batch-size-1 best-fit loader over the training split. Cached on disk by the hash of its inputs.
std::vector<int64_t> l3_bounds(Run& run, const modules::L3LayerOptions& l3) {
    const auto& c = run.config;
    data::BestFitLoader sampler(run.train_shards, loader_options(run, 1));
    std::vector<l3::TokenSequence> rows;
    data::Sha256 key;
    const std::string header = c.model.l3.allocation + " V=" + std::to_string(c.model.vocab_size) + " n_emb=" +
                               std::to_string(l3.n_emb) + " k_max=" + std::to_string(l3.k_max) + " bos=" +
                               std::to_string(run.train_shards->bos_id()) + "\n";
    key.update(header);
    {
        util::Progress progress("L3 allocation sample", c.model.l3.sample_rows, "rows", progress_options(run.group));
        for (long long r = 0; r < c.model.l3.sample_rows; ++r) {
            if (r == 1) fault::point("allocation:sample");  // test hook (docs/reliability.md)
            util::throw_if_stop_requested("the L3 allocation (reading its sample)");
            data::Batch b = sampler.next();
            rows.emplace_back(b.inputs.begin(), b.inputs.end());
            key.update(rows.back().data(), rows.back().size() * sizeof(int32_t));
            progress.advance();
        }
    }
    const std::string sha = key.hex_digest();
    const fs::path cache = fs::path(c.output_dir) / ".cache" / ("l3-allocation-" + sha.substr(0, 16) + ".json");
    std::vector<int64_t> counts;
    if (fs::exists(cache)) {
        try {
            json j = json::parse(read_text(cache));
            if (j.at("sha256") == sha) counts = j.at("rows").get<std::vector<int64_t>>();
        } catch (const std::exception&) {
            counts.clear();  // a damaged cache entry is recomputed
        }
    }
    if (counts.empty()) {
        util::Progress progress("L3 allocation (" + c.model.l3.allocation + ")", 0, "tokens", progress_options(run.group));
        const l3::AllocationProgress on_progress = [&progress](int64_t tokens) {
            progress.set(tokens);
            util::throw_if_stop_requested("the L3 allocation");
        };
        l3::Allocation a = c.model.l3.allocation == "lzw"
                               ? l3::lzw_allocation(l3::split_at_bos(rows, static_cast<int32_t>(run.train_shards->bos_id())),
                                                    c.model.vocab_size, l3.n_emb, l3.k_max, on_progress)
                               : l3::frequency_allocation(rows, c.model.vocab_size, l3.n_emb, l3.k_max, on_progress);
        progress.finish();
        for (const auto& w : a.warnings) log_warning("L3 allocation: " + w);
        counts = a.rows;
        if (run.group.is_root()) {  // every rank computes the same allocation from the same sample
            fs::create_directories(cache.parent_path());
            util::write_file_atomic(cache.string(), json{{"sha256", sha}, {"rows", counts}}.dump() + "\n");
        }
    }
    run.allocation_sha256 = sha;
    const double weighted = l3::rows_per_occurrence(counts, rows);
    const std::string summary = "L3 allocation (" + c.model.l3.allocation + "): " + group_digits(l3.n_emb) + " rows, k_max " +
                                std::to_string(l3.k_max) + ", " + fixed(weighted, 1) + " rows per token occurrence on the sample (" +
                                fixed(static_cast<double>(l3.n_emb) / static_cast<double>(c.model.vocab_size), 1) + " if uniform)";
    log_line(summary);
    run.allocation_summary += (run.allocation_summary.empty() ? "" : "\n") + summary;
    return l3::bounds_from_allocation(counts);
}

void build_model(Run& run) {
    run.model = modules::GPT(run.plan.model);
    if (run.config.precision == "bf16" && !run.device.is_cuda()) {
        std::string flags;
        util::cpu_has_bf16(&flags);
        run.model->set_cpu_bf16(true);
        log_line("precision: bf16 autocast on the CPU (" + flags + "): matmuls in bfloat16, weights and optimizer state float32");
    }
    if (!run.request.init_from.empty()) {
        if (train::nanochat_init_path(run.request.init_from)) {  // nanochat's model_<step>.pt (bf16 or float32)
            try {
                const std::string file = nanochat_model_file(run.request.init_from);
                modules::load_state_dict(run.model, nanochat::read_state_dict(file), file);
            } catch (const std::runtime_error& e) {  // unreadable or another model's: bad input, exit 2
                throw config::ConfigException({{{run.request.init_from, 0, 0}, "--init-from", e.what()}});
            }
        } else {
            modules::load_weights(run.model, run.request.init_from);  // every tensor, L3 bounds included
        }
        log_line("weights from " + run.request.init_from + " (no allocation computed)");
    } else {
        at::manual_seed(static_cast<uint64_t>(run.config.seed));
        run.model->init_weights();
        for (const auto& item : run.model->l3_layers->items()) {
            auto layer = item.second->as<modules::L3LayerImpl>();
            std::vector<int64_t> bounds = l3_bounds(run, layer->options);
            layer->set_bounds(at::tensor(bounds, at::kLong));
        }
    }
    run.model->to(run.device);
    if (run.device.is_cuda()) run.model->cast_embeddings_to_bf16();  // the reference's init_weights on CUDA
}

// --- phase 4: optimizer -------------------------------------------------------------------------

void build_optimizer(Run& run) {
    std::map<std::string, at::Tensor> params;
    for (const auto& item : run.model->named_parameters(true)) params[item.key()] = item.value();
    std::vector<optim::ParamGroup> groups;
    for (const auto& g : run.plan.optimizer_groups) {
        if (g.params.empty()) continue;
        optim::ParamGroup group;
        group.options.name = g.name;
        group.options.kind = g.kind == "muon" ? optim::Kind::Muon : optim::Kind::AdamW;
        group.options.lr = g.lr;
        group.options.beta1 = g.beta1;
        group.options.beta2 = g.beta2;
        group.options.eps = g.eps;
        group.options.weight_decay = g.weight_decay;
        group.options.ns_steps = static_cast<int>(g.ns_steps);
        for (const auto& name : g.params) group.params.emplace_back(name, params.at(name));
        groups.push_back(std::move(group));
    }
    run.optimizer = std::make_unique<optim::DistMuonAdamW>(std::move(groups), run.group.backend());
    if (run.group.world_size() > 1)
        for (const auto& line : run.optimizer->layout()) log_line("optimizer " + line);
}

// --- phase 1b: the data-parallel group ----------------------------------------------------------

// One process: nothing. Several: a CUDA rank trains on cuda:LOCAL_RANK (the reference's device), and the
// group is Gloo on the CPU, NCCL on CUDA (runner/torch/distributed.h).
void join_group(Run& run) {
    if (!dist::active()) return;
    if (run.device.is_cuda()) run.device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(dist::local_rank()));
    run.group = dist::Group::create(run.device);
    log_line("data parallel: " + std::to_string(run.group.world_size()) + " processes, " + run.group.backend_name() +
             " backend, distributed.timeout_s " + fixed(dist::timeout_seconds(), 1));
}

// --- checkpoints --------------------------------------------------------------------------------

at::Tensor rng_state() { return at::detail::getDefaultCPUGenerator().get_state(); }

// Data parallelism: rank 0 stages the directory and writes the model and state.json (with every rank's
// loader state); each rank writes its own optimizer shard; DONE comes after a barrier that every rank
// reaches only once its shard is written.
void write_checkpoint(Run& run, const LoopState& state, const data::LoaderState& loader_state) {
    const dist::Group& group = run.group;
    if (run.metrics) run.metrics->flush();  // no step below the checkpoint may be missing after a crash
    const std::vector<std::string> loaders = group.gather(loader_state.to_json(), "gathering the loader states");
    if (group.is_root()) begin_checkpoint(run.request.run_dir, state.step);
    group.barrier("checkpoint " + std::to_string(state.step) + ": staging");
    const std::string staging = staging_checkpoint_dir(run.request.run_dir, state.step);
    const fs::path dir(staging);
    fault::point("checkpoint:begin");
    std::vector<io::TensorRecord> records;
    for (const auto& [name, tensor] : run.optimizer->state()) records.push_back(modules::to_record(name, tensor));
    records.push_back(modules::to_record("__rng_cpu__", rng_state()));
    io::write_safetensors((dir / optimizer_file(group.rank(), group.world_size())).string(), records);
    fault::point("checkpoint:mid-write");
    if (group.is_root()) {
        modules::save_weights(run.model, (dir / "model.safetensors").string());
        json s = {{"step", state.step},
                  {"loop", loop_state_json(state)},
                  {"loader", json::parse(loader_state.to_json())},
                  {"config_sha256", run::sha256_hex(read_text(fs::path(run.request.run_dir) / "config.yaml"))},
                  {"l3_allocation_sha256", run.allocation_sha256}};
        if (group.world_size() > 1) {
            s["world_size"] = group.world_size();
            s["loaders"] = json::array();  // rank r's loader state; "loader" is rank 0's
            for (const auto& l : loaders) s["loaders"].push_back(json::parse(l));
        }
        util::write_file_atomic((dir / "state.json").string(), s.dump(2) + "\n");
    }
    group.barrier("checkpoint " + std::to_string(state.step) + ": every shard written");
    if (!group.is_root()) return;
    const std::string final_dir = finish_checkpoint(run.request.run_dir, state.step, staging);
    prune_checkpoints(run.request.run_dir, run.config.checkpoint_keep_last);
    log_line("checkpoint " + final_dir);
}

// A checkpoint that cannot be written (disk full, file-size limit, read-only directory) fails the run with
// the file and the reason; its staging directory is removed, which also gives back the space it took,
// and the previous complete checkpoint stays as it was.
void save_checkpoint(Run& run, const LoopState& state, const data::LoaderState& loader_state) {
    if (run.saved_step == state.step) return;  // already complete on disk (the step a resume started at)
    try {
        write_checkpoint(run, state, loader_state);
    } catch (const std::exception& e) {
        std::error_code ec;
        if (run.group.is_root()) fs::remove_all(staging_checkpoint_dir(run.request.run_dir, state.step), ec);
        const auto* torch_error = dynamic_cast<const c10::Error*>(&e);
        throw std::runtime_error("the checkpoint of step " + std::to_string(state.step) + " was not saved: " +
                                 (torch_error ? torch_error->what_without_backtrace() : e.what()));
    }
    run.saved_step = state.step;
}

// Loads the newest complete checkpoint; returns its loop state and loader state.
// Data parallelism: rank 0 picks the checkpoint (verifying its checksums) for every rank, which must be
// as many as wrote it; each rank loads its own optimizer shard and loader state.
std::optional<std::pair<LoopState, data::LoaderState>> load_checkpoint(Run& run) {
    const dist::Group& group = run.group;
    std::string chosen;
    if (group.is_root()) {
        std::vector<std::string> problems;
        auto newest = newest_checkpoint(run.request.run_dir, &problems);
        for (const auto& p : problems) log_warning("skipping checkpoint " + p);
        if (newest) chosen = newest->dir;
    }
    chosen = group.gather(chosen, "choosing the checkpoint to resume from").front();
    if (chosen.empty()) return std::nullopt;
    const fs::path dir(chosen);
    const int written_by = checkpoint_world_size(chosen);
    if (written_by != group.world_size())
        throw config::ConfigException({{{(dir / "state.json").string(), 0, 0}, "world_size",
                                        "this checkpoint was written by " + std::to_string(written_by) +
                                            " processes and this run has " + std::to_string(group.world_size()) +
                                            "; resume with the same number (the optimizer state is sharded per rank)"}});
    modules::load_weights(run.model, (dir / "model.safetensors").string());
    std::vector<std::pair<std::string, at::Tensor>> opt_state;
    at::Tensor rng;
    for (const auto& r : io::read_safetensors((dir / optimizer_file(group.rank(), group.world_size())).string()).tensors) {
        if (r.name == "__rng_cpu__") rng = modules::to_tensor(r);
        else opt_state.emplace_back(r.name, modules::to_tensor(r));
    }
    run.optimizer->load_state(opt_state);
    if (rng.defined()) {
        at::Generator generator = at::detail::getDefaultCPUGenerator();
        generator.set_state(rng);
    }
    json s = json::parse(read_text(dir / "state.json"));
    LoopState loop = loop_state_from(s.at("loop"));
    const json& loader_json = group.world_size() > 1 ? s.at("loaders").at(static_cast<size_t>(group.rank())) : s.at("loader");
    data::LoaderState loader = data::LoaderState::from_json(loader_json.dump(), (dir / "state.json").string());
    run.allocation_sha256 = s.value("l3_allocation_sha256", "");
    log_line("resumed from " + chosen + " (step " + std::to_string(loop.step) + ")");
    run.saved_step = loop.step;
    return std::make_pair(loop, loader);
}

// --- evaluation and samples ---------------------------------------------------------------------

// This rank's part of an evaluation: with several ranks `sum` adds float64 values across them ("summing
// <summed>") and `stop` shares the stop flag ("sharing the stop signal (<stop_what>)"), both collectives.
EvalShare rank_share(Run& run, const std::string& summed, const std::string& stop_what) {
    EvalShare share;
    share.rank = run.group.rank();
    share.world_size = run.group.world_size();
    if (run.group.world_size() > 1) {
        share.sum = [&run, summed](std::vector<double>& values) { run.group.sum(values, "summing " + summed); };
        share.stop = [&run, stop_what] {
            return run.group.any(util::stop_requested(), "sharing the stop signal (" + stop_what + ")");
        };
    } else {
        share.stop = [] { return util::stop_requested(); };
    }
    return share;
}

EvalResult evaluate(Run& run) {
    const auto& c = run.config;
    EvalShare share = rank_share(run, "the validation totals", "evaluation");
    share.row_group_docs = static_cast<int>(c.data_row_group_docs);
    share.progress = progress_options(run.group);
    return train::evaluate(run.model, run.val_shards, run.tokenizer.get(), c.batch.device_batch_size,
                           c.model.sequence_len, c.eval_tokens, run.device, share);
}

// The CORE metric on the model as it is, every rank its share of the examples; progress on rank 0 (a
// bar per task: examples done, rate).
CoreResult evaluate_core_in_loop(Run& run) {
    const auto& c = run.config;
    if (run.core_tasks.empty())
        run.core_tasks = data::read_core_bundle(c.core_bundle.empty() ? data::default_core_bundle() : c.core_bundle);
    const EvalShare share = rank_share(run, "the CORE verdicts", "CORE");
    CoreProgressBars bars(progress_options(run.group));
    CoreResult result =
        evaluate_core(run.model, *run.tokenizer, run.core_tasks, c.core_max_per_task, run.device, share, std::ref(bars));
    bars.finish();
    return result;
}

// Throws util::Interrupted when a stop signal arrives while it generates (the step's samples are then
// redone by the resume).
void write_samples(Run& run, long long step) {
    if (!run.tokenizer || !run.group.is_root()) return;  // rank 0 alone samples, as the reference
    const auto& prompts = run.config.sample_prompts;
    util::Progress progress("samples at step " + std::to_string(step),
                            static_cast<int64_t>(prompts.size()) * run.config.sample_max_tokens, "tokens",
                            progress_options(run.group));
    for (const auto& prompt : prompts) {
        SampleOptions options;
        options.max_tokens = run.config.sample_max_tokens;  // greedy, as the reference's samples
        options.on_token = [&progress](int64_t generated) {
            if (generated == 1) fault::point("sample:mid");  // test hook (docs/reliability.md)
            util::throw_if_stop_requested("sampling");
            progress.advance();
        };
        const std::string text = generate(run.model, *run.tokenizer, prompt, options, run.device);
        progress.print_above([&] { log_line(text); });  // above the bar, when a terminal shows one
        run.metrics->sample({step, prompt, text});
    }
}

// --- the loop -----------------------------------------------------------------------------------

// Once in a while: validation bpb (at step 0, every eval.every, at the end) and greedy samples (every
// sample.every, at the end). Returns whether either ran; util::Interrupted when a stop signal came.
bool evaluate_and_sample(Run& run, LoopState& state, bool last_step) {
    const auto& c = run.config;
    bool ran = false;
    if (last_step || state.step == 0 || (c.eval_every > 0 && state.step % c.eval_every == 0)) {
        ran = true;
        EvalResult r = evaluate(run);
        state.val_bpb = run.tokenizer ? r.bpb : r.loss;
        if (run.tokenizer) {
            state.min_val_bpb = std::min(state.min_val_bpb, r.bpb);
            log_line("Step " + util::zero_padded(state.step, 5) + " | Validation bpb: " + fixed(r.bpb, 6));
        } else {
            log_line("Step " + util::zero_padded(state.step, 5) + " | Validation loss: " + fixed(r.loss, 6));
        }
        metrics::ValRecord v{state.step, run.tokenizer ? r.bpb : NAN, r.loss};
        if (run.metrics) run.metrics->val(v);
    }
    // CORE on base_train's schedule: every eval.core_every steps after step 0, and the last step. The ranks
    // stride the examples and sum the verdicts, as nanochat's evaluate_task.
    if (c.core_every > 0 && (last_step || (state.step > 0 && state.step % c.core_every == 0)) && run.tokenizer) {
        ran = true;
        const CoreResult core = evaluate_core_in_loop(run);
        state.core_metric = core.core_metric;
        log_line("Step " + util::zero_padded(state.step, 5) + " | CORE metric: " + fixed(core.core_metric, 4));
        if (run.metrics) {
            metrics::CoreRecord record{state.step, core.core_metric, {}};
            for (const auto& t : core.tasks) record.tasks.push_back({t.label, t.accuracy, t.centered});
            run.metrics->core(record);
        }
    }
    if (last_step || (c.sample_every > 0 && state.step > 0 && state.step % c.sample_every == 0)) {
        ran = true;
        write_samples(run, state.step);
    }
    return ran;
}

// A stop signal: checkpoint the state at this step boundary (the loader state before the pending batch)
// and exit 3. The checkpoint is complete before STATUS says "interrupted".
int stop_run(Run& run, const LoopState& state, const data::LoaderState& pending_state) {
    log_line(util::stop_reason() + ": checkpointing at step " + std::to_string(state.step));
    save_checkpoint(run, state, pending_state);
    if (!run.group.is_root()) return 3;
    run.metrics->close();
    run::write_status(run.request.run_dir, {"interrupted", state.step, 3, ""});
    log_line("stopped at step " + std::to_string(state.step) + " (exit 3): `l3lab resume " + run.request.run_dir +
             "` continues from here");
    return 3;
}

int train_loop(Run& run) {
    const auto& c = run.config;
    const auto& p = run.plan;
    const int64_t B = c.batch.device_batch_size, T = c.model.sequence_len;
    const int64_t num_iterations = p.num_iterations;
    const int64_t flops_per_token = p.shape.flops_per_token;

    LoopState state;
    std::optional<long long> resume_step;
    data::LoaderOptions train_options = loader_options(run, static_cast<int>(B));
    train_options.rank = run.group.rank();  // disjoint row groups per rank, as the reference
    train_options.world_size = run.group.world_size();
    data::BestFitLoader base_loader(run.train_shards, train_options);
    if (run.request.resume) {
        if (auto loaded = load_checkpoint(run)) {
            state = loaded->first;
            base_loader.restore(loaded->second);
            resume_step = state.step;
            fault::point("resume:after-load");
        } else {
            log_line("no complete checkpoint: starting from step 0");
        }
    }
    run.loader = std::make_unique<data::PrefetchingLoader>(std::move(base_loader));

    // Metrics: a resumed loop logs again from its checkpoint's step, so later records are dropped.
    metrics::Attributes attrs{read_text(fs::path(run.request.run_dir) / "config.yaml"),
                              read_text(fs::path(run.request.run_dir) / "provenance.json")};
    metrics::WriterOptions wo;
    if (run.request.resume) wo.resume_at_step = state.step;
    wo.tensorboard = c.tracking_tensorboard;
    if (run.group.is_root()) run.metrics = std::make_unique<metrics::MetricsWriter>(run.request.run_dir, attrs, wo);

    log_line("training " + std::to_string(num_iterations) + " steps of " + group_digits(p.total_batch_size) + " tokens (" +
             std::to_string(p.grad_accum_steps) + " x " + std::to_string(B) + " x " + std::to_string(T) + ") on " +
             run.device_name);

    // The loader state before the pending batch: a checkpoint resumes with exactly that batch next.
    data::LoaderState pending_state = run.loader->state();
    data::Batch batch;
    run.loader->next(batch);
    if (run.group.is_root()) run::write_status(run.request.run_dir, {"running", state.step, std::nullopt, ""});
    auto last_status = std::chrono::steady_clock::now();

    while (true) {
        const bool last_step = state.step == num_iterations;
        const double flops_so_far = static_cast<double>(flops_per_token) * static_cast<double>(p.total_batch_size) *
                                    static_cast<double>(state.step);

        // A stop signal (docs/stopping.md): checkpoint at this step boundary and exit 3 (safe to resume).
        // Every rank stops at the same step: one that got the signal tells the others.
        if (run.group.any(util::stop_requested(), "sharing the stop signal")) return stop_run(run, state, pending_state);

        // The final checkpoint comes before the final evaluation, so an eval failure cannot lose the run.
        if (last_step) save_checkpoint(run, state, pending_state);
        bool paused = last_step;  // long work ran at this boundary: a signal that came meanwhile stops here

        try {
            paused |= evaluate_and_sample(run, state, last_step);
        } catch (const util::Interrupted& stop) {  // this step's evaluation or samples are redone on resume
            paused = true;
            log_line(std::string("stopping: ") + stop.what() + " (abandoned; the resume redoes it)");
        }

        // checkpoint every checkpoint.every steps (not at the step a resume started from)
        if (!last_step && state.step > 0 && c.checkpoint_every > 0 && state.step % c.checkpoint_every == 0 &&
            resume_step != state.step) {
            paused = true;
            save_checkpoint(run, state, pending_state);
        }
        if (paused && run.group.any(util::stop_requested(), "sharing the stop signal"))
            return stop_run(run, state, pending_state);

        if (last_step) break;
        if (fault::at("step:error", state.step))  // test hook: this rank fails alone (docs/reliability.md)
            throw std::runtime_error("injected failure at step " + std::to_string(state.step) + " (L3LAB_FAULT step:error)");

        // one training step: gradient accumulation over micro-batches, then the optimizer
        const auto t0 = std::chrono::steady_clock::now();
        const data::LoaderState step_start_state = pending_state;  // for a checkpoint of the state before this step
        at::Tensor train_loss;
        for (int64_t micro = 0; micro < p.grad_accum_steps; ++micro) {
            at::Tensor x = to_device(batch.inputs, B, T, run.device), y = to_device(batch.targets, B, T, run.device);
            at::Tensor loss = inject_loss_fault(run.model->loss(x, y), state.step);
            train_loss = loss.detach();
            (loss / static_cast<double>(p.grad_accum_steps)).backward();
            fault::point("step:after-backward");
            pending_state = run.loader->state();
            run.loader->next(batch);
            // One process with gradient accumulation: a long step is abandoned between micro-batches; the
            // checkpoint holds the state before it, so the resume redoes it whole. (Several ranks stop at the
            // next step boundary: agreeing between micro-batches would cost a collective each.)
            if (micro + 1 < p.grad_accum_steps && run.group.world_size() == 1 && util::stop_requested()) {
                log_line("stopping: " + util::stop_reason() + " during step " +
                         std::to_string(state.step) + " (abandoned between micro-batches; the resume redoes it)");
                run.optimizer->zero_grad();
                return stop_run(run, state, step_start_state);
            }
        }
        // The numerical guard (docs/reliability.md): a step with a NaN or inf in its loss or gradients is
        // never applied. It is skipped while train.skip_nonfinite_steps allows; otherwise the run saves the
        // state before the step and stops (exit 1). The probe is the step's one host sync.
        inject_grad_fault(run.optimizer->groups(), state.step);
        const StepProbe probe = probe_step(train_loss, run.optimizer->groups());
        const bool skip = run.group.any(!probe.finite, "sharing the non-finite check");
        if (skip) {
            const std::string what = "non-finite values at step " + std::to_string(state.step) + ": " +
                                     describe_nonfinite(probe.loss, run.optimizer->groups());
            if (state.skipped_steps >= c.train_skip_nonfinite_steps) {
                log_warning(what + ": saving the state before this step");
                save_checkpoint(run, state, step_start_state);
                throw std::runtime_error(what + ". The step was not applied; " +
                                         (fs::path(checkpoints_root(run.request.run_dir)) / checkpoint_name(state.step)).string() +
                                         " holds the state before it (train.skip_nonfinite_steps: " +
                                         std::to_string(c.train_skip_nonfinite_steps) + ")");
            }
            ++state.skipped_steps;
            log_warning(what + ": step skipped (" + std::to_string(state.skipped_steps) + " of train.skip_nonfinite_steps " +
                        std::to_string(c.train_skip_nonfinite_steps) + ")");
            run.optimizer->zero_grad();
        }
        const double lrm = optim::lr_multiplier(state.step, num_iterations, c.schedule.warmup_ratio,
                                                c.schedule.warmdown_ratio, c.schedule.final_lr_frac);
        const double momentum = optim::muon_momentum(state.step, c.schedule.muon_momentum_start,
                                                     c.schedule.muon_momentum_end, c.schedule.muon_momentum_warmup_steps);
        for (auto& g : run.optimizer->groups()) {
            g.options.lr = g.initial_lr * lrm;
            if (g.options.kind == optim::Kind::Muon) {
                g.options.momentum = momentum;
                if (c.schedule.weight_decay_linear)
                    g.options.weight_decay = optim::weight_decay_at(state.step, num_iterations, p.weight_decay_scaled);
            }
        }
        if (!skip) {
            run.optimizer->step();
            fault::point("step:after-optimizer");
            run.optimizer->zero_grad();
        }
        const double train_loss_f = probe.loss;
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

        // logging, as the reference: debiased EMA of the loss, throughput, MFU, ETA after 10 steps
        const double ema_beta = 0.9;
        if (!skip) state.smooth_train_loss = ema_beta * state.smooth_train_loss + (1 - ema_beta) * train_loss_f;
        const double debiased = state.smooth_train_loss / (1 - std::pow(ema_beta, static_cast<double>(state.step + 1)));
        const double pct_done = 100.0 * static_cast<double>(state.step) / static_cast<double>(num_iterations);
        const double tok_per_sec = static_cast<double>(p.total_batch_size) / dt;
        const double flops_per_sec = static_cast<double>(flops_per_token) * static_cast<double>(p.total_batch_size) / dt;
        const double peak = run.peak_flops * run.group.world_size();  // the reference: peak x world size
        const double mfu = peak > 0 ? 100.0 * flops_per_sec / peak : 0.0;
        if (state.step > 10) state.total_training_time += dt;
        std::string eta;
        if (state.step > 10) {
            const double avg = state.total_training_time / static_cast<double>(state.step - 10);
            eta = " | eta: " + fixed(static_cast<double>(num_iterations - state.step) * avg / 60.0, 1) + "m";
        }
        log_line("step " + util::zero_padded(state.step, 5) + "/" + util::zero_padded(num_iterations, 5) + " (" + fixed(pct_done, 2) + "%) | loss: " +
                 fixed(debiased, 6) + " | lrm: " + fixed(lrm, 2) + " | dt: " + fixed(dt * 1000, 2) + "ms | tok/sec: " +
                 group_digits(static_cast<long long>(tok_per_sec)) + " | mfu: " + fixed(mfu, 2) + " | epoch: " +
                 std::to_string(batch.epoch) + " | total time: " + fixed(state.total_training_time / 60.0, 2) + "m" + eta);
        metrics::TrainRecord rec;
        rec.step = state.step;
        rec.loss = debiased;
        rec.raw_loss = train_loss_f;
        rec.lrm = lrm;
        rec.dt = dt;
        rec.tok_per_sec = tok_per_sec;
        rec.mfu = mfu;
        rec.tokens = p.total_batch_size * (state.step + 1);
        rec.flops = flops_so_far + static_cast<double>(flops_per_token) * static_cast<double>(p.total_batch_size);
        rec.epoch = batch.epoch;
        rec.elapsed = state.total_training_time;
        rec.skipped = skip ? 1 : 0;
        if (run.metrics) run.metrics->train(rec);

        state.step += 1;
        // STATUS is fsynced: refresh it every few seconds, not every step (a cost on tiny steps).
        if (run.group.is_root() && std::chrono::steady_clock::now() - last_status > std::chrono::seconds(5)) {
            run::write_status(run.request.run_dir, {"running", state.step, std::nullopt, ""});
            last_status = std::chrono::steady_clock::now();
        }
    }

    // summary: a missing final metric marks the run failed, never zero (rank 0 writes it)
    if (!run.group.is_root()) return state.val_bpb && std::isfinite(*state.val_bpb) ? 0 : 1;
    run.metrics->close();
    json summary;
    summary["name"] = c.name;
    summary["steps"] = state.step;
    summary["num_iterations"] = num_iterations;
    summary["total_tokens"] = p.total_tokens;
    summary["total_flops"] = p.total_flops;
    summary["params"] = p.shape.counts.total;
    summary["scaling_params"] = p.scaling_params;
    summary["flops_per_token"] = flops_per_token;
    summary["total_training_time"] = state.total_training_time;
    summary["metric"] = run.tokenizer ? "val_bpb" : "val_loss";
    summary["final_val"] = state.val_bpb ? json(*state.val_bpb) : json(nullptr);
    summary["min_val_bpb"] = std::isfinite(state.min_val_bpb) ? json(state.min_val_bpb) : json(nullptr);
    summary["l3_allocation_sha256"] = run.allocation_sha256;
    summary["skipped_steps"] = state.skipped_steps;  // non-finite steps not applied (train.skip_nonfinite_steps)
    summary["core_metric"] = state.core_metric ? json(*state.core_metric) : json(nullptr);  // null: not evaluated
    if (run.device.is_cuda()) {  // as base_train's "Peak memory usage" (torch.cuda.max_memory_allocated)
        const double peak_mib = static_cast<double>(modules::cuda_peak_memory_bytes()) / (1024.0 * 1024.0);
        summary["peak_memory_mib"] = peak_mib;
        log_line("Peak memory usage: " + fixed(peak_mib, 2) + "MiB");
    }
    util::write_file_atomic((fs::path(run.request.run_dir) / "summary.json").string(), summary.dump(2) + "\n");
    if (!state.val_bpb || !std::isfinite(*state.val_bpb)) {
        run::write_status(run.request.run_dir, {"failed", state.step, 1, "no final validation metric"});
        log_line("run failed: no final validation metric");
        return 1;
    }
    log_line("Minimum validation bpb: " + (std::isfinite(state.min_val_bpb) ? fixed(state.min_val_bpb, 6) : "n/a"));
    run::write_status(run.request.run_dir, {"completed", state.step, 0, ""});
    return 0;
}

void record_device_in_provenance(const Run& run) {
    if (!run.group.is_root()) return;
    const fs::path path = fs::path(run.request.run_dir) / "provenance.json";
    json p = json::parse(read_text(path));
    p["device"] = run.device_name;
    p["cpu_threads"] = at::get_num_threads();
    p["data_manifest"] = run.train_shards->manifest_path();
    p["data_fingerprint"] = run.train_shards->fingerprint();
    p["l3_allocation_sha256"] = run.allocation_sha256;
    if (!run.allocation_summary.empty()) p["l3_allocation"] = run.allocation_summary;
    p["world_size"] = run.group.world_size();
    p["rank"] = run.group.rank();  // the rank that wrote this file
    if (dist::active()) {
        p["distributed"] = dist::describe();
        p["distributed"]["backend"] = run.group.backend_name();
    }
    util::write_file_atomic(path.string(), p.dump(2) + "\n");
}

}  // namespace

// STATUS after a failure, which may be the disk itself: never throws (a throw from a catch block would end
// the process with a crash instead of exit 1); a STATUS that cannot be written is reported in the log.
static void record_failure(const std::string& run_dir, const run::Status& status) {
    const std::string problem = run::write_status_best_effort(run_dir, status);
    if (!problem.empty()) log_line("error: STATUS not updated: " + problem);
}

// A fatal error: every rank prints it (docs/distributed.md: prefixed with its rank), tells the others
// through the rendezvous store why it stops, and rank 0 records it in STATUS. Returns `code`.
static int fail(const std::string& run_dir, int code, const std::vector<std::string>& lines) {
    std::string message;  // for STATUS and the other ranks: the lines without their "error: "
    for (const auto& line : lines) {
        log_error(line);
        message += (message.empty() ? "" : "\n") + (line.rfind("error: ", 0) == 0 ? line.substr(7) : line);
    }
    if (dist::active()) {
        dist::report_fatal(message);
        // A collective that failed outside dist::Group (the optimizer's) does not name the rank that went
        // away: add what the others reported, if anything.
        if (code == 1 && message.find(" failed: ") == std::string::npos)
            if (const std::string others = dist::reported_failures(); !others.empty()) {
                log_error("error: " + others);
                message += "\n" + others;
            }
    }
    if (dist::rank() == 0) {
        auto status = run::read_status(run_dir);
        record_failure(run_dir, {"failed", code == 2 ? 0 : (status ? status->step : 0), code, message});
    }
    return code;
}

int run_training(const TrainRequest& request) {
    SignalGuard signals;
    const bool root = dist::rank() == 0;  // rank 0 alone writes train.log and STATUS
    set_log_rank(dist::rank(), dist::world_size());
    if (root) {
        try {
            open_log(request.run_dir);
        } catch (const std::exception& e) {  // an unwritable run directory: say so, plainly, and stop
            std::cerr << "l3lab: error: " << e.what() << std::endl;
            record_failure(request.run_dir, {"failed", 0, 1, e.what()});
            return 1;
        }
    }
    Run run;
    run.request = request;
    int code = 1;
    try {
        resolve_config(run);   // phase 1
        join_group(run);       // phase 1b
        open_data(run);        // phase 2
        build_model(run);      // phase 3
        build_optimizer(run);  // phase 4
        record_device_in_provenance(run);
        code = train_loop(run);  // phase 5
    } catch (const util::Interrupted& stop) {
        // Before the loop (data, allocation): nothing trained, nothing to save; the resume starts over.
        log_line(std::string("stopping: ") + stop.what() + " (abandoned before step 0; the resume starts from the beginning)");
        if (root) record_failure(request.run_dir, {"interrupted", 0, 3, ""});
        code = 3;
    } catch (const c10::Error& e) {
        // libtorch's own errors carry a C++ backtrace in what(); the message alone is what users need.
        code = fail(request.run_dir, 1, {std::string("error: ") + e.what_without_backtrace()});
    } catch (const config::ConfigException& e) {
        std::vector<std::string> lines;
        for (const auto& err : e.errors()) lines.push_back(err.str());
        code = fail(request.run_dir, 2, lines);
    } catch (const std::exception& e) {
        code = fail(request.run_dir, 1, {std::string("error: ") + e.what()});
    }
    close_log();
    return code;
}

}  // namespace l3lab::train
