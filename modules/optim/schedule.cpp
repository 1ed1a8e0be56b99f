#include "modules/optim/schedule.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace l3lab::optim {

// Python's round() on a float: half to even, which std::nearbyint gives in the default rounding mode.
static int64_t python_round(double x) { return static_cast<int64_t>(std::nearbyint(x)); }

double lr_multiplier(int64_t step, int64_t num_iterations, double warmup_ratio, double warmdown_ratio,
                     double final_lr_frac) {
    if (num_iterations < 1 || step < 0 || step > num_iterations) {
        throw std::invalid_argument("lr_multiplier: step " + std::to_string(step) + " outside [0, num_iterations = " +
                                    std::to_string(num_iterations) + "] (num_iterations must be >= 1)");
    }
    const int64_t warmup_iters = python_round(warmup_ratio * static_cast<double>(num_iterations));
    const int64_t warmdown_iters = python_round(warmdown_ratio * static_cast<double>(num_iterations));
    if (step < warmup_iters) return static_cast<double>(step + 1) / static_cast<double>(warmup_iters);
    if (step <= num_iterations - warmdown_iters) return 1.0;
    const double progress = static_cast<double>(num_iterations - step) / static_cast<double>(warmdown_iters);
    return progress * 1.0 + (1 - progress) * final_lr_frac;
}

double muon_momentum(int64_t step, double start, double end, int64_t warmup_steps) {
    const double frac =
        warmup_steps <= 0 ? 1.0 : std::min(static_cast<double>(step) / static_cast<double>(warmup_steps), 1.0);
    return (1 - frac) * start + frac * end;
}

double weight_decay_at(int64_t step, int64_t num_iterations, double weight_decay_scaled) {
    if (num_iterations < 1) {
        throw std::invalid_argument("weight_decay_at: num_iterations must be >= 1, got " +
                                    std::to_string(num_iterations));
    }
    return weight_decay_scaled * (1 - static_cast<double>(step) / static_cast<double>(num_iterations));
}

}  // namespace l3lab::optim
