// The columns of /train, shared by the sidecar's JSON lines and the HDF5 view so that both spell them
// the same way. Adding a field to TrainRecord means adding one line here.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <variant>

#include "runner/metrics/metrics.h"

namespace l3lab::metrics::detail {

struct TrainColumn {
    const char* name;
    std::variant<int64_t TrainRecord::*, double TrainRecord::*> member;
};

// File order: the order a reader wants them in (step first).
// clang-format off
inline constexpr TrainColumn kTrainColumns[] = {
    {"step", &TrainRecord::step},
    {"loss", &TrainRecord::loss},
    {"raw_loss", &TrainRecord::raw_loss},
    {"lrm", &TrainRecord::lrm},
    {"dt", &TrainRecord::dt},
    {"tok_per_sec", &TrainRecord::tok_per_sec},
    {"mfu", &TrainRecord::mfu},
    {"tokens", &TrainRecord::tokens},
    {"flops", &TrainRecord::flops},
    {"epoch", &TrainRecord::epoch},
    {"elapsed", &TrainRecord::elapsed},
    {"skipped", &TrainRecord::skipped},
};
// clang-format on

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// JSON has no Inf or NaN (nlohmann writes null, read back as NaN): every non-finite value is stored as
// NaN, in the sidecar and in the view alike.
inline double finite_or_nan(double v) { return std::isfinite(v) ? v : kNaN; }

}  // namespace l3lab::metrics::detail
