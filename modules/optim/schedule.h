// The training schedules of nanochat's scripts/base_train.py as pure functions (no torch), so the
// runner can plan and log them without the model. Each is the reference formula, operation for
// operation in double precision, so the values are bit-for-bit the reference's.
#pragma once

#include <cstdint>

namespace l3lab::optim {

// base_train's get_lr_multiplier(step): linear warmup over round(warmup_ratio * num_iterations)
// steps ((step + 1) / warmup), then 1.0 up to and including step num_iterations - warmdown, then a
// linear warmdown over round(warmdown_ratio * num_iterations) steps towards final_lr_frac
// (progress = (num_iterations - step) / warmdown). round() is Python's: half to even.
// Defined for 0 <= step <= num_iterations, num_iterations >= 1 (std::invalid_argument otherwise).
double lr_multiplier(int64_t step, int64_t num_iterations, double warmup_ratio, double warmdown_ratio,
                     double final_lr_frac);

// base_train's get_muon_momentum(step): (1 - frac) * start + frac * end, frac = min(step / warmup_steps, 1)
// (0.85 -> 0.95 over 300 steps in the reference; warmup_steps 0 means `end` from the start).
double muon_momentum(int64_t step, double start = 0.85, double end = 0.95, int64_t warmup_steps = 300);

// base_train's get_weight_decay(step): weight_decay_scaled * (1 - step / num_iterations), the Muon
// groups' cautious weight decay falling linearly to zero at the end of training.
double weight_decay_at(int64_t step, int64_t num_iterations, double weight_decay_scaled);

}  // namespace l3lab::optim
