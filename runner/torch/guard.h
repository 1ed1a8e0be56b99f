// The numerical guard of a training step (docs/reliability.md). Before the optimizer applies a step, one
// transfer to the host fetches the loss together with the largest |gradient| over every parameter: a NaN
// or an infinity in either means the step is not applied. That transfer is the step's one host sync (the
// logged loss comes with it), and it reads values without changing them, so a run without a fault is
// bit-identical to one without the guard.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "modules/optim/muon_adamw.h"

namespace l3lab::train {

struct StepProbe {
    double loss = 0;     // the last micro-batch's loss, as the log reports it
    bool finite = true;  // the loss and every gradient are finite
};

StepProbe probe_step(const at::Tensor& loss, const std::vector<optim::ParamGroup>& groups);

// After a non-finite probe: the loss and, per parameter group, the parameters whose gradients hold
// non-finite values ("group 'matrices' (muon): transformer.h.0.attn.c_q.weight 16384 of 16384 NaN").
// Reads every gradient: only for the error path.
std::string describe_nonfinite(double loss, const std::vector<optim::ParamGroup>& groups);

// Test hooks (L3LAB_FAULT, runner/util/fault.h), used by tests/test_reliability.cpp:
//   loss:nan@K, loss:inf@K        the loss of step K (every micro-batch) is multiplied by NaN / +inf, so
//                                 its gradients follow;
//   grad:nan@K=NAME, grad:inf@K=NAME
//                                 after step K's backward, the gradient of parameter NAME (default: the
//                                 first parameter of the last group) gets a NaN / +inf in its first element.
at::Tensor inject_loss_fault(const at::Tensor& loss, long long step);
void inject_grad_fault(std::vector<optim::ParamGroup>& groups, long long step);

}  // namespace l3lab::train
