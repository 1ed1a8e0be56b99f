// Horizon and batch planning: everything scripts/base_train.py derives before its first step
// (parameter counts, FLOPs, iterations, batch size, gradient accumulation, LR and weight-decay
// scaling), with the reference's arithmetic, Python's round-half-to-even included.
#pragma once

#include <cstdint>
#include <string>

#include "modules/shapes/shapes.h"
#include "runner/config/experiment.h"
#include "runner/plan/optimizer_plan.h"

namespace l3lab::plan {

struct Plan {
    modules::GPTOptions model;
    modules::ModelShape shape;
    int64_t scaling_params = 0;      // transformer_matrices + lm_head
    int64_t target_tokens = 0;       // int(ratio * scaling_params)
    int64_t reference_scaling_params = 0;
    double reference_tokens = 0;     // D_ref = ratio * scaling params of the reference-depth model
    int64_t total_batch_size = 0;
    std::string batch_rule;          // "auto (Power Lines ...)" or "given"
    double batch_lr_scale = 1.0;
    double weight_decay_scaled = 0;
    int64_t num_iterations = 0;
    std::string horizon_rule;        // num_iterations | target_flops | target_param_data_ratio
    std::string horizon_detail;      // human sentence: "from target_param_data_ratio 10.5"
    int world_size = 1;
    int64_t tokens_per_micro_batch = 0;  // device_batch_size * sequence_len * world_size
    int64_t grad_accum_steps = 0;
    int64_t total_tokens = 0;
    double tokens_per_scaling_param = 0;
    double total_flops = 0;
    int64_t l3_n_emb = 0;            // 0 without L3 layers
    int64_t l3_d_up = 0;
    std::vector<GroupPlan> optimizer_groups;
    std::vector<std::string> warnings;
};

// Throws config::ConfigException (located, exit 2) when the experiment cannot be planned.
Plan make_plan(const config::Experiment& experiment, int world_size = 1);

// Python's round() on a float: nearest integer, halves to even.
int64_t python_round(double x);

}  // namespace l3lab::plan
