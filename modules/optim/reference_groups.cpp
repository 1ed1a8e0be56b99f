#include "modules/optim/reference_groups.h"

#include <cmath>
#include <map>
#include <stdexcept>

namespace l3lab::optim {

using modules::Role;

std::vector<ParamGroup> reference_param_groups(const modules::GPT& model, const SetupOptions& o) {
    std::map<std::string, at::Tensor> tensors;
    for (const auto& item : model->named_parameters(/*recurse=*/true)) tensors.emplace(item.key(), item.value());
    const auto roles = model->parameter_roles();
    if (roles.size() != tensors.size()) {
        throw std::logic_error("reference_param_groups: the model has " + std::to_string(tensors.size()) +
                               " parameters but " + std::to_string(roles.size()) + " roles");
    }
    auto with_role = [&](Role role) {
        std::vector<NamedTensor> out;
        for (const auto& [name, r] : roles) {
            if (r != role) continue;
            auto it = tensors.find(name);
            if (it == tensors.end()) throw std::logic_error("reference_param_groups: no parameter named " + name);
            out.emplace_back(name, it->second);
        }
        return out;
    };

    // base_train passes each learning rate times batch_lr_scale; setup_optimizer then scales the
    // AdamW ones by (model_dim / 768) ** -0.5. Same operations, same order, same doubles.
    const double unembedding_lr = o.unembedding_lr * o.batch_lr_scale;
    const double embedding_lr = o.embedding_lr * o.batch_lr_scale;
    const double scalar_lr = o.scalar_lr * o.batch_lr_scale;
    const double matrix_lr = o.matrix_lr * o.batch_lr_scale;
    const double dmodel_lr_scale = std::pow(static_cast<double>(model->options.n_embd) / 768, -0.5);

    auto adamw = [&](const std::string& name, double lr, std::vector<NamedTensor> params, double beta1,
                     double beta2) {
        ParamGroup g;
        g.options.name = name;
        g.options.kind = Kind::AdamW;
        g.options.lr = lr;
        g.options.beta1 = beta1;
        g.options.beta2 = beta2;
        g.options.eps = 1e-10;
        g.options.weight_decay = 0.0;
        g.params = std::move(params);
        return g;
    };
    std::vector<ParamGroup> groups;
    groups.push_back(adamw("lm_head", unembedding_lr * dmodel_lr_scale, with_role(Role::LmHead), o.adam_beta1,
                           o.adam_beta2));
    groups.push_back(adamw("wte", embedding_lr * dmodel_lr_scale, with_role(Role::TokenEmbedding), o.adam_beta1,
                           o.adam_beta2));
    groups.push_back(adamw("value_embeds", embedding_lr * dmodel_lr_scale, with_role(Role::ValueEmbedding),
                           o.adam_beta1, o.adam_beta2));
    groups.push_back(adamw("resid_lambdas", scalar_lr * 0.01, with_role(Role::ResidLambda), o.adam_beta1,
                           o.adam_beta2));
    groups.push_back(adamw("x0_lambdas", scalar_lr, with_role(Role::X0Lambda), 0.96, 0.95));  // higher beta1
    auto l3_tables = with_role(Role::L3Table);
    if (!l3_tables.empty()) {
        groups.push_back(adamw("l3_tables", embedding_lr * dmodel_lr_scale, std::move(l3_tables), o.adam_beta1,
                               o.adam_beta2));
    }

    auto matrices = with_role(Role::Matrix);
    for (auto& p : with_role(Role::L3Matrix)) matrices.push_back(std::move(p));
    std::map<std::pair<int64_t, int64_t>, std::vector<NamedTensor>> by_shape;  // sorted like Python's sorted()
    for (auto& [name, t] : matrices) by_shape[{t.size(0), t.size(1)}].emplace_back(name, t);
    for (auto& [shape, params] : by_shape) {
        ParamGroup g;
        g.options.name = "matrix_" + std::to_string(shape.first) + "x" + std::to_string(shape.second);
        g.options.kind = Kind::Muon;
        g.options.lr = matrix_lr;
        g.options.momentum = 0.95;
        g.options.ns_steps = 5;
        g.options.beta2 = 0.95;
        g.options.weight_decay = o.weight_decay;
        g.params = std::move(params);
        groups.push_back(std::move(g));
    }
    return groups;
}

}  // namespace l3lab::optim
