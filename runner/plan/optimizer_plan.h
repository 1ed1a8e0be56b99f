// Which parameter goes to which optimizer group, with what effective hyperparameters: the YAML
// `optimizer.groups` resolved against the model's parameter list (torch-free, from the shape side).
#pragma once

#include <string>
#include <vector>

#include "modules/shapes/shapes.h"
#include "runner/config/experiment.h"

namespace l3lab::plan {

struct GroupPlan {
    std::string name, kind;       // kind: adamw | muon
    double lr = 0;                // initial lr: lr x batch LR scale x lr_scale, as setup_optimizer computes it
    double beta1 = 0.8, beta2 = 0.95, eps = 1e-10;
    double weight_decay = 0;      // initial; Muon groups follow schedule.weight_decay
    bool weight_decay_scaled = false;
    long long ns_steps = 5;
    std::vector<std::string> params;  // reference parameter names, in model order
    int64_t numel = 0;
};

// Throws config::ConfigException naming every parameter that is in no group, in two groups, or a
// non-matrix in a Muon group.
std::vector<GroupPlan> plan_optimizer(const config::Experiment& experiment, const modules::GPTOptions& model,
                                      const std::vector<modules::ParamShape>& params, double batch_lr_scale,
                                      double weight_decay_scaled);

}  // namespace l3lab::plan
