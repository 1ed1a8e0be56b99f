// The soft-capped cross-entropy of cpu/kernels.h for one instruction set: CMake compiles this file three
// times, with CPU_CAPABILITY = DEFAULT, AVX2 (-mavx2 -mfma) and AVX512 (-mavx512f/bw/vl/dq -mfma), the
// flags and macros ATen builds its own CPU kernels with, so that at::vec::Vectorized<float> is 8 or 16
// lanes (DEFAULT: plain loops over 8) and its tanh/exp are the SLEEF functions libtorch carries (ATen's
// own vectorised kernels call the same ones). Only at::vec is included: nothing here is an ATen tensor.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "modules/torch/cpu/kernels.h"
#include "modules/torch/cpu/vec_common.h"

namespace l3lab::modules::cpu_kernels::CPU_CAPABILITY {

namespace {

// One row: z = softcap * tanh(x / softcap) into tanh_buf (as tanh), exp(z - max) into exp_buf, then the
// loss and, when asked, the gradient. The buffers hold one row (vocab floats): they stay in cache.
void row(const SoftcapCeArgs& a, int64_t r, float* tanh_buf, float* exp_buf) {
    const float* x = a.logits + r * a.width;
    const int64_t V = a.vocab;
    const int64_t target = a.targets[r];
    float* g = a.grad ? a.grad + r * a.width : nullptr;
    if (target < 0) {  // ignored: loss 0, no gradient
        a.loss[r] = 0;
        if (g) std::fill(g, g + a.width, 0.0f);
        return;
    }
    const Vec inv_cap(1.0f / a.softcap), cap(a.softcap);
    const float minus_inf = -std::numeric_limits<float>::infinity();
    Vec vmax(minus_inf);
    int64_t j = 0;
    for (; j + kLanes <= V; j += kLanes) {
        const Vec t = (Vec::loadu(x + j) * inv_cap).tanh();
        t.store(tanh_buf + j);
        vmax = at::vec::maximum(vmax, t);
    }
    if (j < V) {
        const int64_t n = V - j;
        const Vec t = (Vec::loadu(x + j, n) * inv_cap).tanh();
        t.store(tanh_buf + j, n);
        vmax = at::vec::maximum(vmax, Vec::set(Vec(minus_inf), t, n));
    }
    // tanh is monotone: the largest z is softcap * the largest tanh.
    const float zmax = a.softcap * reduce_max(vmax);
    const Vec vzmax(zmax);
    Vec vsum(0.0f);
    for (j = 0; j + kLanes <= V; j += kLanes) {
        const Vec e = (Vec::loadu(tanh_buf + j) * cap - vzmax).exp();
        e.store(exp_buf + j);
        vsum = vsum + e;
    }
    if (j < V) {
        const int64_t n = V - j;
        const Vec e = (Vec::loadu(tanh_buf + j, n) * cap - vzmax).exp();
        e.store(exp_buf + j, n);
        vsum = vsum + Vec::set(Vec(0.0f), e, n);
    }
    const float sum = reduce_sum(vsum);
    const float lse = zmax + std::log(sum);
    a.loss[r] = lse - a.softcap * tanh_buf[target];
    if (!g) return;
    // d loss / d x_j = (p_j - [j == t]) * (1 - tanh_j^2), p_j = exp(z_j - max) / sum
    const Vec inv_sum(1.0f / sum), one(1.0f);
    for (j = 0; j + kLanes <= V; j += kLanes) {
        const Vec t = Vec::loadu(tanh_buf + j);
        (Vec::loadu(exp_buf + j) * inv_sum * (one - t * t)).store(g + j);
    }
    if (j < V) {
        const int64_t n = V - j;
        const Vec t = Vec::loadu(tanh_buf + j, n);
        (Vec::loadu(exp_buf + j, n) * inv_sum * (one - t * t)).store(g + j, n);
    }
    const float tt = tanh_buf[target];
    g[target] = (exp_buf[target] / sum - 1.0f) * (1.0f - tt * tt);
    std::fill(g + V, g + a.width, 0.0f);
}

}  // namespace

void softcap_ce_rows(const SoftcapCeArgs& a, int64_t begin, int64_t end) {
    std::vector<float> buffers(2 * static_cast<size_t>(a.vocab));
    for (int64_t r = begin; r < end; ++r) row(a, r, buffers.data(), buffers.data() + a.vocab);
}

void scale_rows(float* grad, int64_t width, const float* scale, int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
        float* g = grad + r * width;
        const Vec s(scale[r]);
        int64_t j = 0;
        for (; j + kLanes <= width; j += kLanes) (Vec::loadu(g + j) * s).store(g + j);
        if (j < width) (Vec::loadu(g + j, width - j) * s).store(g + j, width - j);
    }
}

}  // namespace l3lab::modules::cpu_kernels::CPU_CAPABILITY
