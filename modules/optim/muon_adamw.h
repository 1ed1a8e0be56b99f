// nanochat's MuonAdamW (nanochat/optim.py, the single-process class) in libtorch: AdamW for
// embeddings, lm_head and scalars, Muon for 2-D matrices. Both follow the reference's eager
// computation op for op, with its dtypes: the hyperparameters enter as 0-D float32 CPU tensors (so
// `1 - lr * wd`, `beta1 ** step` and `lr / bias1` are float32 arithmetic), and Muon rounds its
// learning rate, weight decay and NorMuon beta2 to bfloat16 (`lr_t.to(g.dtype)` after Polar Express).
// With one Muon group per shape (what setup_optimizer builds) the results are the reference's.
//
// Use, as scripts/base_train.py does:
//
//     MuonAdamW opt(groups);                        // records initial_lr = options.lr per group
//     for each step:
//         for (auto& g : opt.groups()) {
//             g.options.lr = g.initial_lr * lr_multiplier(step, ...);
//             if (g.options.kind == Kind::Muon) { g.options.momentum = ...; g.options.weight_decay = ...; }
//         }
//         opt.step();
//         opt.zero_grad();
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace l3lab::optim {

enum class Kind { AdamW, Muon };
const char* kind_name(Kind kind);  // "adamw", "muon"

// Precision of Muon's orthogonalisation and of everything after it in the step (the NorMuon scale,
// lr and weight decay): BFloat16 is the reference; Float32 is the same step with its bfloat16 casts
// made float32 casts (for tests free of bfloat16 rounding, and for experiments).
enum class MuonPrecision { BFloat16, Float32 };

struct GroupOptions {
    std::string name;             // for errors and logs; need not be unique
    Kind kind = Kind::AdamW;
    double lr = 0.0;
    double beta1 = 0.8;           // AdamW first moment
    double beta2 = 0.95;          // AdamW second moment; Muon: NorMuon's second-moment beta
    double eps = 1e-10;           // AdamW
    double weight_decay = 0.0;    // AdamW: decoupled (p *= 1 - lr * wd); Muon: cautious
    double momentum = 0.95;       // Muon: Nesterov momentum
    int ns_steps = 5;             // Muon: Polar Express iterations, 1..5
    MuonPrecision precision = MuonPrecision::BFloat16;
};

using NamedTensor = std::pair<std::string, at::Tensor>;

struct ParamGroup {
    GroupOptions options;
    double initial_lr = 0.0;          // set by MuonAdamW's constructor to options.lr
    std::vector<NamedTensor> params;  // fixed after construction; names must be unique overall
};

// Memory: besides the state (AdamW: two moments per parameter; Muon: a momentum buffer per parameter and
// a factored second moment) it keeps temporaries between steps, shared by all groups: one the size of
// the largest AdamW parameter (per dtype) and three the size of the largest Muon stack (K x R x C).
class MuonAdamW {
public:
    // Checks the groups (std::invalid_argument naming the group and parameter): unique parameter
    // names, each tensor in one group only, floating-point tensors, Muon parameters 2-D, ns_steps
    // in 1..5. A Muon group's parameters are stacked by shape (sorted by shape, in group order within
    // a shape); every parameter's state starts at the first step that gives it a gradient.
    explicit MuonAdamW(std::vector<ParamGroup> groups);

    // One step of every group, in group order. AdamW skips parameters without a gradient (as the
    // reference); a Muon stack with some gradient missing throws std::runtime_error naming it.
    void step();
    // The step of group `index` alone (step() is every group in order); DistMuonAdamW interleaves
    // communication between groups.
    void step_group(size_t index);
    // Drops every gradient (the reference's zero_grad(set_to_none=True)).
    void zero_grad();

    // Options (lr, momentum, weight_decay, ...) may change between steps; the parameter lists may not.
    std::vector<ParamGroup>& groups() { return groups_; }
    const std::vector<ParamGroup>& groups() const { return groups_; }

    // The exact optimizer state, keyed by parameter name, for resuming:
    //   AdamW: <name>.exp_avg, <name>.exp_avg_sq (the parameter's shape and dtype), <name>.step (0-D int64)
    //   Muon:  <name>.momentum_buffer [R, C], <name>.second_momentum_buffer [R, 1] if R >= C else [1, C]
    //          (the parameter's dtype; row i of the reference's stacked buffers for the i-th parameter
    //          of its shape). Muon tensors are views of the stacked buffers: copy before the next step
    //          if they must not change.
    // Parameters that never had a step have no entries.
    std::vector<NamedTensor> state() const;
    // Replaces the state with `state` (as state() returns it; values are copied into the parameters'
    // dtype and device). Every entry must name a parameter of this optimizer with the right shape,
    // and a Muon shape stack must be given whole or not at all; otherwise nothing changes and the
    // std::invalid_argument lists every problem.
    void load_state(const std::vector<NamedTensor>& state);

private:
    struct AdamWState {
        at::Tensor exp_avg, exp_avg_sq;
        int64_t step = 0;
    };
    struct MuonStack {  // the parameters of one shape in one Muon group
        std::vector<size_t> members;  // indices into the group's params
        int64_t rows = 0, cols = 0;
        at::Tensor momentum_buffer;         // [K, R, C]
        at::Tensor second_momentum_buffer;  // [K, R, 1] or [K, 1, C]
    };
    struct GroupState {
        std::vector<AdamWState> adamw;  // per parameter (AdamW groups)
        std::vector<MuonStack> stacks;  // per shape (Muon groups)
        size_t num_params = 0;
    };

    void step_adamw(const ParamGroup& group, GroupState& state);
    void step_muon(const ParamGroup& group, MuonStack& stack);
    // Temporaries kept between steps (a CPU allocation this size costs a page fault per 4 KiB each time):
    // one buffer per slot, dtype and device, grown to the largest request, shared by all groups.
    enum class Slot { AdamWTemp, StackedGrads, StackedParams, MuonTemp };
    at::Tensor scratch(Slot slot, at::IntArrayRef shape, const at::TensorOptions& options);

    std::vector<ParamGroup> groups_;
    std::vector<GroupState> state_;
    std::vector<std::pair<Slot, at::Tensor>> scratch_;
};

}  // namespace l3lab::optim
