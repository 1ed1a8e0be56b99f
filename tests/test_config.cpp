// Experiment files: extends composition, override precedence, defaults, deterministic output.
#include <gtest/gtest.h>

#include "runner/config/experiment.h"
#include "runner/config/schema.h"
#include "test_util.h"

using namespace l3lab;
using l3lab::test::TempDir;

TEST(Config, BaseYamlSpellsOutExactlyTheSchemaDefaults) {
    // A file that extends nothing gets the schema's defaults; base.yaml must resolve to the same.
    TempDir dir;
    std::string empty = dir.write("base.yaml", "name: base\n");
    auto from_defaults = config::to_yaml(config::load_experiment(empty, {}));
    auto from_base = config::to_yaml(config::load_experiment(test::base_yaml(), {}));
    EXPECT_EQ(from_defaults, from_base);
}

TEST(Config, ExtendsMergesMapsDeepAndReplacesLists) {
    TempDir dir;
    dir.write("parent.yaml",
              "model:\n  depth: 8\n  l3:\n    after_layers: [1, 2]\n    k_max: 64\nsample:\n  prompts: [a, b]\n");
    std::string child = dir.write("child.yaml",
                                  "extends: [parent.yaml]\nmodel:\n  l3:\n    after_layers: [3]\nsample:\n  prompts: [c]\n");
    auto e = config::load_experiment(child, {});
    EXPECT_EQ(e.model.depth, 8);                                  // from the parent
    EXPECT_EQ(e.model.l3.k_max, 64);                              // sibling of an overridden key survives
    EXPECT_EQ(e.model.l3.after_layers, std::vector<long long>{3});  // lists are replaced, not appended
    EXPECT_EQ(e.sample_prompts, std::vector<std::string>{"c"});
    EXPECT_EQ(e.name, "child");  // default name: the file's stem
}

TEST(Config, LaterExtendsWinThenTheFileThenOverrides) {
    TempDir dir;
    dir.write("a.yaml", "seed: 1\nmodel: {depth: 4, aspect_ratio: 32}\n");
    dir.write("b.yaml", "seed: 2\nmodel: {depth: 6}\n");
    std::string top = dir.write("sub/top.yaml", "extends: [../a.yaml, ../b.yaml]\nmodel: {head_dim: 64}\n");
    auto e = config::load_experiment(top, {});
    EXPECT_EQ(e.seed, 2);
    EXPECT_EQ(e.model.depth, 6);
    EXPECT_EQ(e.model.aspect_ratio, 32);
    EXPECT_EQ(e.model.head_dim, 64);

    auto o = config::load_experiment(top, {"seed=7", "model.depth=10", "model.l3.after_layers=[2, 5]"});
    EXPECT_EQ(o.seed, 7);
    EXPECT_EQ(o.model.depth, 10);
    EXPECT_EQ(o.model.l3.after_layers, (std::vector<long long>{2, 5}));
    // The last override of a key wins.
    auto last = config::load_experiment(top, {"seed=7", "seed=8"});
    EXPECT_EQ(last.seed, 8);
}

TEST(Config, ExtendsAcceptsASingleFileName) {
    TempDir dir;
    dir.write("p.yaml", "seed: 5\n");
    auto e = config::load_experiment(dir.write("c.yaml", "extends: p.yaml\n"), {});
    EXPECT_EQ(e.seed, 5);
}

TEST(Config, DiamondExtendsIsNotACycle) {
    TempDir dir;
    dir.write("root.yaml", "seed: 3\n");
    dir.write("l.yaml", "extends: [root.yaml]\n");
    dir.write("r.yaml", "extends: [root.yaml]\n");
    auto e = config::load_experiment(dir.write("top.yaml", "extends: [l.yaml, r.yaml]\n"), {});
    EXPECT_EQ(e.seed, 3);
}

TEST(Config, OverrideValuesAreParsedAsYaml) {
    auto e = config::load_experiment(test::base_yaml(),
                                     {"model.l3.n_emb=500000", "horizon.target_flops=1e18", "model.l3.tie_kv=false",
                                      "batch.total_batch_size=auto", "model={depth: 6}", "name=my-run"});
    EXPECT_EQ(e.model.l3.n_emb.value(), 500000);
    EXPECT_DOUBLE_EQ(e.horizon.target_flops, 1e18);
    EXPECT_FALSE(e.model.l3.tie_kv);
    EXPECT_FALSE(e.batch.total_batch_size.has_value());
    EXPECT_EQ(e.model.depth, 6);
    EXPECT_EQ(e.model.aspect_ratio, 64);  // a map override merges into the section
    EXPECT_EQ(e.name, "my-run");
}

TEST(Config, IntegerKeysAcceptExactIntegerFloats) {
    auto e = config::load_experiment(test::base_yaml(), {"eval.tokens=2.5e5", "model.l3.n_emb=1_000_000"});
    EXPECT_EQ(e.eval_tokens, 250000);
    EXPECT_EQ(e.model.l3.n_emb.value(), 1000000);
}

TEST(Config, ResolvedYamlIsDeterministicAndRoundTrips) {
    TempDir dir;
    std::string exp = (test::kSourceDir / "experiments" / "d12-l3.yaml").string();
    const std::string first = config::to_yaml(config::load_experiment(exp, {"seed=9"}));
    const std::string second = config::to_yaml(config::load_experiment(exp, {"seed=9"}));
    EXPECT_EQ(first, second);
    // Feeding the resolved YAML back in gives the same YAML: nothing is lost or reformatted.
    std::string resolved = dir.write("resolved.yaml", first);
    EXPECT_EQ(config::to_yaml(config::load_experiment(resolved, {})), first);
    // Keys come out in schema order, whatever order the files used.
    EXPECT_LT(first.find("name:"), first.find("seed:"));
    EXPECT_LT(first.find("model:"), first.find("horizon:"));
    EXPECT_NE(first.find("    after_layers: [3, 7]\n"), std::string::npos);
}

TEST(Config, FloatsAreWrittenSoYaml11ReadsFloats) {
    EXPECT_EQ(config::format_float(1e18), "1.0e+18");
    EXPECT_EQ(config::format_float(2.15e18), "2.15e+18");
    EXPECT_EQ(config::format_float(10.5), "10.5");
    EXPECT_EQ(config::format_float(-1.0), "-1.0");
    EXPECT_EQ(config::format_float(0.0), "0.0");
    EXPECT_EQ(config::format_float(0.004), "0.004");
    EXPECT_EQ(config::format_float(1e-10), "1.0e-10");
    auto e = config::load_experiment(test::base_yaml(), {"horizon.target_flops=1e18"});
    EXPECT_NE(config::to_yaml(e).find("target_flops: 1.0e+18\n"), std::string::npos);
}

TEST(Config, StringsThatLookLikeOtherTypesAreQuoted) {
    auto e = config::load_experiment(test::base_yaml(), {"name=run-1", "data.train='123'", "data.val='yes'",
                                                         "sample.prompts=['a: b', 'plain']"});
    std::string yaml = config::to_yaml(e);
    EXPECT_NE(yaml.find("name: run-1\n"), std::string::npos);
    EXPECT_NE(yaml.find("train: \"123\"\n"), std::string::npos);
    EXPECT_NE(yaml.find("val: \"yes\"\n"), std::string::npos);
    EXPECT_NE(yaml.find("- \"a: b\"\n"), std::string::npos);
}

TEST(Config, EmptySectionMeansDefaults) {
    TempDir dir;
    auto e = config::load_experiment(dir.write("x.yaml", "model:\nhorizon:\n"), {});
    EXPECT_EQ(e.model.depth, 20);
    EXPECT_DOUBLE_EQ(e.horizon.target_param_data_ratio, 10.5);
}

TEST(Config, EveryShippedExperimentLoads) {
    for (const auto& entry : std::filesystem::directory_iterator(test::kSourceDir / "experiments")) {
        if (entry.path().extension() != ".yaml") continue;
        SCOPED_TRACE(entry.path().string());
        EXPECT_NO_THROW(config::load_experiment(entry.path().string(), {}));
    }
}

TEST(ConfigGraph, ExplicitGraphEqualsTheStandardStack) {
    auto standard = config::load_experiment(test::base_yaml(), {"model.depth=6", "model.l3.after_layers=[1, 4]"});
    auto graph = config::load_experiment(
        test::base_yaml(), {"model.depth=6", "model.graph=[{type: block, repeat: 2}, {type: l3}, {type: block, repeat: 3}, "
                                             "{type: l3}, {type: block}]"});
    auto a = test::run_cli({"plan", test::base_yaml(), "--json", "model.depth=6", "model.l3.after_layers=[1, 4]"});
    auto b = test::run_cli({"plan", test::base_yaml(), "--json", "model.depth=6",
                            "model.graph=[{type: block, repeat: 2}, {type: l3}, {type: block, repeat: 3}, {type: l3}, "
                            "{type: block}]"});
    ASSERT_EQ(a.code, 0) << a.err;
    ASSERT_EQ(b.code, 0) << b.err;
    EXPECT_EQ(a.out, b.out);
    EXPECT_EQ(graph.model.graph.size(), 5u);
}

TEST(ConfigGraph, PerLayerOptionsAndRoundTrip) {
    TempDir dir;
    std::string f = dir.write("g.yaml",
                              "extends: [" + test::base_yaml() + "]\n"
                              "model:\n  depth: 4\n  graph:\n"
                              "    - {type: block, repeat: 2}\n"
                              "    - {type: l3, k_max: 64, n_emb: 70000, tie_kv: false, d_emb: 128}\n"
                              "    - type: block\n      repeat: 2\n"
                              "    - {type: l3}\n");
    auto r = test::run_cli({"config", f});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("  graph:\n    - type: block\n      repeat: 2\n    - type: l3\n      n_emb: 70000\n"), std::string::npos)
        << r.out;
    std::string resolved = dir.write("resolved.yaml", r.out);
    EXPECT_EQ(test::run_cli({"config", resolved}).out, r.out);
    auto plan = test::run_cli({"plan", f, "--json"});
    ASSERT_EQ(plan.code, 0) << plan.err;
    EXPECT_NE(plan.out.find("\"l3_n_emb\": 70000"), std::string::npos) << plan.out;  // the first layer's
}

TEST(ConfigGraph, MistakesAreLocated) {
    auto r = test::run_cli({"plan", test::base_yaml(), "model.depth=4", "model.graph=[{type: block, repeat: 3}]"});
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("model.graph: the graph has 3 blocks but model.depth is 4"), std::string::npos) << r.err;
    r = test::run_cli({"plan", test::base_yaml(), "model.depth=1", "model.graph=[{type: l3}, {type: block}]"});
    EXPECT_NE(r.err.find("model.graph[0]: an L3 layer must follow a block"), std::string::npos) << r.err;
    r = test::run_cli({"plan", test::base_yaml(), "model.depth=1", "model.graph=[{type: blok}]"});
    EXPECT_NE(r.err.find("model.graph[0].type: expected one of block or l3, got 'blok'; did you mean 'block'?"),
              std::string::npos) << r.err;
    r = test::run_cli({"plan", test::base_yaml(), "model.depth=1", "model.graph=[{type: block, k_max: 3}]"});
    EXPECT_NE(r.err.find("model.graph[0].k_max: only an l3 entry takes this option"), std::string::npos) << r.err;
    r = test::run_cli({"plan", test::base_yaml(), "model.depth=1", "model.graph=[{repeat: 1}]"});
    EXPECT_NE(r.err.find("model.graph[0]: missing required key 'type'"), std::string::npos) << r.err;
    r = test::run_cli({"plan", test::base_yaml(), "model.depth=2", "model.l3.after_layers=[0]",
                       "model.graph=[{type: block, repeat: 2}]"});
    EXPECT_NE(r.err.find("place L3 layers either here or in model.graph"), std::string::npos) << r.err;
    r = test::run_cli({"plan", test::base_yaml(), "model.depth=1", "model.graph=[{type: block, repaet: 1}]"});
    EXPECT_NE(r.err.find("model.graph[0].repaet: unknown key; did you mean 'repeat'?"), std::string::npos) << r.err;
}
