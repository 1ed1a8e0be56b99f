#include "modules/torch/l3_segment.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

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

template <typename T>
inline T dot(const T* a, const T* b, int64_t n) {
    T s = 0;
    for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
    return s;
}

// probs [total_scores] gets each occurrence's softmax over its token's rows; out [N, D] the aggregate.
template <typename T>
void forward_kernel(const Grouping& g, const T* q, const T* keys, const T* values, const int64_t* bounds, int64_t C,
                    int64_t D, T* probs, T* out) {
    at::parallel_for(0, static_cast<int64_t>(g.token.size()), 1, [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
            const int64_t row0 = bounds[g.token[k]], rows = bounds[g.token[k] + 1] - row0;
            T* p = probs + g.score_offset[k];
            for (int64_t o = g.start[k]; o < g.start[k + 1]; ++o, p += rows) {
                const int64_t n = g.order[o];
                const T* qn = q + n * C;
                T* an = out + n * D;
                std::fill(an, an + D, T(0));
                if (rows == 0) continue;
                T max_score = -std::numeric_limits<T>::infinity();
                for (int64_t j = 0; j < rows; ++j) {
                    p[j] = dot(keys + (row0 + j) * C, qn, C);
                    max_score = std::max(max_score, p[j]);
                }
                T sum = 0;
                for (int64_t j = 0; j < rows; ++j) sum += (p[j] = std::exp(p[j] - max_score));
                const T inv = T(1) / sum;
                for (int64_t j = 0; j < rows; ++j) {
                    p[j] *= inv;
                    const T* v = values + (row0 + j) * D;
                    for (int64_t d = 0; d < D; ++d) an[d] += p[j] * v[d];
                }
            }
        }
    });
}

// Each token's rows belong to exactly one group and each occurrence to one query, so the groups can
// run in parallel without atomics. grad_keys / grad_values may alias (tied table).
template <typename T>
void backward_kernel(const Grouping& g, const T* q, const T* keys, const T* values, const int64_t* bounds,
                     const T* probs, const T* grad_out, int64_t C, int64_t D, T* grad_q, T* grad_keys,
                     T* grad_values) {
    at::parallel_for(0, static_cast<int64_t>(g.token.size()), 1, [&](int64_t begin, int64_t end) {
        std::vector<T> ds;
        for (int64_t k = begin; k < end; ++k) {
            const int64_t row0 = bounds[g.token[k]], rows = bounds[g.token[k] + 1] - row0;
            const T* p = probs + g.score_offset[k];
            ds.resize(rows);
            for (int64_t o = g.start[k]; o < g.start[k + 1]; ++o, p += rows) {
                const int64_t n = g.order[o];
                const T* go = grad_out + n * D;
                const T* qn = q + n * C;
                T* gq = grad_q + n * C;
                T weighted = 0;
                for (int64_t j = 0; j < rows; ++j) {
                    ds[j] = dot(go, values + (row0 + j) * D, D);  // d loss / d p_j
                    weighted += p[j] * ds[j];
                }
                for (int64_t j = 0; j < rows; ++j) {
                    const T s = p[j] * (ds[j] - weighted);  // d loss / d score_j (softmax backward)
                    const T* key = keys + (row0 + j) * C;
                    T* gk = grad_keys + (row0 + j) * C;
                    for (int64_t c = 0; c < C; ++c) {
                        gq[c] += s * key[c];
                        gk[c] += s * qn[c];
                    }
                    T* gv = grad_values + (row0 + j) * D;
                    for (int64_t d = 0; d < D; ++d) gv[d] += p[j] * go[d];
                }
            }
        }
    });
}

void check_inputs(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values, const at::Tensor& ids,
                  const at::Tensor& bounds) {
    TORCH_CHECK(q.dim() == 2 && keys.dim() == 2 && values.dim() == 2, "L3: q, keys and values must be 2-D");
    TORCH_CHECK(keys.size(1) == q.size(1), "L3: keys have width ", keys.size(1), " but queries ", q.size(1));
    TORCH_CHECK(keys.size(0) == values.size(0), "L3: keys and values have different row counts");
    TORCH_CHECK(ids.dim() == 1 && ids.size(0) == q.size(0), "L3: need one token id per query");
    TORCH_CHECK(ids.scalar_type() == at::kLong && bounds.scalar_type() == at::kLong, "L3: ids and bounds must be int64");
    TORCH_CHECK(bounds.dim() == 1 && bounds.numel() >= 2, "L3: bounds must be [V+1]");
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
        at::Tensor out = at::empty({q.size(0), values.size(1)}, q.options());
        AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "l3_segment_forward", [&] {
            forward_kernel<scalar_t>(*grouping, q.data_ptr<scalar_t>(), keys.data_ptr<scalar_t>(),
                                     values.data_ptr<scalar_t>(), bounds.data_ptr<int64_t>(), q.size(1),
                                     values.size(1), probs.data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
        });
        ctx->save_for_backward({q, keys, values, bounds, probs});
        ctx->saved_data["tied"] = tied;
        ctx->saved_data["keys_dtype"] = static_cast<int64_t>(keys_in.scalar_type());
        ctx->saved_data["values_dtype"] = static_cast<int64_t>(values_in.scalar_type());
        // The grouping is plain C++ state; it travels to backward as int64 tensors.
        ctx->saved_data["order"] = at::tensor(grouping->order, at::kLong);
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
        AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "l3_segment_backward", [&] {
            backward_kernel<scalar_t>(g, q.data_ptr<scalar_t>(), keys.data_ptr<scalar_t>(), values.data_ptr<scalar_t>(),
                                      bounds.data_ptr<int64_t>(), probs.data_ptr<scalar_t>(),
                                      grad_out.data_ptr<scalar_t>(), q.size(1), values.size(1),
                                      grad_q.data_ptr<scalar_t>(), grad_keys.data_ptr<scalar_t>(),
                                      grad_values.data_ptr<scalar_t>());
        });
        const auto keys_dtype = static_cast<at::ScalarType>(ctx->saved_data["keys_dtype"].toInt());
        const auto values_dtype = static_cast<at::ScalarType>(ctx->saved_data["values_dtype"].toInt());
        if (tied) return {grad_q, grad_keys.to(keys_dtype), at::Tensor(), at::Tensor(), at::Tensor()};
        return {grad_q, grad_keys.to(keys_dtype), grad_values.to(values_dtype), at::Tensor(), at::Tensor()};
    }
};

}  // namespace

at::Tensor l3_segment_attention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                                const at::Tensor& ids, const at::Tensor& bounds) {
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
    at::Tensor v = values.index_select(0, index.flatten()).view({ids.size(0), k_max, values.size(1)});
    at::Tensor scores = at::bmm(k.to(q.scalar_type()), q.unsqueeze(2)).squeeze(2).masked_fill(~mask, -INFINITY);
    at::Tensor weights = at::softmax(scores, -1).masked_fill(~mask, 0.0);
    return at::bmm(weights.unsqueeze(1), v.to(q.scalar_type())).squeeze(1);
}

}  // namespace l3lab::modules
