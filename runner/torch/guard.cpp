#include "runner/torch/guard.h"

#include <ATen/ATen.h>

#include <cmath>
#include <sstream>
#include <stdexcept>

#include "runner/util/fault.h"

namespace l3lab::train {

StepProbe probe_step(const at::Tensor& loss, const std::vector<optim::ParamGroup>& groups) {
    std::vector<at::Tensor> grads;
    for (const auto& group : groups)
        for (const auto& named : group.params)
            if (named.second.grad().defined()) grads.push_back(named.second.grad());
    std::vector<at::Tensor> parts{loss.detach().reshape({1}).to(at::kFloat)};
    if (!grads.empty()) {
        // max |g| of each tensor, fused on CUDA: NaN propagates through max and inf stays inf, and unlike a
        // 2-norm it cannot overflow from finite values.
        std::vector<at::Tensor> largest = at::_foreach_norm(grads, INFINITY, at::kFloat);
        parts.push_back(at::stack(largest).max().reshape({1}));
    }
    const at::Tensor host = at::cat(parts).to(at::kCPU);  // the one host sync of a step
    const float* v = host.data_ptr<float>();
    StepProbe probe;
    probe.loss = static_cast<double>(v[0]);
    probe.finite = std::isfinite(v[0]) && (host.numel() < 2 || std::isfinite(v[1]));
    return probe;
}

std::string describe_nonfinite(double loss, const std::vector<optim::ParamGroup>& groups) {
    std::ostringstream out;
    out << "training loss " << loss;
    bool any = false;
    for (const auto& group : groups) {
        std::vector<std::string> bad;
        for (const auto& [name, param] : group.params) {
            const at::Tensor g = param.grad();
            if (!g.defined()) continue;
            const int64_t nan = at::isnan(g).sum().item<int64_t>();
            const int64_t nonfinite = at::logical_not(at::isfinite(g)).sum().item<int64_t>();
            if (nonfinite == 0) continue;
            std::ostringstream item;
            item << name << " (" << nonfinite << " of " << g.numel() << " values: " << nan << " NaN, " << nonfinite - nan
                 << " inf)";
            bad.push_back(item.str());
        }
        if (bad.empty()) continue;
        out << (any ? "; " : "; non-finite gradients in ") << "group '" << group.options.name << "' ("
            << optim::kind_name(group.options.kind) << "): ";
        const size_t shown = std::min<size_t>(bad.size(), 4);
        for (size_t i = 0; i < shown; ++i) out << (i ? ", " : "") << bad[i];
        if (bad.size() > shown) out << " and " << bad.size() - shown << " more parameters";
        any = true;
    }
    if (!any) out << "; every gradient is finite on this process";
    return out.str();
}

at::Tensor inject_loss_fault(const at::Tensor& loss, long long step) {
    if (fault::at("loss:nan", step)) return loss * NAN;
    if (fault::at("loss:inf", step)) return loss * INFINITY;
    return loss;
}

void inject_grad_fault(std::vector<optim::ParamGroup>& groups, long long step) {
    for (const char* kind : {"grad:nan", "grad:inf"}) {
        auto name = fault::at(kind, step);
        if (!name || groups.empty()) continue;
        at::Tensor grad;
        if (name->empty() && !groups.back().params.empty()) grad = groups.back().params.front().second.grad();
        for (const auto& group : groups)
            for (const auto& [n, p] : group.params)
                if (n == *name) grad = p.grad();
        if (!grad.defined())
            throw std::runtime_error(std::string("L3LAB_FAULT ") + kind + ": no parameter with a gradient named '" + *name + "'");
        grad.view({-1}).select(0, 0).fill_(std::string(kind) == "grad:nan" ? NAN : INFINITY);
    }
}

}  // namespace l3lab::train
