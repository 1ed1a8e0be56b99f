#include "modules/optim/dist_muon_adamw.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>

#include <map>
#include <optional>
#include <stdexcept>

namespace l3lab::optim {

namespace {

// The reference's threshold between all-reduced and reduce-scattered AdamW parameters.
constexpr int64_t kSmallParam = 1024;

std::string shape_text(at::IntArrayRef shape) {
    std::string s;
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? "x" : "") + std::to_string(shape[i]);
    return s;
}

}  // namespace

struct DistMuonAdamW::Impl {
    // An AdamW parameter: all-reduced whole (small, or rows not divisible by W) or reduce-scattered by rows.
    struct AdamWParam {
        size_t index = 0;        // in its group
        bool sharded = false;
        at::Tensor slice;        // this rank's rows of the parameter (a view), the inner optimizer's parameter
        at::Tensor grad_slice;   // reduce-scatter output
        at::Tensor send;         // all-gather input (a copy of `slice`)
        size_t inner = 0;        // its group in the inner optimizer
        c10::intrusive_ptr<c10d::Work> reduce, gather;
    };
    // A Muon stack: the group's parameters of one shape, in MuonAdamW's order.
    struct MuonStack {
        std::vector<size_t> members;  // indices into the group's params
        int64_t rows = 0, cols = 0, chunk = 0, owned_begin = 0, owned = 0;
        at::Tensor stacked;     // [W * chunk, R, C]: reduce-scatter input, then all-gather output
        at::Tensor grad_chunk;  // [chunk, R, C]: this rank's reduced gradients
        at::Tensor updated;     // [chunk, R, C]: this rank's updated parameters, zero-padded
        std::optional<size_t> inner;  // its group in the inner optimizer; none when this rank owns nothing
        c10::intrusive_ptr<c10d::Work> reduce, gather;
    };
    struct GroupPlan {
        std::vector<AdamWParam> adamw;
        std::vector<MuonStack> stacks;
    };

    c10d::Backend* backend = nullptr;
    int rank = 0, world = 1;
    bool average_in_backend = false;  // NCCL has ReduceOp::AVG; Gloo sums and we divide
    std::vector<ParamGroup> groups;   // the caller's groups (world > 1)
    std::vector<GroupPlan> plans;
    std::unique_ptr<MuonAdamW> inner;  // world 1: the whole optimizer; else this rank's share

    std::string who() const { return "rank " + std::to_string(rank) + " of " + std::to_string(world); }

    void wait(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what) const {
        try {
            work->wait();
        } catch (const c10::Error& e) {
            throw std::runtime_error(who() + ": " + what + " failed: " + e.what_without_backtrace() +
                                     " (another rank died, or did not take part within the timeout)");
        } catch (const std::exception& e) {
            throw std::runtime_error(who() + ": " + what + " failed: " + e.what() +
                                     " (another rank died, or did not take part within the timeout)");
        }
    }

    const at::Tensor& grad_of(const ParamGroup& group, size_t i) const {
        const auto& [name, p] = group.params[i];
        const at::Tensor& g = p.grad();
        if (!g.defined())
            throw std::runtime_error(who() + ": parameter '" + name + "' has no gradient; in data-parallel training " +
                                     "every parameter must take part in the loss on every rank");
        return g;
    }

    c10::intrusive_ptr<c10d::Work> reduce_scatter(at::Tensor& out, at::Tensor& in) const {
        c10d::ReduceScatterOptions o;
        o.reduceOp = average_in_backend ? c10d::ReduceOp::AVG : c10d::ReduceOp::SUM;
        return backend->_reduce_scatter_base(out, in, o);
    }
    c10::intrusive_ptr<c10d::Work> all_reduce(at::Tensor& t) const {
        c10d::AllreduceOptions o;
        o.reduceOp = average_in_backend ? c10d::ReduceOp::AVG : c10d::ReduceOp::SUM;
        std::vector<at::Tensor> tensors{t};
        return backend->allreduce(tensors, o);
    }
    void finish_average(const at::Tensor& t) const {
        if (!average_in_backend) t.div_(world);
    }

    void build(std::vector<ParamGroup> given);
    void step();
};

// ---------------------------------------------------------------------------------------------

void DistMuonAdamW::Impl::build(std::vector<ParamGroup> given) {
    MuonAdamW check(given);  // the same validation (names, kinds, shapes) as one process
    for (size_t g = 0; g < given.size(); ++g) given[g].initial_lr = check.groups()[g].initial_lr;
    groups = std::move(given);

    // The inner optimizer: one group per AdamW parameter and one per Muon stack this rank owns part of,
    // so that each can step as soon as its own reduction is in.
    std::vector<ParamGroup> inner_groups;
    torch::NoGradGuard no_grad;
    for (const ParamGroup& group : groups) {
        GroupPlan plan;
        if (group.options.kind == Kind::AdamW) {
            for (size_t i = 0; i < group.params.size(); ++i) {
                const auto& [name, p] = group.params[i];
                AdamWParam a;
                a.index = i;
                a.sharded = p.numel() >= kSmallParam && p.dim() >= 1 && p.size(0) % world == 0 && p.is_contiguous();
                ParamGroup unit{group.options, 0.0, {}};
                if (a.sharded) {
                    const int64_t rows = p.size(0) / world;
                    a.slice = p.narrow(0, rank * rows, rows);
                    a.grad_slice = at::empty_like(a.slice);
                    a.send = at::empty_like(a.slice);
                    unit.params.emplace_back(name, a.slice);
                } else {
                    unit.params.emplace_back(name, p);
                }
                a.inner = inner_groups.size();
                inner_groups.push_back(std::move(unit));
                plan.adamw.push_back(std::move(a));
            }
        } else {
            // MuonAdamW's stacks: by shape, sorted, members in group order.
            std::map<std::pair<int64_t, int64_t>, std::vector<size_t>> by_shape;
            for (size_t i = 0; i < group.params.size(); ++i)
                by_shape[{group.params[i].second.size(0), group.params[i].second.size(1)}].push_back(i);
            for (auto& [shape, members] : by_shape) {
                MuonStack s;
                s.members = members;
                s.rows = shape.first;
                s.cols = shape.second;
                const int64_t k = static_cast<int64_t>(members.size());
                s.chunk = (k + world - 1) / world;
                s.owned_begin = std::min<int64_t>(k, rank * s.chunk);
                s.owned = std::min<int64_t>(s.chunk, k - s.owned_begin);
                const at::Tensor& first = group.params[members.front()].second;
                s.stacked = at::empty({s.chunk * world, s.rows, s.cols}, first.options());
                s.grad_chunk = at::empty({s.chunk, s.rows, s.cols}, first.options());
                s.updated = at::empty({s.chunk, s.rows, s.cols}, first.options());
                if (s.owned > 0) {
                    ParamGroup unit{group.options, 0.0, {}};
                    for (int64_t j = 0; j < s.owned; ++j)
                        unit.params.push_back(group.params[members[static_cast<size_t>(s.owned_begin + j)]]);
                    s.inner = inner_groups.size();
                    inner_groups.push_back(std::move(unit));
                }
                plan.stacks.push_back(std::move(s));
            }
        }
        plans.push_back(std::move(plan));
    }
    inner = std::make_unique<MuonAdamW>(std::move(inner_groups));
}

void DistMuonAdamW::Impl::step() {
    torch::NoGradGuard no_grad;
    // The caller changes lr, momentum and weight decay on the outer groups between steps.
    auto& units = inner->groups();
    for (size_t g = 0; g < groups.size(); ++g) {
        for (const auto& a : plans[g].adamw) units[a.inner].options = groups[g].options;
        for (const auto& s : plans[g].stacks)
            if (s.inner) units[*s.inner].options = groups[g].options;
    }

    // Phase 1: launch every reduction, group by group.
    for (size_t g = 0; g < groups.size(); ++g) {
        ParamGroup& group = groups[g];
        for (auto& a : plans[g].adamw) {
            at::Tensor grad = grad_of(group, a.index);
            a.reduce = a.sharded ? reduce_scatter(a.grad_slice, grad) : all_reduce(grad);
        }
        for (auto& s : plans[g].stacks) {
            std::vector<at::Tensor> grads;
            for (size_t i : s.members) grads.push_back(grad_of(group, i));
            const int64_t k = static_cast<int64_t>(s.members.size());
            at::Tensor head = s.stacked.narrow(0, 0, k);
            at::stack_out(head, grads);
            if (k < s.stacked.size(0)) s.stacked.narrow(0, k, s.stacked.size(0) - k).zero_();
            s.reduce = reduce_scatter(s.grad_chunk, s.stacked);
        }
    }

    // Phase 2: group by group, wait for the reduction, update this rank's part, launch its gather.
    for (size_t g = 0; g < groups.size(); ++g) {
        ParamGroup& group = groups[g];
        for (auto& a : plans[g].adamw) {
            const std::string& name = group.params[a.index].first;
            wait(a.reduce, std::string(a.sharded ? "reduce-scatter" : "all-reduce") + " of the gradient of '" + name + "'");
            a.reduce.reset();
            if (a.sharded) {
                finish_average(a.grad_slice);
                a.slice.mutable_grad() = a.grad_slice;
                inner->step_group(a.inner);
                a.send.copy_(a.slice);
                a.gather = backend->_allgather_base(group.params[a.index].second, a.send, c10d::AllgatherOptions());
            } else {
                finish_average(group.params[a.index].second.grad());
                inner->step_group(a.inner);
            }
        }
        for (auto& s : plans[g].stacks) {
            wait(s.reduce, "reduce-scatter of the Muon stack " + shape_text({s.rows, s.cols}) + " of group '" +
                               group.options.name + "'");
            s.reduce.reset();
            finish_average(s.grad_chunk);
            if (s.inner) {
                std::vector<at::Tensor> owned;
                for (int64_t j = 0; j < s.owned; ++j) {
                    at::Tensor& p = group.params[s.members[static_cast<size_t>(s.owned_begin + j)]].second;
                    p.mutable_grad() = s.grad_chunk[j];
                    owned.push_back(p);
                }
                inner->step_group(*s.inner);
                at::Tensor head = s.updated.narrow(0, 0, s.owned);
                at::stack_out(head, owned);
            }
            if (s.owned < s.chunk) s.updated.narrow(0, s.owned, s.chunk - s.owned).zero_();
            s.gather = backend->_allgather_base(s.stacked, s.updated, c10d::AllgatherOptions());
        }
    }

    // Phase 3: wait for the gathers; the Muon stacks go back into their parameters.
    for (size_t g = 0; g < groups.size(); ++g) {
        ParamGroup& group = groups[g];
        for (auto& a : plans[g].adamw) {
            if (!a.gather) continue;
            wait(a.gather, "all-gather of '" + group.params[a.index].first + "'");
            a.gather.reset();
        }
        for (auto& s : plans[g].stacks) {
            wait(s.gather, "all-gather of the Muon stack " + shape_text({s.rows, s.cols}) + " of group '" +
                               group.options.name + "'");
            s.gather.reset();
            std::vector<at::Tensor> params;
            for (size_t i : s.members) params.push_back(group.params[i].second);
            at::_foreach_copy_(params, s.stacked.narrow(0, 0, static_cast<int64_t>(s.members.size())).unbind(0));
        }
    }
}

// ---------------------------------------------------------------------------------------------

DistMuonAdamW::DistMuonAdamW(std::vector<ParamGroup> groups, c10d::Backend* backend) : impl_(std::make_unique<Impl>()) {
    if (backend && backend->getSize() > 1) {
        impl_->backend = backend;
        impl_->rank = backend->getRank();
        impl_->world = backend->getSize();
        impl_->average_in_backend = backend->getBackendName() != "gloo";
        impl_->build(std::move(groups));
    } else {
        impl_->inner = std::make_unique<MuonAdamW>(std::move(groups));
    }
}

DistMuonAdamW::~DistMuonAdamW() = default;

void DistMuonAdamW::step() {
    if (impl_->world == 1) return impl_->inner->step();
    impl_->step();
}

void DistMuonAdamW::zero_grad() {
    impl_->inner->zero_grad();  // the inner parameters: row slices, small and owned parameters
    if (impl_->world == 1) return;
    for (auto& group : impl_->groups)
        for (auto& [name, p] : group.params) p.mutable_grad().reset();
}

std::vector<ParamGroup>& DistMuonAdamW::groups() { return impl_->world == 1 ? impl_->inner->groups() : impl_->groups; }
const std::vector<ParamGroup>& DistMuonAdamW::groups() const {
    return impl_->world == 1 ? impl_->inner->groups() : impl_->groups;
}

std::vector<NamedTensor> DistMuonAdamW::state() const { return impl_->inner->state(); }
void DistMuonAdamW::load_state(const std::vector<NamedTensor>& state) { impl_->inner->load_state(state); }

int DistMuonAdamW::rank() const { return impl_->rank; }
int DistMuonAdamW::world_size() const { return impl_->world; }

std::vector<std::string> DistMuonAdamW::layout() const {
    std::vector<std::string> lines;
    const int W = impl_->world;
    for (size_t g = 0; g < groups().size(); ++g) {
        const ParamGroup& group = groups()[g];
        std::string line = group.options.name + " (" + kind_name(group.options.kind) + "): ";
        if (W == 1) {
            lines.push_back(line + std::to_string(group.params.size()) + " parameters, one process");
            continue;
        }
        const auto& plan = impl_->plans[g];
        if (group.options.kind == Kind::AdamW) {
            int sharded = 0;
            for (const auto& a : plan.adamw) sharded += a.sharded;
            line += std::to_string(sharded) + " row-sharded " + std::to_string(W) + " ways, " +
                    std::to_string(plan.adamw.size() - static_cast<size_t>(sharded)) + " all-reduced whole";
        } else {
            for (size_t k = 0; k < plan.stacks.size(); ++k) {
                const auto& s = plan.stacks[k];
                line += (k ? ", " : "") + std::to_string(s.members.size()) + " x " + shape_text({s.rows, s.cols}) +
                        " in chunks of " + std::to_string(s.chunk);
            }
        }
        lines.push_back(line);
    }
    return lines;
}

}  // namespace l3lab::optim
