// The torch-free side of the module registry: every parameter of a GPT (reference state_dict names,
// shapes, optimizer role), the reference's parameter groups, and its FLOPs estimate.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "modules/shapes/gpt_options.h"

namespace l3lab::modules {

// What a parameter is, for optimizer groups (issue: optimizer) and counting.
enum class Role { TokenEmbedding, ValueEmbedding, LmHead, Matrix, ResidLambda, X0Lambda, L3Table, L3Matrix };
const char* role_name(Role role);

struct ParamShape {
    std::string name;            // reference state_dict name, e.g. transformer.h.3.attn.c_q.weight
    std::vector<int64_t> shape;  // torch order: Linear weights are [out, in]
    Role role;
    int64_t numel() const;
};

// The reference's num_scaling_params() groups.
struct ParamCounts {
    int64_t wte = 0, value_embeds = 0, lm_head = 0, transformer_matrices = 0;
    int64_t l3_embeds = 0, l3_matrices = 0, scalars = 0, total = 0;
};

struct ModelShape {
    std::vector<ParamShape> params;  // in the reference's named_parameters() order
    ParamCounts counts;
    int64_t flops_per_token = 0;     // the reference's estimate_flops()
};

// Parameters one module contributes, named under `prefix`.
using ShapeBuilder = std::function<std::vector<ParamShape>(const GPTOptions&, int64_t index, const std::string& prefix)>;

// The small explicit registry: module type name -> shape builder ("block", "l3").
const std::map<std::string, ShapeBuilder>& shape_registry();
// Looks a type up; an unknown name throws std::invalid_argument listing the valid ones.
const ShapeBuilder& shape_builder(const std::string& type);

ModelShape describe(const GPTOptions& options);
ParamCounts count_params(const std::vector<ParamShape>& params);
int64_t estimate_flops(const GPTOptions& options, const std::vector<ParamShape>& params);

// Reference rule for `n_emb: auto`: build the model with every auto L3 table (n_emb <= 0) at V rows,
// count all its parameters, and take max(V, total // 1000).
int64_t auto_l3_n_emb(GPTOptions options);

}  // namespace l3lab::modules
