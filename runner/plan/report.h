// How `l3lab plan` shows a plan: an aligned table for people, one JSON object for scripts.
#pragma once

#include <string>

#include "runner/config/experiment.h"
#include "runner/plan/plan.h"

namespace l3lab::plan {

std::string plan_table(const config::Experiment& experiment, const Plan& plan);
// Keys: n_layer, n_embd, n_head, n_kv_head, head_dim, vocab_size, padded_vocab_size, params{...},
// scaling_params, flops_per_token, num_iterations, horizon_rule, total_batch_size, grad_accum_steps,
// total_tokens, tokens_per_scaling_param, total_flops, batch_lr_scale, weight_decay_scaled,
// l3_n_emb, l3_d_up (plus world_size and a few informative extras).
std::string plan_json(const config::Experiment& experiment, const Plan& plan);

}  // namespace l3lab::plan
