#include "runner/plan/optimizer_plan.h"

#include <fnmatch.h>

#include <algorithm>
#include <cmath>
#include <map>

namespace l3lab::plan {

static bool selects(const config::OptimizerGroupConfig& g, const modules::ParamShape& p) {
    const bool by_role = g.roles.empty() || std::find(g.roles.begin(), g.roles.end(), modules::role_name(p.role)) != g.roles.end();
    const bool by_name = g.names.empty() || std::any_of(g.names.begin(), g.names.end(), [&](const std::string& glob) {
                             return fnmatch(glob.c_str(), p.name.c_str(), 0) == 0;
                         });
    return by_role && by_name;
}

static std::string list_names(const std::vector<std::string>& names) {
    std::string out;
    const size_t shown = std::min<size_t>(names.size(), 6);
    for (size_t i = 0; i < shown; ++i) out += (i ? ", " : "") + names[i];
    if (names.size() > shown) out += " and " + std::to_string(names.size() - shown) + " more";
    return out;
}

std::vector<GroupPlan> plan_optimizer(const config::Experiment& e, const modules::GPTOptions& model,
                                      const std::vector<modules::ParamShape>& params, double batch_lr_scale,
                                      double weight_decay_scaled) {
    config::ErrorList errors;
    std::vector<GroupPlan> groups;
    std::map<std::string, std::string> owner;  // parameter -> group
    std::vector<std::string> doubled, not_matrix;
    // setup_optimizer scales AdamW lrs by (model_dim / 768)^-0.5, tuned at d12.
    const double dmodel_scale = std::pow(static_cast<double>(model.n_embd) / 768.0, -0.5);
    for (const auto& g : e.optimizer.groups) {
        GroupPlan out;
        out.name = g.name;
        out.kind = g.kind;
        out.lr = g.lr * batch_lr_scale;  // base_train passes lr x batch_lr_scale into setup_optimizer
        if (g.lr_scale == "dmodel") out.lr *= dmodel_scale;
        else if (g.lr_scale != "none") out.lr *= std::stod(g.lr_scale);
        out.beta1 = g.beta1;
        out.beta2 = g.beta2;
        out.eps = g.eps;
        out.weight_decay_scaled = !g.weight_decay.has_value();
        out.weight_decay = g.weight_decay.value_or(weight_decay_scaled);
        out.ns_steps = g.ns_steps;
        for (const auto& p : params) {
            if (!selects(g, p)) continue;
            if (auto it = owner.find(p.name); it != owner.end()) {
                doubled.push_back(p.name + " (" + it->second + " and " + g.name + ")");
                continue;
            }
            owner[p.name] = g.name;
            if (g.kind == "muon" && p.shape.size() != 2) not_matrix.push_back(p.name);
            out.params.push_back(p.name);
            out.numel += p.numel();
        }
        groups.push_back(std::move(out));
    }
    std::vector<std::string> orphans;
    for (const auto& p : params)
        if (!owner.count(p.name)) orphans.push_back(p.name + " (" + modules::role_name(p.role) + ")");
    const auto where = e.where("optimizer.groups");
    if (!orphans.empty())
        errors.add(where, "optimizer.groups",
                   std::to_string(orphans.size()) + " parameter(s) in no group: " + list_names(orphans));
    if (!doubled.empty())
        errors.add(where, "optimizer.groups",
                   std::to_string(doubled.size()) + " parameter(s) in two groups: " + list_names(doubled));
    if (!not_matrix.empty())
        errors.add(where, "optimizer.groups", "Muon takes only 2-D parameters, not " + list_names(not_matrix));
    errors.throw_if_any();
    return groups;
}

}  // namespace l3lab::plan
