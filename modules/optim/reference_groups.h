// The reference's parameter groups (nanochat/gpt.py setup_optimizer, called as scripts/base_train.py
// calls it) for an l3lab GPT, from each parameter's role (modules/shapes/shapes.h).
#pragma once

#include <vector>

#include "modules/optim/muon_adamw.h"
#include "modules/torch/gpt.h"

namespace l3lab::optim {

// setup_optimizer's arguments; the defaults are base_train's command-line defaults.
struct SetupOptions {
    double unembedding_lr = 0.004;  // lm_head (AdamW)
    double embedding_lr = 0.3;      // wte, value embeddings, L3 tables (AdamW)
    double matrix_lr = 0.02;        // block matrices and L3 matrices (Muon)
    double scalar_lr = 0.5;         // x0_lambdas; resid_lambdas get scalar_lr * 0.01 (AdamW)
    double adam_beta1 = 0.8, adam_beta2 = 0.95;
    double weight_decay = 0.2;      // Muon's cautious weight decay, already scaled (weight_decay_scaled)
    double batch_lr_scale = 1.0;    // base_train's sqrt(B / B_ref), multiplies the four learning rates
};

// The groups, in the reference's order: lm_head, wte, value_embeds, resid_lambdas, x0_lambdas
// (betas 0.96/0.95), l3_tables (only with L3 layers), then one Muon group per matrix shape sorted by
// shape, named "matrix_<rows>x<cols>" (block matrices first, then L3 matrices, each in parameter
// order). AdamW learning rates are scaled by (n_embd / 768)^-0.5; AdamW weight decay is 0.
std::vector<ParamGroup> reference_param_groups(const modules::GPT& model, const SetupOptions& options = {});

}  // namespace l3lab::optim
