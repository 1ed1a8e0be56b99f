#include "modules/torch/l3_segment.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "modules/torch/cuda.h"

namespace l3lab::modules {

namespace {

// Occurrences grouped by token id: order[start[g] .. start[g+1]) are the occurrences of token[g].
struct Grouping {
    std::vector<int64_t> order, start, token;
    std::vector<int64_t> score_offset;  // where group g's [count x rows] scores start in the flat buffer
    int64_t total_scores = 0;
};

Grouping group_by_token(const at::Tensor& ids_cpu, const at::Tensor& bounds_cpu) {
    const int64_t n = ids_cpu.numel();
    const int64_t* ids = ids_cpu.data_ptr<int64_t>();
    const int64_t* bounds = bounds_cpu.data_ptr<int64_t>();
    const int64_t vocab = bounds_cpu.numel() - 1;
    Grouping g;
    g.order.resize(n);
    std::iota(g.order.begin(), g.order.end(), int64_t{0});
    for (int64_t i = 0; i < n; ++i)
        TORCH_CHECK(ids[i] >= 0 && ids[i] < vocab, "L3: token id ", ids[i], " at position ", i,
                    " is outside the allocation's vocabulary of ", vocab);
    std::stable_sort(g.order.begin(), g.order.end(), [&](int64_t a, int64_t b) { return ids[a] < ids[b]; });
    for (int64_t i = 0; i < n; ++i) {
        if (i == 0 || ids[g.order[i]] != ids[g.order[i - 1]]) {
            g.start.push_back(i);
            g.token.push_back(ids[g.order[i]]);
        }
    }
    g.start.push_back(n);
    const size_t groups = g.token.size();
    g.score_offset.resize(groups + 1);
    for (size_t k = 0; k < groups; ++k) {
        const int64_t rows = bounds[g.token[k] + 1] - bounds[g.token[k]];
        TORCH_CHECK(rows >= 0, "L3: bounds are not increasing at token ", g.token[k]);
        g.score_offset[k] = g.total_scores;
        g.total_scores += rows * (g.start[k + 1] - g.start[k]);
    }
    g.score_offset[groups] = g.total_scores;
    return g;
}

// Runs fn(k) for every group k, balancing by work (occurrences x rows): groups heavier than a thread's
// fair share run one after another with multi-threaded GEMMs; the rest run in parallel chunks of
// similar work (inside a parallel region ATen's GEMMs are single-threaded).
template <typename Fn>
void for_each_group(const Grouping& g, int64_t width, Fn fn) {
    const int64_t groups = static_cast<int64_t>(g.token.size());
    const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
    const double total = static_cast<double>(g.total_scores) * static_cast<double>(width) + 1.0;
    const double fair_share = total / static_cast<double>(threads);
    std::vector<int64_t> small;
    for (int64_t k = 0; k < groups; ++k) {
        const double work = static_cast<double>(g.score_offset[k + 1] - g.score_offset[k]) * static_cast<double>(width);
        if (threads > 1 && work > fair_share) fn(k);
        else small.push_back(k);
    }
    if (small.empty()) return;
    // Chunk boundaries at equal cumulative work, a few chunks per thread.
    const int64_t chunks = std::min<int64_t>(static_cast<int64_t>(small.size()), threads * 4);
    std::vector<int64_t> bounds_of_chunk{0};
    double acc = 0, small_total = 0;
    for (int64_t k : small) small_total += static_cast<double>(g.score_offset[k + 1] - g.score_offset[k]) + 1.0;
    for (size_t i = 0; i < small.size(); ++i) {
        acc += static_cast<double>(g.score_offset[small[i] + 1] - g.score_offset[small[i]]) + 1.0;
        if (acc >= small_total * static_cast<double>(bounds_of_chunk.size()) / static_cast<double>(chunks) &&
            static_cast<int64_t>(bounds_of_chunk.size()) < chunks)
            bounds_of_chunk.push_back(static_cast<int64_t>(i) + 1);
    }
    if (bounds_of_chunk.back() != static_cast<int64_t>(small.size())) bounds_of_chunk.push_back(static_cast<int64_t>(small.size()));
    at::parallel_for(0, static_cast<int64_t>(bounds_of_chunk.size()) - 1, 1, [&](int64_t begin, int64_t end) {
        for (int64_t c = begin; c < end; ++c)
            for (int64_t i = bounds_of_chunk[c]; i < bounds_of_chunk[c + 1]; ++i) fn(small[i]);
    });
}

// The occurrences of group k as an index tensor (positions into q / out).
at::Tensor occurrences(const Grouping& g, const at::Tensor& order, int64_t k) {
    return order.narrow(0, g.start[k], g.start[k + 1] - g.start[k]);
}

// Tokens with few rows (most of the vocabulary) are cheaper in plain loops than as GEMMs: a handful of
// ATen calls per token would cost more than the arithmetic.
constexpr int64_t kLoopRows = 16;

template <typename T>
T dot(const T* a, const T* b, int64_t n) {
    T s = 0;
    for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
    return s;
}

// Pointers into the contiguous inputs and outputs of one call.
template <typename T>
struct Views {
    const T *q, *keys, *values;
    T* probs;
    int64_t C, D;
};

// The loop version of one group's forward: per occurrence, scores, softmax, weighted sum of values.
template <typename T>
void forward_loops(const Grouping& g, int64_t k, int64_t row0, int64_t rows, const Views<T>& v, T* out) {
    T* p = v.probs + g.score_offset[k];
    for (int64_t o = g.start[k]; o < g.start[k + 1]; ++o, p += rows) {
        const int64_t n = g.order[o];
        const T* qn = v.q + n * v.C;
        T* an = out + n * v.D;
        T max_score = -std::numeric_limits<T>::infinity();
        for (int64_t j = 0; j < rows; ++j) max_score = std::max(max_score, p[j] = dot(v.keys + (row0 + j) * v.C, qn, v.C));
        T sum = 0;
        for (int64_t j = 0; j < rows; ++j) sum += (p[j] = std::exp(p[j] - max_score));
        for (int64_t j = 0; j < rows; ++j) {
            p[j] /= sum;
            const T* value = v.values + (row0 + j) * v.D;
            for (int64_t d = 0; d < v.D; ++d) an[d] += p[j] * value[d];
        }
    }
}

// The loop version of one group's backward (same formulas as backward_groups).
template <typename T>
void backward_loops(const Grouping& g, int64_t k, int64_t row0, int64_t rows, const Views<T>& v, const T* grad_out,
                    T* grad_q, T* grad_keys, T* grad_values) {
    T d_p[kLoopRows];
    const T* p = v.probs + g.score_offset[k];
    for (int64_t o = g.start[k]; o < g.start[k + 1]; ++o, p += rows) {
        const int64_t n = g.order[o];
        const T *go = grad_out + n * v.D, *qn = v.q + n * v.C;
        T* gq = grad_q + n * v.C;
        T weighted = 0;
        for (int64_t j = 0; j < rows; ++j) weighted += p[j] * (d_p[j] = dot(go, v.values + (row0 + j) * v.D, v.D));
        for (int64_t j = 0; j < rows; ++j) {
            const T d_s = p[j] * (d_p[j] - weighted);
            const T* key = v.keys + (row0 + j) * v.C;
            T* gk = grad_keys + (row0 + j) * v.C;
            for (int64_t c = 0; c < v.C; ++c) gq[c] += d_s * key[c], gk[c] += d_s * qn[c];
            T* gv = grad_values + (row0 + j) * v.D;
            for (int64_t d = 0; d < v.D; ++d) gv[d] += p[j] * go[d];
        }
    }
}

// Group by group: S = Q_g K_gᵀ, P = softmax(S), A_g = P V_g. probs keeps every P for backward.
void forward_groups(const Grouping& g, const at::Tensor& order, const at::Tensor& bounds_t, const at::Tensor& q,
                    const at::Tensor& keys, const at::Tensor& values, at::Tensor& probs, at::Tensor& out) {
    const int64_t* bounds = bounds_t.data_ptr<int64_t>();
    for_each_group(g, q.size(1) + values.size(1), [&](int64_t k) {
        const int64_t row0 = bounds[g.token[k]], rows = bounds[g.token[k] + 1] - row0;
        if (rows == 0) return;
        if (rows <= kLoopRows) {
            AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "l3_forward_loops", [&] {
                Views<scalar_t> v{q.data_ptr<scalar_t>(), keys.data_ptr<scalar_t>(), values.data_ptr<scalar_t>(),
                                  probs.data_ptr<scalar_t>(), q.size(1), values.size(1)};
                forward_loops<scalar_t>(g, k, row0, rows, v, out.data_ptr<scalar_t>());
            });
            return;
        }
        at::Tensor occ = occurrences(g, order, k);
        at::Tensor scores = at::mm(q.index_select(0, occ), keys.narrow(0, row0, rows).t());
        at::Tensor p = at::softmax(scores, -1);
        probs.narrow(0, g.score_offset[k], p.numel()).copy_(p.view(-1));
        out.index_copy_(0, occ, at::mm(p, values.narrow(0, row0, rows)));
    });
}

// dP = dA_g V_gᵀ; dS = P ⊙ (dP − rowsum(P ⊙ dP)); dQ_g = dS K_g; dK_g += dSᵀ Q_g; dV_g += Pᵀ dA_g.
// Each token's rows belong to one group and each occurrence to one query, so groups never collide;
// grad_keys and grad_values may be the same tensor (tied table).
void backward_groups(const Grouping& g, const at::Tensor& order, const at::Tensor& bounds_t, const at::Tensor& q,
                     const at::Tensor& keys, const at::Tensor& values, const at::Tensor& probs,
                     const at::Tensor& grad_out, at::Tensor& grad_q, at::Tensor& grad_keys, at::Tensor& grad_values) {
    const int64_t* bounds = bounds_t.data_ptr<int64_t>();
    for_each_group(g, 2 * (q.size(1) + values.size(1)), [&](int64_t k) {
        const int64_t row0 = bounds[g.token[k]], rows = bounds[g.token[k] + 1] - row0;
        if (rows == 0) return;
        if (rows <= kLoopRows) {
            AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "l3_backward_loops", [&] {
                Views<scalar_t> v{q.data_ptr<scalar_t>(), keys.data_ptr<scalar_t>(), values.data_ptr<scalar_t>(),
                                  const_cast<scalar_t*>(probs.data_ptr<scalar_t>()), q.size(1), values.size(1)};
                backward_loops<scalar_t>(g, k, row0, rows, v, grad_out.data_ptr<scalar_t>(), grad_q.data_ptr<scalar_t>(),
                                         grad_keys.data_ptr<scalar_t>(), grad_values.data_ptr<scalar_t>());
            });
            return;
        }
        at::Tensor occ = occurrences(g, order, k);
        const int64_t count = occ.size(0);
        at::Tensor p = probs.narrow(0, g.score_offset[k], count * rows).view({count, rows});
        at::Tensor q_g = q.index_select(0, occ), d_a = grad_out.index_select(0, occ);
        at::Tensor k_g = keys.narrow(0, row0, rows), v_g = values.narrow(0, row0, rows);
        at::Tensor d_p = at::mm(d_a, v_g.t());
        at::Tensor d_s = p * (d_p - (p * d_p).sum(-1, /*keepdim=*/true));
        grad_q.index_copy_(0, occ, at::mm(d_s, k_g));
        grad_keys.narrow(0, row0, rows).add_(at::mm(d_s.t(), q_g));
        grad_values.narrow(0, row0, rows).add_(at::mm(p.t(), d_a));
    });
}

void check_inputs(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values, const at::Tensor& ids,
                  const at::Tensor& bounds) {
    check_segment_shapes(q, keys, values, ids, bounds);
    TORCH_CHECK(q.device().is_cpu(), "L3: the segment kernel runs on the CPU here; got ", q.device());
}

class SegmentAttention : public torch::autograd::Function<SegmentAttention> {
public:
    static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q_in, const at::Tensor& keys_in,
                              const at::Tensor& values_in, const at::Tensor& ids_in, const at::Tensor& bounds_in) {
        check_inputs(q_in, keys_in, values_in, ids_in, bounds_in);
        const bool tied = keys_in.is_same(values_in);
        at::Tensor q = q_in.contiguous(), keys = keys_in.to(q.scalar_type()).contiguous();
        at::Tensor values = tied ? keys : values_in.to(q.scalar_type()).contiguous();
        at::Tensor ids = ids_in.contiguous(), bounds = bounds_in.contiguous();
        TORCH_CHECK(bounds[-1].item<int64_t>() <= keys.size(0), "L3: bounds reach row ", bounds[-1].item<int64_t>(),
                    " but the table has ", keys.size(0), " rows");
        auto grouping = std::make_unique<Grouping>(group_by_token(ids, bounds));
        at::Tensor probs = at::empty({grouping->total_scores}, q.options());
        at::Tensor out = at::zeros({q.size(0), values.size(1)}, q.options());  // tokens without rows stay 0
        at::Tensor order = at::tensor(grouping->order, at::kLong);
        forward_groups(*grouping, order, bounds, q, keys, values, probs, out);
        ctx->save_for_backward({q, keys, values, bounds, probs});
        ctx->saved_data["tied"] = tied;
        ctx->saved_data["keys_dtype"] = static_cast<int64_t>(keys_in.scalar_type());
        ctx->saved_data["values_dtype"] = static_cast<int64_t>(values_in.scalar_type());
        // The grouping is plain C++ state; it travels to backward as int64 tensors.
        ctx->saved_data["order"] = order;
        ctx->saved_data["start"] = at::tensor(grouping->start, at::kLong);
        ctx->saved_data["token"] = at::tensor(grouping->token, at::kLong);
        ctx->saved_data["score_offset"] = at::tensor(grouping->score_offset, at::kLong);
        return out;
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grad_outputs) {
        auto saved = ctx->get_saved_variables();
        const at::Tensor &q = saved[0], &keys = saved[1], &values = saved[2], &bounds = saved[3], &probs = saved[4];
        const bool tied = ctx->saved_data["tied"].toBool();
        Grouping g;
        auto load = [&](const char* key, std::vector<int64_t>& into) {
            at::Tensor t = ctx->saved_data[key].toTensor();
            into.assign(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
        };
        load("order", g.order);
        load("start", g.start);
        load("token", g.token);
        load("score_offset", g.score_offset);
        at::Tensor grad_out = grad_outputs[0].to(q.scalar_type()).contiguous();
        at::Tensor grad_q = at::zeros_like(q), grad_keys = at::zeros_like(keys);
        at::Tensor grad_values = tied ? grad_keys : at::zeros_like(values);
        at::Tensor order = ctx->saved_data["order"].toTensor();
        backward_groups(g, order, bounds, q, keys, values, probs, grad_out, grad_q, grad_keys, grad_values);
        const auto keys_dtype = static_cast<at::ScalarType>(ctx->saved_data["keys_dtype"].toInt());
        const auto values_dtype = static_cast<at::ScalarType>(ctx->saved_data["values_dtype"].toInt());
        if (tied) return {grad_q, grad_keys.to(keys_dtype), at::Tensor(), at::Tensor(), at::Tensor()};
        return {grad_q, grad_keys.to(keys_dtype), grad_values.to(values_dtype), at::Tensor(), at::Tensor()};
    }
};

}  // namespace

void check_segment_shapes(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                          const at::Tensor& ids, const at::Tensor& bounds) {
    TORCH_CHECK(q.dim() == 2 && keys.dim() == 2 && values.dim() == 2, "L3: q, keys and values must be 2-D");
    TORCH_CHECK(keys.size(1) == q.size(1), "L3: keys have width ", keys.size(1), " but queries ", q.size(1));
    TORCH_CHECK(keys.size(0) == values.size(0), "L3: keys and values have different row counts");
    TORCH_CHECK(ids.dim() == 1 && ids.size(0) == q.size(0), "L3: need one token id per query");
    TORCH_CHECK(ids.scalar_type() == at::kLong && bounds.scalar_type() == at::kLong, "L3: ids and bounds must be int64");
    TORCH_CHECK(bounds.dim() == 1 && bounds.numel() >= 2, "L3: bounds must be [V+1]");
}

at::Tensor l3_segment_attention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                                const at::Tensor& ids, const at::Tensor& bounds, int64_t max_rows) {
    if (q.is_cuda()) return l3_segment_attention_cuda(q, keys, values, ids, bounds, max_rows);
    return SegmentAttention::apply(q, keys, values, ids, bounds);
}

at::Tensor l3_padded_attention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                               const at::Tensor& ids, const at::Tensor& bounds) {
    at::Tensor starts = bounds.index_select(0, ids), lengths = bounds.index_select(0, ids + 1) - starts;
    const int64_t k_max = lengths.max().item<int64_t>();
    at::Tensor offsets = at::arange(k_max, ids.options()).unsqueeze(0);
    at::Tensor index = (starts.unsqueeze(1) + offsets).clamp(0, keys.size(0) - 1);
    at::Tensor mask = offsets < lengths.unsqueeze(1);
    at::Tensor k = keys.index_select(0, index.flatten()).view({ids.size(0), k_max, keys.size(1)});
    // Tied tables are gathered once, as the reference does (kv = kv_weight[indices]; k_emb = v_emb = kv).
    at::Tensor v = values.is_same(keys)
                       ? k
                       : values.index_select(0, index.flatten()).view({ids.size(0), k_max, values.size(1)});
    at::Tensor scores = at::bmm(k.to(q.scalar_type()), q.unsqueeze(2)).squeeze(2).masked_fill(~mask, -INFINITY);
    at::Tensor weights = at::softmax(scores, -1).masked_fill(~mask, 0.0);
    return at::bmm(weights.unsqueeze(1), v.to(q.scalar_type())).squeeze(1);
}

}  // namespace l3lab::modules
