// `l3lab plan` against golden numbers produced by running the reference's own base_train.py code
// (tools/reference/make_plan_fixtures.py), for hand-picked and random configurations.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "runner/config/experiment.h"
#include "runner/plan/plan.h"
#include "test_util.h"

using namespace l3lab;
using nlohmann::json;

namespace {

json load_fixture(const std::string& name) {
    std::ifstream in(test::kSourceDir / "tests" / "fixtures" / "plan" / name);
    return json::parse(in);
}

void expect_equal(const json& expected, const json& actual, const std::string& key) {
    SCOPED_TRACE(key);
    ASSERT_FALSE(actual.is_null()) << "l3lab's plan lacks " << key;
    if (expected.is_object()) {
        for (const auto& [k, v] : expected.items()) expect_equal(v, actual.at(k), key + "." + k);
    } else if (expected.is_number_float()) {
        const double e = expected.get<double>(), a = actual.get<double>();
        // Same formulas, same libm: identical in practice; allow 1 part in 1e12 for libm differences.
        EXPECT_LE(std::fabs(a - e), 1e-12 * std::fabs(e)) << "expected " << e << ", got " << a;
    } else {
        EXPECT_EQ(expected, actual);
    }
}

// setup_optimizer()'s groups: the AdamW ones in order (l3lab skips groups that select nothing, as the
// reference adds its L3 table group only when there are tables), then one Muon group per matrix shape,
// which l3lab keeps as one group (the optimizer stacks by shape inside it).
void expect_same_groups(const json& reference, const json& actual) {
    std::vector<json> ours;
    for (const auto& g : actual)
        if (g["numel"].get<int64_t>() > 0) ours.push_back(g);
    size_t i = 0;
    int64_t muon_numel = 0;
    for (const auto& g : reference) {
        if (g["kind"] == "muon") {
            muon_numel += g["numel"].get<int64_t>();
            continue;
        }
        ASSERT_LT(i, ours.size());
        for (const char* key : {"kind", "lr", "weight_decay", "numel", "beta1", "beta2", "eps"})
            expect_equal(g[key], ours[i][key], std::string("adamw group ") + std::to_string(i) + "." + key);
        ++i;
    }
    ASSERT_EQ(i + 1, ours.size()) << "expected the AdamW groups and one Muon group";
    const json& muon = ours.back();
    EXPECT_EQ(muon["kind"], "muon");
    EXPECT_EQ(muon["numel"].get<int64_t>(), muon_numel);
    for (const auto& g : reference)
        if (g["kind"] == "muon")
            for (const char* key : {"lr", "weight_decay", "beta2", "ns_steps"}) expect_equal(g[key], muon[key], std::string("muon.") + key);
}

void check_cases(const std::string& fixture) {
    json data = load_fixture(fixture);
    ASSERT_GE(data["cases"].size(), 20u);
    for (const auto& c : data["cases"]) {
        SCOPED_TRACE(c["name"].get<std::string>() + " " + c["flags"].dump());
        std::vector<std::string> args = {"plan", test::base_yaml(), "--json", "--world-size",
                                         std::to_string(c["world_size"].get<int>())};
        for (const auto& o : c["overrides"]) args.push_back(o.get<std::string>());
        auto r = test::run_cli(args);
        ASSERT_EQ(r.code, 0) << r.err;
        json actual = json::parse(r.out);
        for (const auto& [key, value] : c["expect"].items())
            if (key != "optimizer_groups") expect_equal(value, actual[key], key);
        expect_same_groups(c["expect"]["optimizer_groups"], actual["optimizer_groups"]);
    }
}

}  // namespace

TEST(PlanParity, HandPickedCasesMatchTheReference) { check_cases("reference_plans.json"); }

TEST(PlanParity, RandomCasesMatchTheReference) { check_cases("reference_plans_random.json"); }

TEST(PlanParity, FixturesCoverEveryDepthRuleAndL3Setting) {
    json data = load_fixture("reference_plans.json");
    std::set<std::tuple<int, std::string, bool>> seen;
    for (const auto& c : data["cases"])
        seen.insert({c["expect"]["n_layer"].get<int>(), c["expect"]["horizon_rule"].get<std::string>(),
                     c["expect"]["l3_n_emb"].get<long long>() > 0});
    for (int depth : {4, 12, 20, 26})
        for (const char* rule : {"num_iterations", "target_flops", "target_param_data_ratio"})
            for (bool l3 : {false, true})
                EXPECT_TRUE(seen.count({depth, rule, l3})) << depth << " " << rule << " l3=" << l3;
}

TEST(Plan, PythonRoundHalvesToEven) {
    EXPECT_EQ(plan::python_round(0.5), 0);
    EXPECT_EQ(plan::python_round(1.5), 2);
    EXPECT_EQ(plan::python_round(2.5), 2);
    EXPECT_EQ(plan::python_round(-0.5), 0);
    EXPECT_EQ(plan::python_round(2.5000001), 3);
}

TEST(Plan, TableShowsTheRulesThatProducedTheNumbers) {
    auto r = test::run_cli({"plan", (test::kSourceDir / "experiments" / "d12-l3.yaml").string()});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("num_iterations"), std::string::npos);
    EXPECT_NE(r.out.find("from target_param_data_ratio 10.5"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("auto: 2^round(log2(524,288 x (D/D_ref)^0.383))"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("L3 after blocks"), std::string::npos) << r.out;
}

TEST(Plan, ZeroStepHorizonIsReportedNotHidden) {
    auto r = test::run_cli({"plan", test::base_yaml(), "--json", "model.depth=4", "horizon.target_flops=1e12"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(json::parse(r.out)["num_iterations"], 0);
    EXPECT_NE(r.err.find("0 optimizer steps"), std::string::npos) << r.err;
}

// Evaluation or samples far larger than the training: the reported case (the default eval.tokens before
// a 1-step run of a tiny model) is a warning naming the key, in `plan` and at the start of a run.
TEST(Plan, WarnsWhenEvaluationOrSamplingOutweighTheTraining) {
    const std::vector<std::string> tiny{"plan", test::base_yaml(), "model.depth=2", "model.sequence_len=64",
                                        "batch.device_batch_size=2", "batch.total_batch_size=128",
                                        "horizon.num_iterations=1"};
    auto r = test::run_cli(tiny);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("warning: evaluation is 109,227x the training's own work: 2 evaluations of 163,840 batches "
                         "(20,971,520 tokens, eval.tokens) for 1 step of 128 tokens; lower eval.tokens"),
              std::string::npos)
        << r.out;
    std::vector<std::string> sampled = tiny;
    sampled.insert(sampled.end(), {"eval.tokens=128", "sample.max_tokens=10000", "sample.prompts=[a, b]"});
    r = test::run_cli(sampled);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out.find("evaluation is"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("warning: sampling is 4x the training's own work: 1 round of 2 prompts x 640 tokens "
                         "(sample.max_tokens) for 1 step; lower sample.max_tokens or raise sample.every"),
              std::string::npos)
        << r.out;
    // A real configuration warns of neither.
    r = test::run_cli({"plan", (test::kSourceDir / "experiments" / "d12-l3.yaml").string()});
    EXPECT_EQ(r.out.find("evaluation is"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("sampling is"), std::string::npos) << r.out;
}

TEST(Plan, WorldSizeChangesOnlyGradientAccumulation) {
    auto one = json::parse(test::run_cli({"plan", test::base_yaml(), "--json", "model.depth=12"}).out);
    auto eight = json::parse(test::run_cli({"plan", test::base_yaml(), "--json", "--world-size", "8", "model.depth=12"}).out);
    EXPECT_EQ(one["num_iterations"], eight["num_iterations"]);
    EXPECT_EQ(one["grad_accum_steps"].get<int>(), 8 * eight["grad_accum_steps"].get<int>());
}
