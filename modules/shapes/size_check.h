// Whether a model's counts fit the 64-bit integers describe() and the plan count them in.
#pragma once

#include <string>

#include "modules/shapes/gpt_options.h"

namespace l3lab::modules {

// Counts at or above this (2^62) are refused: by size_problem() and by the plan's arithmetic.
inline constexpr double kMaxCount = 4611686018427387904.0;

// Non-empty when the parameter count or the FLOPs per token (estimated in long double, `auto` L3
// tables included) reach kMaxCount: no such model can be built, and describe() would overflow
// counting it. Check this before describe().
std::string size_problem(const GPTOptions& options);

}  // namespace l3lab::modules
