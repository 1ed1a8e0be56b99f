// The same training curve as nanochat's own scripts/base_train.py: 10 steps on the parquet fixture with
// nanochat's tokenizer, dense and with an L3 layer, against the reference's printed losses and validation
// bpb (tests/fixtures/curves/, made by tools/reference/compare_curves.py --golden, which also runs the
// 50-step comparison in docs/data.md). The experiment is the YAML the script records beside the curve.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"

using namespace l3lab;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

void expect_reference_curve(const std::string& name) {
    test::prepare_training_suite();
    const fs::path fixtures = test::kSourceDir / "tests" / "fixtures";
    const json golden = json::parse(test::slurp(fixtures / "curves" / (name + ".json")));
    test::TempDir dir;
    const std::string experiment = test::reference_curve_experiment(name, dir);
    const fs::path run = dir.path() / "run";
    auto r = test::run_cli({"train", experiment, "--run-dir", run.string()});
    ASSERT_EQ(r.code, 0) << r.err;

    std::map<int64_t, double> loss, bpb;
    std::ifstream in(run / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
        const json j = json::parse(line);
        if (j["kind"] == "train") loss[j["step"]] = j["loss"];
        if (j["kind"] == "val") bpb[j["step"]] = j["bpb"];
    }
    // The reference prints 6 decimals: step 0 within 1e-5, later values within 1e-3 relative (the issue's
    // target; measured: a few 1e-6).
    for (const auto& [key, want] : golden["loss"].items()) {
        const int64_t step = std::stoll(key);
        ASSERT_TRUE(loss.count(step)) << "no loss at step " << step;
        if (step == 0) EXPECT_NEAR(loss[step], want.get<double>(), 1e-5) << "loss at step 0";
        else EXPECT_NEAR(loss[step], want.get<double>(), 1e-3 * want.get<double>()) << "loss at step " << step;
    }
    for (const auto& [key, want] : golden["bpb"].items()) {
        const int64_t step = std::stoll(key);
        ASSERT_TRUE(bpb.count(step)) << "no validation bpb at step " << step;
        if (step == 0) EXPECT_NEAR(bpb[step], want.get<double>(), 1e-5) << "validation bpb at step 0";
        else EXPECT_NEAR(bpb[step], want.get<double>(), 1e-3 * want.get<double>()) << "validation bpb at step " << step;
    }
}

}  // namespace

TEST(ReferenceCurve, DenseTenStepsOnParquetWithNanochatsTokenizer) {
    L3LAB_REQUIRE_PARQUET();
    expect_reference_curve("dense");
}

TEST(ReferenceCurve, L3TenStepsOnParquetWithNanochatsTokenizer) {
    L3LAB_REQUIRE_PARQUET();
    expect_reference_curve("l3");
}
