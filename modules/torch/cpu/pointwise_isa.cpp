// RMSNorm, relu^2, rotary embeddings, the residual mixing, AdamW and Muon's elementwise tails of cpu/kernels.h for one instruction set (compiled once per
// CPU_CAPABILITY, as cpu/softcap_ce_isa.cpp): one pass each way instead of ATen's chains of elementwise
// kernels (RMSNorm: pow, mean, add, rsqrt, mul forward and about eight backward), float32 arithmetic.
#include <algorithm>
#include <cmath>

#include "modules/torch/cpu/kernels.h"
#include "modules/torch/cpu/vec_common.h"

namespace l3lab::modules::cpu_kernels::CPU_CAPABILITY {

namespace {

// sum over j < n of f(j) for a vector expression f of the loads at offset j (a tail load is zero-padded,
// and every f here maps zeros to zero).
template <typename F>
float sum_over(int64_t n, const F& f) {
    Vec acc(0.0f);
    int64_t j = 0;
    for (; j + kLanes <= n; j += kLanes) acc = acc + f(j, kLanes);
    if (j < n) acc = acc + f(j, n - j);
    return reduce_sum(acc);
}

// out[j] = f(j) for j < n, in vectors.
template <typename F>
void write_over(float* out, int64_t n, const F& f) {
    int64_t j = 0;
    for (; j + kLanes <= n; j += kLanes) f(j, kLanes).store(out + j);
    if (j < n) f(j, n - j).store(out + j, n - j);
}

}  // namespace

void rms_norm_rows(const float* x, float* y, float* rstd, int64_t dim, float eps, int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
        const float* xr = x + r * dim;
        const float ss = sum_over(dim, [&](int64_t j, int64_t n) {
            const Vec v = load(xr + j, n);
            return v * v;
        });
        const float s = 1.0f / std::sqrt(ss / static_cast<float>(dim) + eps);
        rstd[r] = s;
        const Vec vs(s);
        write_over(y + r * dim, dim, [&](int64_t j, int64_t n) { return load(xr + j, n) * vs; });
    }
}

void rms_norm_backward_rows(const float* x, const float* dy, const float* rstd, float* dx, int64_t dim,
                            int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
        const float *xr = x + r * dim, *dyr = dy + r * dim;
        const float dot = sum_over(dim, [&](int64_t j, int64_t n) { return load(xr + j, n) * load(dyr + j, n); });
        const float s = rstd[r];
        const Vec vs(s), vc(s * s * s * dot / static_cast<float>(dim));
        write_over(dx + r * dim, dim, [&](int64_t j, int64_t n) {
            return vs * load(dyr + j, n) - vc * load(xr + j, n);
        });
    }
}

void relu_square(const float* x, float* y, int64_t begin, int64_t end) {
    const Vec zero(0.0f);
    write_over(y + begin, end - begin, [&](int64_t j, int64_t n) {
        const Vec v = at::vec::maximum(load(x + begin + j, n), zero);
        return v * v;
    });
}

void relu_square_backward(const float* x, const float* dy, float* dx, int64_t begin, int64_t end) {
    const Vec zero(0.0f), two(2.0f);
    write_over(dx + begin, end - begin, [&](int64_t j, int64_t n) {
        return two * at::vec::maximum(load(x + begin + j, n), zero) * load(dy + begin + j, n);
    });
}

void rotary_rows(const float* x, const float* cos, const float* sin, float* y, int64_t T, int64_t H, int64_t D,
                 bool inverse, int64_t begin, int64_t end) {
    const int64_t half = D / 2;
    for (int64_t r = begin; r < end; ++r) {
        const int64_t t = (r / H) % T;
        const float *x1 = x + r * D, *x2 = x1 + half, *c = cos + t * half, *s = sin + t * half;
        float *y1 = y + r * D, *y2 = y1 + half;
        int64_t j = 0;
        for (; j < half; j += kLanes) {
            const int64_t n = std::min<int64_t>(kLanes, half - j);
            const Vec a = load(x1 + j, n), b = load(x2 + j, n), vc = load(c + j, n);
            const Vec vs = inverse ? Vec(0.0f) - load(s + j, n) : load(s + j, n);
            (a * vc + b * vs).store(y1 + j, n);
            (b * vc - a * vs).store(y2 + j, n);
        }
    }
}

void adamw_step(const AdamWArgs& a, int64_t begin, int64_t end) {
    // The reference's eager step op by op, rounded where it rounds: p * decay; lerp as ATen's vectorised
    // lerp (fmadd(coeff, end - start, base)); g * g; v / bias2, sqrt, + eps; m / denom; and p's add with
    // alpha = -step_size as ATen's vectorised add (fmadd(b, alpha, a)). The square root is the IEEE one;
    // ATen's eager sqrt is MKL VML's, which differs in the last bit for a few elements. Whole vectors only: the caller
    // (adamw_step_cpu_applies) hands over only ranges that ATen, too, runs in whole vectors.
    const Vec decay(a.decay), bias2(a.bias2), eps(a.eps), minus_step(-a.step_size);
    int64_t j = begin;
    for (; j + kLanes <= end; j += kLanes) {
        const Vec g = Vec::loadu(a.grad + j);
        const Vec m = lerp(Vec::loadu(a.exp_avg + j), g, a.one_minus_beta1);
        const Vec v = lerp(Vec::loadu(a.exp_avg_sq + j), g * g, a.one_minus_beta2);
        const Vec denom = (v / bias2).sqrt() + eps;
        at::vec::fmadd(m / denom, minus_step, Vec::loadu(a.p + j) * decay).store(a.p + j);
        m.store(a.exp_avg + j);
        v.store(a.exp_avg_sq + j);
    }
}

void residual_mix(const float* x, const float* x0, float a, float b, float* y, int64_t begin, int64_t end) {
    const Vec va(a), vb(b);
    write_over(y + begin, end - begin, [&](int64_t j, int64_t n) {
        return va * load(x + begin + j, n) + vb * load(x0 + begin + j, n);
    });
}

void residual_mix_backward(const float* dy, const float* x, const float* x0, float a, float b, float* dx,
                           float* dx0, float* sums, int64_t begin, int64_t end) {
    const Vec va(a), vb(b);
    Vec sum_x(0.0f), sum_x0(0.0f);
    for (int64_t j = begin; j < end; j += kLanes) {
        const int64_t n = std::min<int64_t>(kLanes, end - j);
        const Vec g = load(dy + j, n);
        (va * g).store(dx + j, n);
        (vb * g).store(dx0 + j, n);
        sum_x = sum_x + g * load(x + j, n);  // zero-padded tails add nothing
        sum_x0 = sum_x0 + g * load(x0 + j, n);
    }
    sums[0] = reduce_sum(sum_x);
    sums[1] = reduce_sum(sum_x0);
}

void nesterov_momentum(float* buf, float* g, float momentum, int64_t begin, int64_t end) {
    const float one_minus = 1.0f - momentum;  // at::rsub(momentum, 1) in float32
    for (int64_t j = begin; j + kLanes <= end; j += kLanes) {
        const Vec grad = Vec::loadu(g + j);
        const Vec b = lerp(Vec::loadu(buf + j), grad, one_minus);
        b.store(buf + j);
        lerp(grad, b, momentum).store(g + j);
    }
}

void muon_update_rows(const MuonUpdateArgs& a, int64_t begin, int64_t end) {
    const Vec lr(a.lr), lr_wd(a.lr_wd), zero(0.0f), one(1.0f);
    for (int64_t r = begin; r < end; ++r) {
        float* p = a.p + r * a.cols;
        const float* g = a.g + r * a.cols;
        const float* col_scale = a.scale + (r / a.rows) * a.cols;  // this member's [cols] when per column
        for (int64_t j = 0; j < a.cols; j += kLanes) {
            const int64_t n = std::min<int64_t>(kLanes, a.cols - j);
            const Vec s = a.scale_per_row ? Vec(a.scale[r]) : load(col_scale + j, n);
            const Vec gs = load(g + j, n) * s;                                 // g.mul_(final_scale)
            const Vec pv = load(p + j, n);
            const Vec mask = Vec::blendv(zero, one, (gs * pv) >= zero);         // (g * p >= 0) as 1.0 / 0.0
            const Vec t = pv * lr_wd * mask + gs * lr;                          // p * (lr * wd) * mask + g * lr
            (pv - t).store(p + j, n);
        }
    }
}

}  // namespace l3lab::modules::cpu_kernels::CPU_CAPABILITY
