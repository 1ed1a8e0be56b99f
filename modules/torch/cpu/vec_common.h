// Helpers the per-instruction-set kernel files (cpu/*_isa.cpp) share; included only there, inside their
// CPU_CAPABILITY namespace, so each instruction set gets its own copy.
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cmath>

namespace l3lab::modules::cpu_kernels::CPU_CAPABILITY {
namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kLanes = Vec::size();

inline float reduce_sum(const Vec& v) {
    return at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, v);
}
inline float reduce_max(const Vec& v) {
    return at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, v);
}

// ATen's vectorised lerp (LerpKernel.cpp's lerp_vec): start + w (end - start) for |w| < 0.5, else
// end + (w - 1)(end - start), each as one fused multiply-add. Its scalar tail rounds otherwise, so the
// kernels that use this run whole vectors only.
inline Vec lerp(const Vec& start, const Vec& end, float w) {
    return std::abs(w) < 0.5f ? at::vec::fmadd(Vec(w), end - start, start) : at::vec::fmadd(Vec(w - 1.0f), end - start, end);
}

// count floats from p: a whole vector, or a zero-padded tail.
inline Vec load(const float* p, int64_t count) { return count == kLanes ? Vec::loadu(p) : Vec::loadu(p, count); }

}  // namespace
}  // namespace l3lab::modules::cpu_kernels::CPU_CAPABILITY
