#include "modules/optim/muon_adamw.h"

#include <ATen/ATen.h>
#include <ATen/ScalarOps.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <set>
#include <stdexcept>

#include "modules/torch/cpu.h"
#include "modules/torch/cuda.h"

namespace l3lab::optim {

const char* kind_name(Kind kind) { return kind == Kind::AdamW ? "adamw" : "muon"; }

namespace {

// Polar Express coefficients for 5 iterations (safety factor 2e-2, cushion 2), the reference's
// polar_express_coeffs (Amsel et al. 2025, arXiv:2505.16932).
constexpr std::array<std::array<double, 3>, 5> kPolarExpress = {{
    {8.156554524902461, -22.48329292557795, 15.878769915207462},
    {4.042929935166739, -2.808917465908714, 0.5000178451051316},
    {3.8916678022926607, -2.772484153217685, 0.5060648178503393},
    {3.285753657755655, -2.3681294933425376, 0.46449024233003106},
    {2.3465413258596377, -1.7097828382687081, 0.42323551169305323},
}};

// A 0-D float32 CPU tensor: the reference fills such tensors with its hyperparameters, so every
// scalar formula on them is float32 arithmetic, done here by the same ATen kernels.
at::Tensor cpu_scalar(double value) { return at::scalar_tensor(value, at::TensorOptions().dtype(at::kFloat)); }

// A Python float as Python hands it to a tensor operation: a wrapped-number 0-D double tensor, the second
// operand. In-place ops must take this, not a c10::Scalar: libtorch's Scalar overloads of the in-place
// ops (mul_.Scalar, ...) put the scalar first, so on a bfloat16 tensor it is rounded to bfloat16 before
// the product, while `t * 1.02` in Python (and out of place in C++) multiplies by float32(1.02).
at::Tensor py_float(double value) { return at::native::wrapped_scalar_tensor(value); }

std::string where(const ParamGroup& group, const std::string& param) {
    return "optimizer group '" + group.options.name + "' (" + kind_name(group.options.kind) + "), parameter '" +
           param + "'";
}

std::string shape_text(at::IntArrayRef shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

}  // namespace

// ---------------------------------------------------------------------------------------------

MuonAdamW::MuonAdamW(std::vector<ParamGroup> groups) : groups_(std::move(groups)) {
    std::set<std::string> names;
    std::set<const void*> tensors;
    for (auto& group : groups_) {
        const GroupOptions& o = group.options;
        if (o.kind == Kind::Muon && (o.ns_steps < 1 || o.ns_steps > static_cast<int>(kPolarExpress.size()))) {
            throw std::invalid_argument("optimizer group '" + o.name + "': ns_steps must be in 1..5, got " +
                                        std::to_string(o.ns_steps));
        }
        for (const auto& [name, p] : group.params) {
            if (!p.defined()) throw std::invalid_argument(where(group, name) + ": undefined tensor");
            if (!names.insert(name).second) throw std::invalid_argument(where(group, name) + ": name used twice");
            if (!tensors.insert(p.unsafeGetTensorImpl()).second) {
                throw std::invalid_argument(where(group, name) + ": tensor already in the optimizer");
            }
            if (!at::isFloatingType(p.scalar_type())) {
                throw std::invalid_argument(where(group, name) + ": not a floating-point tensor");
            }
            if (o.kind == Kind::Muon && p.dim() != 2) {
                throw std::invalid_argument(where(group, name) + ": Muon takes only 2-D parameters, this one is " +
                                            shape_text(p.sizes()));
            }
        }
        group.initial_lr = o.lr;  // setup_optimizer's group["initial_lr"] = group["lr"]

        GroupState st;
        st.num_params = group.params.size();
        if (o.kind == Kind::AdamW) {
            st.adamw.resize(group.params.size());
        } else {
            // setup_optimizer's `for shape in sorted({p.shape ...})`: one stack per shape, sorted.
            std::map<std::pair<int64_t, int64_t>, std::vector<size_t>> by_shape;
            for (size_t i = 0; i < group.params.size(); ++i) {
                by_shape[{group.params[i].second.size(0), group.params[i].second.size(1)}].push_back(i);
            }
            for (auto& [shape, members] : by_shape) {
                MuonStack stack;
                stack.members = std::move(members);
                stack.rows = shape.first;
                stack.cols = shape.second;
                st.stacks.push_back(std::move(stack));
            }
        }
        state_.push_back(std::move(st));
    }
}

void MuonAdamW::step() {
    for (size_t g = 0; g < groups_.size(); ++g) step_group(g);
}

void MuonAdamW::step_group(size_t g) {
    torch::NoGradGuard no_grad;
    if (groups_.at(g).params.size() != state_[g].num_params) {
        throw std::logic_error("optimizer group '" + groups_[g].options.name +
                               "': its parameter list changed after the optimizer was built");
    }
    if (groups_[g].options.kind == Kind::AdamW) {
        step_adamw(groups_[g], state_[g]);
    } else {
        for (auto& stack : state_[g].stacks) step_muon(groups_[g], stack);
    }
}

void MuonAdamW::zero_grad() {
    for (auto& group : groups_) {
        for (auto& [name, p] : group.params) p.mutable_grad().reset();
    }
}

// Speed without changing a bit: every formula below is the reference's, computed by the same ATen
// kernel with the same operands and the same rounding after every operation. Only where results live
// differs: in-place and out= variants write into tensors this step already owns (or into a scratch
// tensor kept between steps) instead of fresh allocations, which on the CPU cost a page fault per 4 KiB
// every time. Swapping the operands of a commutative `+` or `*` is exact. The parity tests check the
// results bit for bit against the reference's eager step.

namespace {
// On CUDA the AdamW step is one fused kernel (modules/torch/cuda.h), as the reference's torch.compile
// makes it; on the CPU too (modules/torch/cpu.h), for float32 contiguous tensors of sizes ATen runs in
// whole vectors: the eager step's operations, but with the IEEE square root where ATen's eager sqrt is
// MKL VML's (the last bit of a few elements). Elsewhere (and for mixed dtypes or strided tensors) the
// ATen ops below, bit for bit the reference's eager step.
bool fused_on_cuda(const at::Tensor& p, const at::Tensor& grad, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq) {
    if (!p.is_cuda() || !modules::cuda_kernels_built()) return false;
    if (p.scalar_type() != at::kFloat && p.scalar_type() != at::kBFloat16) return false;
    for (const at::Tensor* t : {&p, &grad, &exp_avg, &exp_avg_sq})
        if (t->scalar_type() != p.scalar_type() || !t->is_contiguous()) return false;
    return true;
}
}  // namespace

// The reference's _step_adamw + adamw_step_fused, per parameter.
void MuonAdamW::step_adamw(const ParamGroup& group, GroupState& state) {
    const GroupOptions& o = group.options;
    const at::Tensor lr_t = cpu_scalar(o.lr), beta1_t = cpu_scalar(o.beta1), beta2_t = cpu_scalar(o.beta2);
    const at::Tensor eps_t = cpu_scalar(o.eps), wd_t = cpu_scalar(o.weight_decay);
    // Step-independent scalars, float32 as in the reference.
    const at::Tensor decay = at::rsub(lr_t * wd_t, 1);  // 1 - lr * wd
    const at::Tensor one_minus_beta1 = at::rsub(beta1_t, 1), one_minus_beta2 = at::rsub(beta2_t, 1);

    for (size_t i = 0; i < group.params.size(); ++i) {
        at::Tensor p = group.params[i].second;
        const at::Tensor& grad = p.grad();
        if (!grad.defined()) continue;
        AdamWState& s = state.adamw[i];
        if (s.step == 0) {
            s.exp_avg = at::zeros_like(p);
            s.exp_avg_sq = at::zeros_like(p);
        }
        s.step += 1;
        const at::Tensor step_t = cpu_scalar(static_cast<double>(s.step));
        const bool fused_cpu = modules::adamw_step_cpu_applies(p, grad, s.exp_avg, s.exp_avg_sq);
        if (fused_cpu || fused_on_cuda(p, grad, s.exp_avg, s.exp_avg_sq)) {
            // The same float32 scalars as below (0-D CPU tensors: no device sync), then one kernel.
            const at::Tensor bias1 = at::rsub(at::pow(beta1_t, step_t), 1);
            const at::Tensor bias2 = at::rsub(at::pow(beta2_t, step_t), 1);
            const modules::AdamWStepScalars scalars{decay.item<float>(), one_minus_beta1.item<float>(),
                                                    one_minus_beta2.item<float>(), bias2.item<float>(),
                                                    eps_t.item<float>(), (lr_t / bias1).item<float>()};
            if (fused_cpu)
                modules::adamw_step_cpu(p, grad, s.exp_avg, s.exp_avg_sq, scalars);
            else
                modules::adamw_step_cuda(p, grad, s.exp_avg, s.exp_avg_sq, scalars);
            continue;
        }
        at::Tensor tmp = scratch(Slot::AdamWTemp, p.sizes(), p.options());

        p.mul_(decay);                                   // p.mul_(1 - lr_t * wd_t)
        s.exp_avg.lerp_(grad, one_minus_beta1);          // exp_avg.lerp_(grad, 1 - beta1_t)
        at::pow_out(tmp, grad, 2);                       // grad.square()
        s.exp_avg_sq.lerp_(tmp, one_minus_beta2);        // exp_avg_sq.lerp_(grad.square(), 1 - beta2_t)
        const at::Tensor bias1 = at::rsub(at::pow(beta1_t, step_t), 1);
        const at::Tensor bias2 = at::rsub(at::pow(beta2_t, step_t), 1);
        at::div_out(tmp, s.exp_avg_sq, bias2).sqrt_().add_(eps_t);  // denom = (exp_avg_sq / bias2).sqrt() + eps_t
        const at::Tensor step_size = lr_t / bias1;
        at::div_out(tmp, s.exp_avg, tmp);                // exp_avg / denom
        // The reference passes alpha=-step_size, a 0-D tensor that Python turns into its value.
        p.add_(tmp, (-step_size).item());
    }
}

at::Tensor MuonAdamW::scratch(Slot slot, at::IntArrayRef shape, const at::TensorOptions& options) {
    const int64_t numel = c10::multiply_integers(shape);
    for (auto& [s, t] : scratch_) {
        if (s != slot || t.scalar_type() != options.dtype().toScalarType() || t.device() != options.device()) continue;
        if (t.numel() < numel) t = at::empty({numel}, options);
        return t.narrow(0, 0, numel).view(shape);
    }
    scratch_.emplace_back(slot, at::empty({numel}, options));
    return scratch_.back().second.view(shape);
}

// The reference's _step_muon + muon_step_fused for one stack of same-shape parameters.
void MuonAdamW::step_muon(const ParamGroup& group, MuonStack& stack) {
    const GroupOptions& o = group.options;
    std::vector<at::Tensor> params, grads;
    for (size_t i : stack.members) {
        const auto& [name, p] = group.params[i];
        if (!p.grad().defined()) {
            throw std::runtime_error(where(group, name) + ": no gradient (Muon steps every parameter of a shape " +
                                     "together, as the reference does)");
        }
        params.push_back(p);
        grads.push_back(p.grad());
    }
    const at::Tensor& first = params.front();
    const int64_t k = static_cast<int64_t>(params.size()), rows = stack.rows, cols = stack.cols;
    if (!stack.momentum_buffer.defined()) {
        stack.momentum_buffer = at::zeros({k, rows, cols}, first.options());
        stack.second_momentum_buffer =
            at::zeros(rows >= cols ? at::IntArrayRef{k, rows, 1} : at::IntArrayRef{k, 1, cols}, first.options());
    }
    const int64_t red_dim = rows >= cols ? -1 : -2;

    at::Tensor stacked_grads = scratch(Slot::StackedGrads, {k, rows, cols}, first.options());
    at::Tensor stacked_params = scratch(Slot::StackedParams, {k, rows, cols}, first.options());
    at::stack_out(stacked_grads, grads);
    at::stack_out(stacked_params, params);

    const at::Tensor momentum_t = cpu_scalar(o.momentum);
    const at::Tensor beta2_t = cpu_scalar(o.beta2);
    // The reference scales the lr by shape in Python doubles, then fills the float32 0-D tensor.
    const at::Tensor lr_t =
        cpu_scalar(o.lr * std::pow(std::max(1.0, static_cast<double>(rows) / static_cast<double>(cols)), 0.5));
    const at::Tensor wd_t = cpu_scalar(o.weight_decay);

    // Nesterov momentum.
    const at::Tensor momentum = momentum_t.to(stacked_grads.scalar_type());
    at::Tensor g;
    if (modules::nesterov_momentum_cpu_applies(stack.momentum_buffer, stacked_grads)) {
        modules::nesterov_momentum_cpu(stack.momentum_buffer, stacked_grads, momentum.item<float>());  // the two lerps in one pass
        g = stacked_grads;
    } else {
        stack.momentum_buffer.lerp_(stacked_grads, at::rsub(momentum, 1));
        g = stacked_grads.lerp_(stack.momentum_buffer, momentum);
    }

    // Polar Express: X = g.bfloat16(); X = X / (‖X‖_F * 1.02 + 1e-6); then per coefficient triple
    // tall:  A = X.mT @ X; B = b * A + c * (A @ A); X = a * X + X @ B
    // wide:  A = X @ X.mT; B = b * A + c * (A @ A); X = a * X + B @ X
    const at::ScalarType polar_type = o.precision == MuonPrecision::BFloat16 ? at::kBFloat16 : at::kFloat;
    at::Tensor x = g.to(polar_type);  // for Float32 this is g itself, which is not needed any more
    x.div_(at::linalg_vector_norm(x, 2, at::IntArrayRef{-2, -1}, /*keepdim=*/true)
               .mul_(py_float(1.02))
               .add_(py_float(1e-6)));
    const bool tall = rows > cols;
    at::Tensor A, AA, next;  // buffers reused across the iterations
    for (int s = 0; s < o.ns_steps; ++s) {
        const auto& [a, b, c] = kPolarExpress[static_cast<size_t>(s)];
        if (tall) {
            A = A.defined() ? at::matmul_out(A, x.mT(), x) : at::matmul(x.mT(), x);
        } else {
            A = A.defined() ? at::matmul_out(A, x, x.mT()) : at::matmul(x, x.mT());
        }
        AA = AA.defined() ? at::matmul_out(AA, A, A) : at::matmul(A, A);
        const at::Tensor& B = A.mul_(py_float(b)).add_(AA.mul_(py_float(c)));  // b * A + c * (A @ A)
        if (tall) {
            next = next.defined() ? at::matmul_out(next, x, B) : at::matmul(x, B);
        } else {
            next = next.defined() ? at::matmul_out(next, B, x) : at::matmul(B, x);
        }
        next.add_(x.mul_(py_float(a)));  // a * X + (B @ X), the sum commuted
        std::swap(x, next);
    }
    g = x;

    // NorMuon variance reduction.
    const at::Tensor beta2 = beta2_t.to(g.scalar_type());
    const at::Tensor v_mean = (g.scalar_type() == at::kFloat ? at::square(g) : g.to(at::kFloat).square_())
                                  .mean({red_dim}, /*keepdim=*/true);
    const int64_t red_dim_size = g.size(red_dim);
    const at::Tensor v_norm_sq = v_mean.sum(at::IntArrayRef{-2, -1}, /*keepdim=*/true) * red_dim_size;
    const at::Tensor v_norm = v_norm_sq.sqrt();
    stack.second_momentum_buffer.lerp_(v_mean.to(stack.second_momentum_buffer.scalar_type()), at::rsub(beta2, 1));
    const at::Tensor step_size = stack.second_momentum_buffer.clamp_min(1e-10).rsqrt();
    const at::Tensor scaled_sq_sum = (v_mean * red_dim_size) * step_size.to(at::kFloat).square();
    const at::Tensor v_norm_new = scaled_sq_sum.sum(at::IntArrayRef{-2, -1}, /*keepdim=*/true).sqrt();
    const at::Tensor final_scale = (step_size * (v_norm / v_norm_new.clamp_min(1e-10))).to(g.scalar_type());

    // Cautious weight decay and the update:
    // stacked_params.sub_(lr * g + lr * wd * stacked_params * mask), mask = (g * stacked_params) >= 0.
    const at::Tensor lr = lr_t.to(g.scalar_type());
    const at::Tensor wd = wd_t.to(g.scalar_type());
    if (modules::muon_update_cpu_applies(stacked_params, g, final_scale)) {
        // NorMuon's scale, the mask and the update in one pass.
        modules::muon_update_cpu(stacked_params, g, final_scale, lr.item<float>(), (lr * wd).item<float>());
    } else {
        g.mul_(final_scale);
        at::Tensor t = scratch(Slot::MuonTemp, stacked_params.sizes(), stacked_params.options());
        at::mul_out(t, g, stacked_params);  // g * stacked_params: promoted to the parameters' dtype
        const at::Tensor mask = t.ge(0);
        at::mul_out(t, stacked_params, lr * wd).mul_(mask).add_(g.mul_(lr));
        stacked_params.sub_(t);
    }

    at::_foreach_copy_(params, stacked_params.unbind(0));
}

// ---------------------------------------------------------------------------------------------

std::vector<NamedTensor> MuonAdamW::state() const {
    std::vector<NamedTensor> out;
    for (size_t g = 0; g < groups_.size(); ++g) {
        const ParamGroup& group = groups_[g];
        const GroupState& st = state_[g];
        if (group.options.kind == Kind::AdamW) {
            for (size_t i = 0; i < group.params.size(); ++i) {
                const AdamWState& s = st.adamw[i];
                if (s.step == 0) continue;
                const std::string& name = group.params[i].first;
                out.emplace_back(name + ".exp_avg", s.exp_avg);
                out.emplace_back(name + ".exp_avg_sq", s.exp_avg_sq);
                out.emplace_back(name + ".step", at::scalar_tensor(s.step, at::TensorOptions().dtype(at::kLong)));
            }
        } else {
            for (const MuonStack& stack : st.stacks) {
                if (!stack.momentum_buffer.defined()) continue;
                for (size_t j = 0; j < stack.members.size(); ++j) {
                    const std::string& name = group.params[stack.members[j]].first;
                    const auto row = static_cast<int64_t>(j);
                    out.emplace_back(name + ".momentum_buffer", stack.momentum_buffer[row]);
                    out.emplace_back(name + ".second_momentum_buffer", stack.second_momentum_buffer[row]);
                }
            }
        }
    }
    return out;
}

void MuonAdamW::load_state(const std::vector<NamedTensor>& entries) {
    std::map<std::string, const at::Tensor*> given;
    std::vector<std::string> problems;
    for (const auto& [key, t] : entries) {
        if (!given.emplace(key, &t).second) problems.push_back(key + ": given twice");
    }
    std::set<std::string> used;
    // Looks `key` up, checking its shape; nullptr (and a problem, if present but wrong) otherwise.
    auto take = [&](const std::string& key, at::IntArrayRef shape) -> const at::Tensor* {
        auto it = given.find(key);
        if (it == given.end()) return nullptr;
        used.insert(key);
        if (!it->second->defined() || it->second->sizes() != shape) {
            problems.push_back(key + ": expected shape " + shape_text(shape) + ", got " +
                               (it->second->defined() ? shape_text(it->second->sizes()) : "an undefined tensor"));
            return nullptr;
        }
        return it->second;
    };

    // First pass: check everything and collect what to copy; nothing changes until it all fits.
    struct AdamWLoad { size_t group, index; const at::Tensor *exp_avg, *exp_avg_sq; int64_t step; };
    struct MuonLoad { size_t group, stack; std::vector<const at::Tensor*> momentum, second; };
    std::vector<AdamWLoad> adamw_loads;
    std::vector<MuonLoad> muon_loads;
    for (size_t g = 0; g < groups_.size(); ++g) {
        const ParamGroup& group = groups_[g];
        if (group.options.kind == Kind::AdamW) {
            for (size_t i = 0; i < group.params.size(); ++i) {
                const auto& [name, p] = group.params[i];
                const at::Tensor* m = take(name + ".exp_avg", p.sizes());
                const at::Tensor* v = take(name + ".exp_avg_sq", p.sizes());
                const at::Tensor* s = take(name + ".step", {});
                const int found = (m != nullptr) + (v != nullptr) + (s != nullptr);
                if (found == 0) continue;
                if (found != 3) {
                    problems.push_back(name + ": AdamW state needs .exp_avg, .exp_avg_sq and .step together");
                    continue;
                }
                const int64_t step = s->to(at::kLong).item<int64_t>();
                if (step < 1) {
                    problems.push_back(name + ".step: must be >= 1, got " + std::to_string(step));
                    continue;
                }
                adamw_loads.push_back({g, i, m, v, step});
            }
        } else {
            const auto& stacks = state_[g].stacks;
            for (size_t k = 0; k < stacks.size(); ++k) {
                const MuonStack& stack = stacks[k];
                const std::vector<int64_t> second_shape =
                    stack.rows >= stack.cols ? std::vector<int64_t>{stack.rows, 1} : std::vector<int64_t>{1, stack.cols};
                MuonLoad load{g, k, {}, {}};
                std::vector<std::string> missing;
                for (size_t i : stack.members) {
                    const std::string& name = group.params[i].first;
                    const at::Tensor* m = take(name + ".momentum_buffer", {stack.rows, stack.cols});
                    const at::Tensor* v = take(name + ".second_momentum_buffer", second_shape);
                    if (!m || !v) missing.push_back(name);
                    load.momentum.push_back(m);
                    load.second.push_back(v);
                }
                if (missing.size() == stack.members.size()) continue;
                if (!missing.empty()) {
                    std::string list;
                    for (const auto& n : missing) list += (list.empty() ? "" : ", ") + n;
                    problems.push_back("Muon stack " + shape_text({stack.rows, stack.cols}) + " of group '" +
                                       group.options.name + "': state missing or malformed for " + list +
                                       " (a stack is loaded whole or not at all)");
                    continue;
                }
                muon_loads.push_back(std::move(load));
            }
        }
    }
    for (const auto& [key, t] : given) {
        if (!used.count(key)) problems.push_back(key + ": not a state entry of any parameter of this optimizer");
    }
    if (!problems.empty()) {
        std::string message = "optimizer state does not fit (" + std::to_string(problems.size()) + " problem" +
                              (problems.size() == 1 ? "" : "s") + "):";
        for (const auto& p : problems) message += "\n  " + p;
        throw std::invalid_argument(message);
    }

    // Second pass: replace the state.
    torch::NoGradGuard no_grad;
    for (auto& st : state_) {
        for (auto& s : st.adamw) s = AdamWState{};
        for (auto& stack : st.stacks) stack.momentum_buffer = stack.second_momentum_buffer = at::Tensor();
    }
    for (const AdamWLoad& l : adamw_loads) {
        const at::Tensor& p = groups_[l.group].params[l.index].second;
        AdamWState& s = state_[l.group].adamw[l.index];
        s.exp_avg = at::empty_like(p).copy_(*l.exp_avg);
        s.exp_avg_sq = at::empty_like(p).copy_(*l.exp_avg_sq);
        s.step = l.step;
    }
    for (const MuonLoad& l : muon_loads) {
        MuonStack& stack = state_[l.group].stacks[l.stack];
        const at::Tensor& p = groups_[l.group].params[stack.members.front()].second;
        std::vector<at::Tensor> m, v;
        for (size_t j = 0; j < stack.members.size(); ++j) {
            m.push_back(*l.momentum[j]);
            v.push_back(*l.second[j]);
        }
        stack.momentum_buffer = at::stack(m).to(p.options()).contiguous();
        stack.second_momentum_buffer = at::stack(v).to(p.options()).contiguous();
    }
}

}  // namespace l3lab::optim
