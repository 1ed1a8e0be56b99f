// The ragged L3 segment attention: same function as the reference's padded gather, exact gradients.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "modules/torch/l3_segment.h"

using namespace l3lab::modules;

namespace {

struct Case {
    at::Tensor q, keys, values, ids, bounds;
};

// Rows per token from a skewed random allocation (1..k_max rows), some tokens with many rows.
Case make_case(int64_t n, int64_t vocab, int64_t C, int64_t D, int64_t k_max, bool tied, at::ScalarType dtype,
               uint64_t seed) {
    at::manual_seed(seed);
    at::Tensor rows = at::randint(1, k_max + 1, {vocab}, at::kLong);
    rows[0] = k_max;  // token 0 owns the most rows
    at::Tensor bounds = at::cat({at::zeros({1}, at::kLong), rows.cumsum(0)});
    const int64_t n_emb = bounds[-1].item<int64_t>();
    auto opt = at::TensorOptions().dtype(dtype);
    Case c;
    c.q = at::randn({n, C}, opt);
    c.keys = at::randn({n_emb, C}, opt);
    c.values = tied ? c.keys : at::randn({n_emb, D}, opt);
    c.ids = at::randint(0, vocab, {n}, at::kLong);
    c.ids.slice(0, 0, n / 4).fill_(0);  // repeated occurrences of one token
    c.bounds = bounds;
    return c;
}

void expect_close(const at::Tensor& a, const at::Tensor& b, double tol) {
    ASSERT_EQ(a.sizes(), b.sizes());
    const double err = (a - b).abs().max().item<double>();
    EXPECT_LE(err, tol) << "max abs difference " << err;
}

}  // namespace

TEST(L3Segment, MatchesPaddedGatherForwardAndBackward) {
    // k_max 12: every token takes the loop path; 60: tokens with more than 16 rows take the GEMM path.
    for (int64_t k_max : {12, 60})
    for (bool tied : {true, false}) {
        SCOPED_TRACE(std::string(tied ? "tied" : "untied") + " k_max " + std::to_string(k_max));
        Case c = make_case(200, 37, 16, tied ? 16 : 8, k_max, tied, at::kFloat, 1);
        auto run = [&](bool segment) {
            at::Tensor q = c.q.clone().requires_grad_(true);
            at::Tensor k = c.keys.clone().requires_grad_(true);
            at::Tensor v = tied ? k : c.values.clone().requires_grad_(true);
            at::Tensor out = segment ? l3_segment_attention(q, k, v, c.ids, c.bounds)
                                     : l3_padded_attention(q, k, v, c.ids, c.bounds);
            at::manual_seed(7);
            at::Tensor g = at::randn_like(out);
            (out * g).sum().backward();
            return std::vector<at::Tensor>{out.detach(), q.grad(), k.grad(), tied ? k.grad() : v.grad()};
        };
        auto seg = run(true), pad = run(false);
        for (size_t i = 0; i < seg.size(); ++i) expect_close(seg[i], pad[i], 2e-5);
    }
}

// Double-precision gradient check by central differences along random directions.
TEST(L3Segment, GradientsMatchFiniteDifferencesInDouble) {
    for (int64_t k_max : {6, 40})  // the loop path, then both paths in one call
    for (bool tied : {true, false}) {
        SCOPED_TRACE(std::string(tied ? "tied" : "untied") + " k_max " + std::to_string(k_max));
        Case c = make_case(24, 7, 5, tied ? 5 : 3, k_max, tied, at::kDouble, 3);
        at::manual_seed(11);
        at::Tensor g = at::randn({24, tied ? 5 : 3}, at::kDouble);
        auto f = [&](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
            return (l3_segment_attention(q, k, tied ? k : v, c.ids, c.bounds) * g).sum();
        };
        at::Tensor q = c.q.clone().requires_grad_(true), k = c.keys.clone().requires_grad_(true);
        at::Tensor v = c.values.clone().requires_grad_(true);
        f(q, k, v).backward();
        for (int trial = 0; trial < 5; ++trial) {
            at::Tensor dq = at::randn_like(q), dk = at::randn_like(k), dv = at::randn_like(v);
            const double eps = 1e-6;
            torch::NoGradGuard no_grad;
            const double plus = f(q + eps * dq, k + eps * dk, v + eps * dv).item<double>();
            const double minus = f(q - eps * dq, k - eps * dk, v - eps * dv).item<double>();
            const double numeric = (plus - minus) / (2 * eps);
            double analytic = (q.grad() * dq).sum().item<double>() + (k.grad() * dk).sum().item<double>();
            if (!tied) analytic += (v.grad() * dv).sum().item<double>();
            EXPECT_NEAR(analytic, numeric, 1e-7 * std::max(1.0, std::fabs(numeric)));
        }
    }
}

TEST(L3Segment, TokensWithoutRowsGiveZeroAndBadIdsAreRefused) {
    at::Tensor bounds = at::tensor({0, 2, 2, 5}, at::kLong);  // token 1 owns no rows
    at::Tensor keys = at::randn({5, 4}), q = at::randn({3, 4});
    at::Tensor out = l3_segment_attention(q, keys, keys, at::tensor({1, 0, 2}, at::kLong), bounds);
    EXPECT_EQ(out[0].abs().sum().item<double>(), 0.0);
    EXPECT_GT(out[1].abs().sum().item<double>(), 0.0);
    EXPECT_THROW(l3_segment_attention(q, keys, keys, at::tensor({0, 3, 1}, at::kLong), bounds), c10::Error);
}

TEST(L3Segment, KeepsNoPaddedTensor) {
    // k_max 512 over 4096 queries of width 256 would be 2 GiB padded (4096 x 512 x 256 x 4 bytes);
    // the segment kernel stores only the probabilities: 4096 x (rows of each occurrence's token).
    Case c = make_case(4096, 64, 256, 256, 512, true, at::kFloat, 5);
    at::Tensor q = c.q.requires_grad_(true), k = c.keys.requires_grad_(true);
    at::Tensor out = l3_segment_attention(q, k, k, c.ids, c.bounds);
    out.sum().backward();
    EXPECT_EQ(out.sizes(), (std::vector<int64_t>{4096, 256}));
    EXPECT_TRUE(q.grad().defined());
}
