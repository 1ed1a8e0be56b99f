// The shape side of the module registry: names, shapes and roles of every parameter.
#include <gtest/gtest.h>

#include "modules/shapes/shapes.h"

using namespace l3lab::modules;

namespace {

GPTOptions tiny() {
    GPTOptions o;
    o.sequence_len = 64;
    o.vocab_size = 100;
    o.n_layer = 3;
    o.n_embd = 128;
    o.n_head = 2;
    o.n_kv_head = 1;
    o.window_pattern = "SL";
    return o;
}

const ParamShape* find(const ModelShape& m, const std::string& name) {
    for (const auto& p : m.params)
        if (p.name == name) return &p;
    return nullptr;
}

}  // namespace

TEST(Shapes, ReferenceNamesShapesAndRoles) {
    GPTOptions o = tiny();
    o.l3.push_back({1, {/*n_emb=*/300, /*d_up=*/64, /*d_emb=*/128, /*k_max=*/8, /*tie_kv=*/true}});
    ModelShape m = describe(o);
    EXPECT_EQ(o.padded_vocab_size(), 128);
    ASSERT_TRUE(find(m, "transformer.wte.weight"));
    EXPECT_EQ(find(m, "transformer.wte.weight")->shape, (std::vector<int64_t>{128, 128}));
    EXPECT_EQ(find(m, "transformer.h.0.attn.c_k.weight")->shape, (std::vector<int64_t>{64, 128}));  // GQA: 1 kv head
    // Value embeddings and their gates on layers with i % 2 == (n_layer - 1) % 2: 0 and 2.
    EXPECT_TRUE(find(m, "value_embeds.0.weight"));
    EXPECT_FALSE(find(m, "value_embeds.1.weight"));
    EXPECT_TRUE(find(m, "value_embeds.2.weight"));
    EXPECT_EQ(find(m, "transformer.h.2.attn.ve_gate.weight")->shape, (std::vector<int64_t>{1, 32}));
    EXPECT_FALSE(find(m, "transformer.h.1.attn.ve_gate.weight"));
    EXPECT_EQ(find(m, "l3_layers.1.kv_weight")->shape, (std::vector<int64_t>{300, 128}));
    EXPECT_EQ(find(m, "l3_layers.1.kv_weight")->role, Role::L3Table);
    EXPECT_EQ(find(m, "l3_layers.1.w_up.weight")->shape, (std::vector<int64_t>{64, 128}));
    EXPECT_EQ(find(m, "l3_layers.1.w_mix.weight")->shape, (std::vector<int64_t>{128, 64 + 128}));
    EXPECT_EQ(find(m, "resid_lambdas")->role, Role::ResidLambda);
    EXPECT_EQ(find(m, "lm_head.weight")->role, Role::LmHead);
    EXPECT_EQ(m.counts.total, m.counts.wte + m.counts.value_embeds + m.counts.lm_head + m.counts.transformer_matrices +
                                  m.counts.l3_embeds + m.counts.l3_matrices + m.counts.scalars);
}

TEST(Shapes, UntiedTablesMayHaveTheirOwnValueWidth) {
    GPTOptions o = tiny();
    o.l3.push_back({0, {300, 64, /*d_emb=*/48, 8, /*tie_kv=*/false}});
    ModelShape m = describe(o);
    EXPECT_EQ(find(m, "l3_layers.0.k_weight")->shape, (std::vector<int64_t>{300, 128}));
    EXPECT_EQ(find(m, "l3_layers.0.v_weight")->shape, (std::vector<int64_t>{300, 48}));
    EXPECT_EQ(find(m, "l3_layers.0.w_up.weight")->shape, (std::vector<int64_t>{64, 48}));
    EXPECT_EQ(m.counts.l3_embeds, 300 * 128 + 300 * 48);
}

TEST(Shapes, WindowsTileThePatternAndEndLong) {
    GPTOptions o = tiny();
    o.n_layer = 5;
    o.window_pattern = "ssl";
    EXPECT_EQ(o.window_sizes(), (std::vector<int64_t>{32, 32, 64, 32, 64}));
    o.window_pattern = "S";
    EXPECT_EQ(o.window_sizes(), (std::vector<int64_t>{32, 32, 32, 32, 64}));
}

TEST(Shapes, ValidationNamesTheField) {
    GPTOptions o = tiny();
    o.n_kv_head = 3;
    o.l3.push_back({7, {50, 64, 128, 8, true}});
    auto errors = o.validate();
    std::vector<std::string> fields;
    for (const auto& e : errors) fields.push_back(e.field);
    EXPECT_NE(std::find(fields.begin(), fields.end(), "n_kv_head"), fields.end());
    EXPECT_NE(std::find(fields.begin(), fields.end(), "l3.after_layers"), fields.end());
    EXPECT_NE(std::find(fields.begin(), fields.end(), "l3.n_emb"), fields.end());  // 50 < vocab 100
}

TEST(Shapes, RegistryListsKnownTypesOnAMiss) {
    EXPECT_NO_THROW(shape_builder("block"));
    EXPECT_NO_THROW(shape_builder("l3"));
    try {
        shape_builder("moe");
        FAIL() << "expected an error";
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("known: block, l3"), std::string::npos) << e.what();
    }
}
