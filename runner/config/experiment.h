// A resolved experiment: the validated YAML tree (for printing, hashing and freezing) plus the typed
// values the rest of l3lab reads. This is the one place where YAML becomes plain structs.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "runner/config/node.h"

namespace l3lab::config {

struct L3Config {
    std::vector<long long> after_layers;
    std::optional<long long> n_emb;  // nullopt = auto
    std::optional<long long> d_up;   // nullopt = auto (4 * model_dim)
    std::optional<long long> d_emb;  // nullopt = auto (model_dim)
    long long k_max = 512;
    bool tie_kv = true;
    std::string allocation = "lzw";
    long long sample_rows = 100;
};

// One entry of an explicit `model.graph`. Unset L3 options fall back to model.l3's.
struct GraphEntry {
    std::string type;  // "block" or "l3"
    long long repeat = 1;
    std::optional<std::optional<long long>> n_emb, d_up, d_emb;  // outer: set here; inner nullopt: auto
    std::optional<long long> k_max;
    std::optional<bool> tie_kv;
    std::string path;  // "model.graph[2]", for errors
};

struct ModelConfig {
    long long vocab_size = 32768;
    long long sequence_len = 2048;
    long long depth = 20;
    long long aspect_ratio = 64;
    long long head_dim = 128;
    std::optional<long long> n_kv_head;  // nullopt = n_head
    std::string window_pattern = "SSSL";
    double softcap = 15.0;
    long long pad_vocab_to = 64;
    L3Config l3;
    std::vector<GraphEntry> graph;  // empty: the standard stack from depth and l3.after_layers
};

struct HorizonConfig {
    long long num_iterations = -1;
    double target_flops = -1.0;
    double target_param_data_ratio = 10.5;
};

struct BatchConfig {
    long long device_batch_size = 32;
    std::optional<long long> total_batch_size;  // nullopt = auto
    long long reference_depth = 12;
    long long reference_batch_size = 524288;
};

// One entry of `optimizer.groups`, with the kind's defaults filled in.
struct OptimizerGroupConfig {
    std::string name, kind;                  // kind: "adamw" or "muon"
    std::vector<std::string> roles, names;   // selection: roles and/or name globs (both must match when both given)
    double lr = 0;
    std::string lr_scale = "none";           // "none", "dmodel", or a factor as canonical text
    double beta1 = 0.8, beta2 = 0.95, eps = 1e-10;
    std::optional<double> weight_decay;      // nullopt = scaled (muon's default)
    long long ns_steps = 5;
    std::string path;                        // "optimizer.groups[3]", for errors
};

struct OptimizerConfig {
    double weight_decay = 0.2;  // base of `scaled` weight decay
    std::vector<OptimizerGroupConfig> groups;
};

struct ScheduleConfig {
    double warmup_ratio = 0.0;
    double warmdown_ratio = 0.5;
    double final_lr_frac = 0.0;
    double muon_momentum_start = 0.85, muon_momentum_end = 0.95;
    long long muon_momentum_warmup_steps = 300;
    bool weight_decay_linear = true;
};

struct Experiment {
    std::string source;  // the experiment file as given on the command line
    Node tree;           // validated, defaults filled, canonical scalars
    std::string name;
    long long seed = 42;
    std::string device = "auto";
    std::string precision = "auto";  // "bf16": bfloat16 autocast on the CPU as well
    std::optional<double> device_peak_flops;  // nullopt = look the device up
    ModelConfig model;
    HorizonConfig horizon;
    BatchConfig batch;
    OptimizerConfig optimizer;
    ScheduleConfig schedule;
    long long eval_every = 250, eval_tokens = 20971520;
    long long core_every = 2000, core_max_per_task = 500;  // CORE (nanochat's --core-metric-every, -max-per-task)
    std::string core_bundle;                               // empty: nanochat's location
    long long sample_every = 2000, sample_max_tokens = 16;
    std::vector<std::string> sample_prompts;
    long long checkpoint_every = -1, checkpoint_keep_last = 2;
    long long train_skip_nonfinite_steps = 0;  // steps with a NaN/inf loss or gradient skipped before stopping
    std::string data_tokenizer, data_train, data_val, output_dir;
    long long data_row_group_docs = 1024;  // documents per row group (the reference's parquet row groups)
    double distributed_timeout_s = 600;    // how long a collective waits for a dead or hung rank
    bool tracking_tensorboard = true;      // TensorBoard event files in <run>/tb/

    // Where a key's value came from, for errors found after loading (plan, model options).
    Location where(const std::string& key) const;
    // For a problem involving several keys: the first one set in the experiment file itself or on the
    // command line (the likelier culprit), else the first.
    Location where_any(const std::vector<std::string>& keys) const;
};

// Loads `path` with its extends chain, applies the overrides, validates. Throws ConfigException with
// every problem found (exit code 2).
Experiment load_experiment(const std::string& path, const std::vector<std::string>& overrides);

// The resolved experiment as YAML: byte-identical for the same inputs.
std::string to_yaml(const Experiment& experiment);

// Every leaf of a validated tree as dotted key -> canonical text (lists and records as flow YAML), for
// comparing two resolved configs.
std::map<std::string, std::string> flatten(const Node& tree);

}  // namespace l3lab::config
