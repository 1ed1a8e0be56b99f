// CORE's tasks up to the token rows, against nanochat's own functions on a synthetic bundle
// (tools/reference/make_core_fixtures.py): which examples evaluate_core keeps (Random(1337).shuffle and
// max_per_task), the few-shot samples (Random(1234 + idx).sample), the rendered prompts with their exact
// whitespace, the token rows and each scored span. Malformed bundles are refused naming the file.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "runner/data/core_tasks.h"
#include "runner/data/errors.h"
#include "runner/data/tokenizer.h"
#include "test_util.h"

using namespace l3lab;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {
const fs::path kCore = test::kSourceDir / "tests" / "fixtures" / "core";
}

TEST(Core, RowsAreThoseOfNanochatsEvaluateExample) {
    const json golden = json::parse(test::slurp(kCore / "core_cases.json"));
    const auto tasks = data::read_core_bundle((kCore / "eval_bundle").string());
    auto tokenizer = data::load_tokenizer((test::kSourceDir / "tests" / "fixtures" / "bpe" / "full").string());
    ASSERT_EQ(tasks.size(), 6u);
    size_t examples = 0;
    for (const json& c : golden["cases"]) {
        for (size_t t = 0; t < tasks.size(); ++t) {
            const json& g = c["tasks"][t];
            ASSERT_EQ(g["label"], tasks[t].label);
            const auto data = data::core_subsample(tasks[t].examples, c["max_per_task"]);
            ASSERT_EQ(data.size(), g["examples"].size()) << tasks[t].label;
            for (size_t i = 0; i < data.size(); ++i, ++examples) {
                SCOPED_TRACE(tasks[t].label + " example " + std::to_string(i) + " max_per_task " + c["max_per_task"].dump());
                const json& e = g["examples"][i];
                const auto rows = data::core_rows(tasks[t], data, i, *tokenizer);
                EXPECT_EQ(rows.fewshot, e["fewshot"].get<std::vector<int64_t>>());
                EXPECT_EQ(rows.prompts, e["prompts"].get<std::vector<std::string>>());
                EXPECT_EQ(rows.tokens, e["tokens"].get<std::vector<std::vector<int32_t>>>());
                EXPECT_EQ(rows.starts, e["starts"].get<std::vector<int64_t>>());
                EXPECT_EQ(rows.ends, e["ends"].get<std::vector<int64_t>>());
            }
        }
    }
    EXPECT_GT(examples, 80u);
}

TEST(Core, PythonRandomAndStrip) {
    // CPython 3.11: random.Random(1337).shuffle(list(range(10))), Random(1234).sample(range(30), 3) and
    // Random(1234).sample(list(range(100)), 20)
    std::vector<int> x = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    data::PythonRandom(1337).shuffle(x);
    std::vector<int64_t> population;
    for (int64_t i = 0; i < 30; ++i) population.push_back(i);
    const auto s = data::PythonRandom(1234).sample(population, 3);
    EXPECT_EQ(data::python_strip(" \t\xC2\xA0x y\xE3\x80\x80\n"), "x y");
    EXPECT_EQ(data::python_strip("\xE2\x80\x8Bx"), "\xE2\x80\x8Bx");  // U+200B is not whitespace to Python
    EXPECT_EQ(x, (std::vector<int>{0, 3, 7, 2, 1, 6, 4, 5, 8, 9}));
    EXPECT_EQ(s, (std::vector<int64_t>{24, 14, 3}));
    // k = 20 of 100: past sample's pool size (21 + 4^3), its other branch (a set of picks)
    std::vector<int64_t> hundred;
    for (int64_t i = 0; i < 100; ++i) hundred.push_back(i);
    EXPECT_EQ(data::PythonRandom(1234).sample(hundred, 20),
              (std::vector<int64_t>{99, 56, 14, 0, 11, 74, 4, 85, 88, 10, 12, 98, 45, 30, 2, 3, 44, 82, 79, 61}));
}

TEST(Core, MalformedBundlesAreRefusedNamingTheFile) {
    test::TempDir dir;
    auto error = [&](const std::string& path) {
        try {
            data::read_core_bundle(path);
        } catch (const data::DataError& e) {
            return std::string(e.what());
        }
        return std::string("(no error)");
    };
    EXPECT_NE(error((dir.path() / "none").string()).find("no CORE bundle here (l3lab never downloads it"), std::string::npos);
    fs::copy(kCore / "eval_bundle", dir.path() / "b", fs::copy_options::recursive);
    const std::string b = (dir.path() / "b").string();
    dir.write("b/eval_meta_data.csv", "Eval Task,Random baseline\nmc_zero,25\n");
    EXPECT_NE(error(b).find("eval_meta_data.csv: mc_three: no row for this task"), std::string::npos) << error(b);
    fs::copy(kCore / "eval_bundle" / "eval_meta_data.csv", dir.path() / "b" / "eval_meta_data.csv", fs::copy_options::overwrite_existing);
    dir.write("b/eval_data/schema_one.jsonl", "{\"context_options\": [\"a\"], \"continuation\": \"b\", \"gold\": 3}\n");
    EXPECT_NE(error(b).find("schema_one.jsonl:1: gold is not the index of a context option"), std::string::npos) << error(b);
    dir.write("b/core.yaml", "icl_tasks:\n- label: x\n  dataset_uri: x.jsonl\n  num_fewshot: [0]\n  icl_task_type: ranking\n");
    EXPECT_NE(error(b).find("core.yaml:2: x: icl_task_type \"ranking\" is not one CORE has"), std::string::npos) << error(b);
}
