// CORE on a model against nanochat's own evaluate_example / evaluate_core (tools/reference/
// make_core_fixtures.py): the checkpoint nanochat's base_train saved (tests/fixtures/nanochat_checkpoint),
// the synthetic bundle, every example's verdict, each task's accuracy and centred accuracy, and the
// core_metric, with all examples and with max_per_task 7.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "modules/torch/weights.h"
#include "runner/data/core_tasks.h"
#include "runner/data/tokenizer.h"
#include "runner/torch/core_eval.h"
#include "runner/torch/nanochat_checkpoint.h"
#include "runner/train/nanochat_files.h"

using namespace l3lab;
using nlohmann::json;
namespace fs = std::filesystem;

TEST(CoreEval, VerdictsAccuraciesAndCoreAreNanochats) {
    const fs::path fixtures = fs::path(L3LAB_SOURCE_DIR) / "tests" / "fixtures";
    std::ifstream golden_in(fixtures / "core" / "core_cases.json");
    const json golden = json::parse(golden_in);
    std::ifstream meta_in(fixtures / "nanochat_checkpoint" / "meta_000010.json");
    const json config = json::parse(meta_in)["model_config"];
    modules::GPTOptions o;
    o.sequence_len = config["sequence_len"];
    o.vocab_size = config["vocab_size"];
    o.n_layer = config["n_layer"];
    o.n_head = config["n_head"];
    o.n_kv_head = config["n_kv_head"];
    o.n_embd = config["n_embd"];
    o.window_pattern = config["window_pattern"];
    modules::GPT model(o);
    const std::string file = train::nanochat_model_file((fixtures / "nanochat_checkpoint").string());
    modules::load_state_dict(model, nanochat::read_state_dict(file), file);
    auto tokenizer = data::load_tokenizer((fixtures / "bpe" / "full").string());
    const auto tasks = data::read_core_bundle((fixtures / "core" / "eval_bundle").string());
    for (const json& c : golden["cases"]) {
        SCOPED_TRACE("max_per_task " + c["max_per_task"].dump());
        const auto r = train::evaluate_core(model, *tokenizer, tasks, c["max_per_task"], at::kCPU);
        ASSERT_EQ(r.tasks.size(), c["tasks"].size());
        for (size_t t = 0; t < r.tasks.size(); ++t) {
            const auto& label = r.tasks[t].label;
            std::vector<bool> want;
            for (const auto& e : c["tasks"][t]["examples"]) want.push_back(e["correct"].get<bool>());
            EXPECT_EQ(r.tasks[t].correct, want) << label;
            EXPECT_DOUBLE_EQ(r.tasks[t].accuracy, c["results"][label].get<double>()) << label;
            EXPECT_NEAR(r.tasks[t].centered, c["centered_results"][label].get<double>(), 1e-12) << label;
        }
        EXPECT_NEAR(r.core_metric, c["core_metric"].get<double>(), 1e-12);
    }
}
