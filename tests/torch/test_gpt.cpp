// The torch side of the registry: names, shapes and counts equal the shape side; forward basics.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <random>

#include "modules/shapes/shapes.h"
#include "modules/torch/gpt.h"

using namespace l3lab::modules;

namespace {

GPTOptions random_options(std::mt19937& rng) {
    auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    GPTOptions o;
    o.sequence_len = 16 * pick(1, 4);
    o.vocab_size = pick(40, 300);
    o.n_layer = pick(1, 5);
    const int64_t head_dim = 16 * pick(1, 3);
    o.n_head = pick(1, 4);
    o.n_kv_head = (o.n_head % 2 == 0 && pick(0, 1)) ? o.n_head / 2 : o.n_head;
    o.n_embd = std::max<int64_t>(o.n_head * head_dim, 32 / head_dim * head_dim + head_dim * (32 % head_dim != 0));
    o.n_head = o.n_embd / head_dim;
    if (o.n_head % o.n_kv_head) o.n_kv_head = o.n_head;
    o.window_pattern = pick(0, 1) ? "SSSL" : "SL";
    for (int64_t b = 0; b < o.n_layer; ++b) {
        if (pick(0, 2) != 0) continue;
        L3LayerOptions l3;
        l3.n_emb = o.vocab_size * pick(1, 4);
        l3.d_up = 8 * pick(1, 8);
        l3.tie_kv = pick(0, 1);
        l3.d_emb = l3.tie_kv ? o.n_embd : 8 * pick(1, 6);
        l3.k_max = 8;
        o.l3.push_back({b, l3});
    }
    return o;
}

}  // namespace

TEST(GPTModule, ParametersEqualTheShapeSideForManyConfigs) {
    std::mt19937 rng(123);
    for (int trial = 0; trial < 25; ++trial) {
        GPTOptions o = random_options(rng);
        ASSERT_TRUE(o.validate().empty()) << o.validate().front().message;
        GPT model(o);
        ModelShape shape = describe(o);
        auto named = model->named_parameters(/*recurse=*/true);
        ASSERT_EQ(named.size(), shape.params.size()) << "trial " << trial;
        int64_t total = 0;
        for (size_t i = 0; i < shape.params.size(); ++i) {
            const auto& expected = shape.params[i];
            const auto& item = named[i];
            EXPECT_EQ(item.key(), expected.name) << "trial " << trial;  // names and order
            EXPECT_EQ(item.value().sizes().vec(), expected.shape) << expected.name;
            total += item.value().numel();
        }
        EXPECT_EQ(total, shape.counts.total);
    }
}

TEST(GPTModule, BuffersAreTheL3BoundsOnly) {
    GPTOptions o;
    o.sequence_len = 32, o.vocab_size = 50, o.n_layer = 2, o.n_head = 2, o.n_kv_head = 2, o.n_embd = 64;
    o.l3.push_back({1, {100, 32, 64, 4, true}});
    GPT model(o);
    auto buffers = model->named_buffers();
    ASSERT_EQ(buffers.size(), 1u);
    EXPECT_EQ(buffers[0].key(), "l3_layers.1.bounds");
}

TEST(GPTModule, ForwardShapesLossAndIgnoreIndex) {
    GPTOptions o;
    o.sequence_len = 32, o.vocab_size = 70, o.n_layer = 2, o.n_head = 2, o.n_kv_head = 1, o.n_embd = 64;
    o.window_pattern = "SL";
    o.l3.push_back({0, {140, 32, 64, 4, true}});
    GPT model(o);
    at::manual_seed(0);
    model->init_weights();
    at::Tensor rows = at::full({70}, 2, at::kLong);
    model->l3_layers["0"]->as<L3LayerImpl>()->set_bounds(at::cat({at::zeros({1}, at::kLong), rows.cumsum(0)}));
    at::Tensor idx = at::randint(0, 70, {2, 32}, at::kLong);
    at::Tensor targets = at::randint(0, 70, {2, 32}, at::kLong);
    at::Tensor logits = model->forward(idx);
    EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 32, 70}));  // cropped from the padded 128
    EXPECT_EQ(logits.scalar_type(), at::kFloat);
    EXPECT_LE(logits.abs().max().item<double>(), 15.0);  // soft-capped
    targets[0][3] = -1;
    at::Tensor none = model->loss(idx, targets, LossReduction::None);
    EXPECT_EQ(none.sizes(), (std::vector<int64_t>{64}));
    EXPECT_EQ(none[3].item<double>(), 0.0);
    const double mean = model->loss(idx, targets).item<double>();
    EXPECT_NEAR(mean, none.sum().item<double>() / 63.0, 1e-5);
}

TEST(GPTModule, WindowedAttentionMatchesExplicitMath) {
    at::manual_seed(1);
    const int64_t T = 12;
    at::Tensor q = at::randn({1, 2, T, 8}), k = at::randn({1, 2, T, 8}), v = at::randn({1, 2, T, 8});
    for (int64_t window : {0, 1, 5, 11, 12}) {
        at::Tensor y = windowed_causal_attention(q, k, v, window);
        at::Tensor scores = at::matmul(q, k.transpose(-1, -2)) / std::sqrt(8.0);
        for (int64_t i = 0; i < T; ++i)
            for (int64_t j = 0; j < T; ++j)
                if (j > i || i - j > window) scores.select(2, i).select(2, j).fill_(-INFINITY);
        at::Tensor expected = at::matmul(at::softmax(scores, -1), v);
        EXPECT_LE((y - expected).abs().max().item<double>(), 1e-5) << "window " << window;
    }
}

TEST(GPTModule, KVCacheDecodingEqualsTheFullForward) {
    GPTOptions o;
    o.sequence_len = 16, o.vocab_size = 70, o.n_layer = 3, o.n_head = 4, o.n_kv_head = 2, o.n_embd = 64;
    o.window_pattern = "S";  // windows of 8 < the 14 tokens decoded: the cache must apply them
    o.l3.push_back({1, {140, 32, 64, 4, true}});
    GPT model(o);
    at::manual_seed(3);
    model->init_weights();
    {
        torch::NoGradGuard no_grad;  // make every weight matter (c_proj, w_mix and gates start at zero)
        for (auto& p : model->parameters()) p.add_(at::randn_like(p) * 0.05);
    }
    at::Tensor rows = at::full({70}, 2, at::kLong);
    model->l3_layers["1"]->as<L3LayerImpl>()->set_bounds(at::cat({at::zeros({1}, at::kLong), rows.cumsum(0)}));
    torch::NoGradGuard no_grad;
    at::Tensor idx = at::randint(0, 70, {2, 14}, at::kLong);
    at::Tensor full = model->forward(idx);
    KVCache cache = model->new_cache(2, 16);
    at::Tensor prefix = model->forward_cached(idx.slice(1, 0, 5), cache);
    EXPECT_LE((prefix - full.slice(1, 0, 5)).abs().max().item<double>(), 1e-5);
    for (int64_t t = 5; t < 14; ++t) {
        at::Tensor step = model->forward_cached(idx.slice(1, t, t + 1), cache);
        EXPECT_LE((step.squeeze(1) - full.select(1, t)).abs().max().item<double>(), 1e-5) << "position " << t;
    }
    EXPECT_EQ(cache.pos, 14);
}
