// Checkpoints both ways between l3lab and nanochat. Import: a checkpoint nanochat's own base_train.py saved
// (tests/fixtures/nanochat_checkpoint, tools/reference/make_checkpoint_fixture.py) continues in l3lab with
// the validation bpb nanochat measured on it; bfloat16 too; an OrderedDict (as nanochat saves it) and a model
// that does not match are refused with exit 2. Export: `l3lab export` writes what Python's torch.load
// (weights_only, as nanochat calls it) reads back tensor for tensor, with every GPTConfig field in the meta,
// and what it wrote imports again with the same bpb. (nanochat's own build_model on the export:
// tools/reference/check_nanochat_export.py, docs/training.md.)
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "runner/metrics/metrics.h"
#include "test_util.h"

using namespace l3lab;
using nlohmann::json;
namespace fs = std::filesystem;

#ifdef L3LAB_PYTHON
namespace {

const fs::path kFixtures = test::kSourceDir / "tests" / "fixtures";

// The 10-step dense experiment of tests/fixtures/curves (the one the fixture checkpoint comes from), on
// shards of the parquet fixture, one step long.
struct Workspace {
    test::TempDir dir;
    std::string experiment;
    Workspace() {
        test::prepare_training_suite();
        experiment = test::reference_curve_experiment("dense", dir);
    }
    // The validation bpb at step 0 of a one-step run started from `init`; NaN when it failed.
    double first_bpb(const std::string& init, const std::string& name, test::CliResult* result = nullptr) {
        const fs::path run = dir.path() / ("run-" + name);
        auto r = test::run_cli({"train", experiment, "horizon.num_iterations=1", "--init-from", init, "--run-dir", run.string()});
        if (result) *result = r;
        EXPECT_EQ(r.code, 0) << r.err;
        std::ifstream in(run / "metrics.jsonl");
        for (std::string line; std::getline(in, line);) {
            const json j = json::parse(line);
            if (j["kind"] == "val" && j["step"] == 0) return j["bpb"];
        }
        return NAN;
    }
    void python(const std::string& code) {
        const fs::path script = dir.path() / "script.py";
        std::ofstream(script) << "import collections, json, sys, torch\nd = sys.argv[1]\n" << code;
        const std::string cmd = std::string(L3LAB_PYTHON) + " " + script.string() + " " + dir.path().string() + " 2>&1";
        ASSERT_EQ(std::system(cmd.c_str()), 0) << code;
    }
};

}  // namespace

TEST(NanochatCheckpoint, AReferenceCheckpointContinuesWithTheReferencesValidationBpb) {
    L3LAB_REQUIRE_PARQUET();
    Workspace s;
    const fs::path fixture = kFixtures / "nanochat_checkpoint";
    const double reference_bpb = json::parse(test::slurp(fixture / "meta_000010.json"))["val_bpb"];
    EXPECT_NEAR(s.first_bpb(fixture.string(), "float32"), reference_bpb, 1e-5 * reference_bpb);
    EXPECT_NEAR(s.first_bpb((fixture / "model_000010.pt").string(), "file"), reference_bpb, 1e-5 * reference_bpb);

    // nanochat on CUDA keeps bfloat16 weights; "_orig_mod." prefixes come from a torch.compile'd model.
    fs::create_directories(s.dir.path() / "bf16");
    fs::copy(fixture / "meta_000010.json", s.dir.path() / "bf16" / "meta_000010.json");
    s.python("sd = torch.load('" + (fixture / "model_000010.pt").string() + "')\n"
             "torch.save({'_orig_mod.' + k: v.bfloat16() if v.is_floating_point() else v for k, v in sd.items()},"
             " d + '/bf16/model_000010.pt')\n");
    const double bf16 = s.first_bpb((s.dir.path() / "bf16").string(), "bf16");
    EXPECT_NEAR(bf16, reference_bpb, 2e-2 * reference_bpb);
    EXPECT_NE(bf16, reference_bpb);  // the weights were rounded: this is not the float32 file again
}

// eval and sample take the nanochat checkpoint as it is: the model from its meta's model_config, the
// evaluation settings from the meta, the tokenizer and the validation shards from the command line.
TEST(NanochatCheckpoint, EvalAndSampleTakeItDirectly) {
    L3LAB_REQUIRE_PARQUET();
    Workspace s;
    const fs::path fixture = kFixtures / "nanochat_checkpoint";
    const std::string tokenizer = (kFixtures / "bpe" / "full").string();
    const double reference_bpb = json::parse(test::slurp(fixture / "meta_000010.json"))["val_bpb"];
    auto r = test::run_cli({"eval", fixture.string(), "--tokenizer", tokenizer, "--data",
                            (s.dir.path() / "shards" / "val_*.bin").string(), "--json"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NEAR(json::parse(r.out)["bpb"].get<double>(), reference_bpb, 1e-6 * reference_bpb);
    EXPECT_EQ(json::parse(r.out)["tokens"], 256);  // base_train's --eval-tokens, from the meta's user_config
    // CORE through the command: nanochat's evaluate_core on the same weights gave this (core_cases.json)
    const json golden = json::parse(test::slurp(kFixtures / "core" / "core_cases.json"));
    r = test::run_cli({"eval", fixture.string(), "--tokenizer", tokenizer, "--core", "--bundle",
                       (kFixtures / "core" / "eval_bundle").string(), "--max-per-task", "-1", "--json"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NEAR(json::parse(r.out)["core_metric"].get<double>(), golden["cases"][0]["core_metric"].get<double>(), 1e-12);
    r = test::run_cli({"sample", fixture.string(), "--tokenizer", tokenizer, "--prompt", "the kernel", "--max-tokens", "4"});
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out.rfind("the kernel", 0), 0u) << r.out;
    r = test::run_cli({"eval", fixture.string(), "--tokenizer", tokenizer});
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("give its validation shards with --data"), std::string::npos) << r.err;
}

// CORE during training, on base_train's schedule (every eval.core_every steps after step 0, and the last
// step): the log line base_train prints, summary.json's core_metric equal to `eval --core` of the final
// checkpoint; without a bundle, exit 2 before any run directory.
TEST(NanochatCheckpoint, CoreDuringTrainingOnTheReferencesSchedule) {
    L3LAB_REQUIRE_PARQUET();
    Workspace s;
    const std::string bundle = (kFixtures / "core" / "eval_bundle").string();
    const fs::path run = s.dir.path() / "run-core";
    auto r = test::run_cli({"train", s.experiment, "eval.core_every=4", "eval.core_max_per_task=-1", "eval.core_bundle=" + bundle,
                            "--run-dir", run.string()});
    ASSERT_EQ(r.code, 0) << r.err;
    const std::string log = test::slurp(run / "train.log");
    for (const char* step : {"Step 00004 | CORE metric: ", "Step 00008 | CORE metric: ", "Step 00010 | CORE metric: "})
        EXPECT_NE(log.find(step), std::string::npos) << step << "\n" << log;
    EXPECT_EQ(log.find("Step 00000 | CORE metric"), std::string::npos);  // not at step 0, as base_train
    const json summary = json::parse(test::slurp(run / "summary.json"));
    r = test::run_cli({"eval", run.string(), "--core", "--bundle", bundle, "--max-per-task", "-1", "--json"});
    ASSERT_EQ(r.code, 0) << r.err;
    const json final_core = json::parse(r.out);
    EXPECT_DOUBLE_EQ(summary["core_metric"].get<double>(), final_core["core_metric"].get<double>());
    // metrics.jsonl and metrics.h5 (/core): every evaluation, every task, equal to `eval --core`'s at the end
    const auto m = metrics::read_metrics(run);
    ASSERT_EQ(m.core.size(), 3u);
    EXPECT_EQ(m.core[0].step, 4);
    EXPECT_EQ(m.core[2].step, 10);
    EXPECT_EQ(m.core[2].core_metric, final_core["core_metric"].get<double>());
    ASSERT_EQ(m.core[2].tasks.size(), final_core["results"].size());
    for (const auto& t : m.core[2].tasks) {
        EXPECT_EQ(t.accuracy, final_core["results"][t.task].get<double>()) << t.task;
        EXPECT_EQ(t.centered, final_core["centered_results"][t.task].get<double>()) << t.task;
    }
    EXPECT_EQ(metrics::read_view(run / metrics::kViewFile).core, m.core);

    // a 3-shot task draws its shots from the other kept examples: 3 per task is refused, naming the task
    r = test::run_cli({"train", s.experiment, "eval.core_every=4", "eval.core_max_per_task=3", "eval.core_bundle=" + bundle,
                       "--run-dir", (s.dir.path() / "run-three").string()});
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("eval.core_max_per_task: mc_three is 3-shot and draws its shots from the other evaluated examples, "
                         "so it needs more than 3 per task; 3 leaves 2 to draw from"),
              std::string::npos)
        << r.err;
    EXPECT_FALSE(fs::exists(s.dir.path() / "run-three"));
    r = test::run_cli({"eval", run.string(), "--core", "--bundle", bundle, "--max-per-task", "3"});
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("--max-per-task 3: mc_three is 3-shot"), std::string::npos) << r.err;

    r = test::run_cli({"train", s.experiment, "eval.core_every=4", "eval.core_bundle=" + (s.dir.path() / "none").string(),
                       "--run-dir", (s.dir.path() / "run-no-bundle").string()});
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("eval.core_every: CORE is on (every 4 steps and at the end) but its bundle cannot be used"),
              std::string::npos)
        << r.err;
    EXPECT_NE(r.err.find("none: no CORE bundle here (l3lab never downloads it"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(s.dir.path() / "run-no-bundle"));
    r = test::run_cli({"train", s.experiment, "--run-dir", (s.dir.path() / "run-no-core").string()});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_TRUE(json::parse(test::slurp(s.dir.path() / "run-no-core" / "summary.json"))["core_metric"].is_null());
}

// nanochat's own files hold model.state_dict(), an OrderedDict (with its _metadata), which libtorch's
// unpickler reads as None: torch's Python package re-saves it as a plain dict, and the run continues with the
// reference's bpb. Without that Python: exit 2, saying why and how to re-save it by hand.
TEST(NanochatCheckpoint, AnOrderedDictLoadsThroughTorchAndAnotherModelIsRefusedWithExitTwo) {
    L3LAB_REQUIRE_PARQUET();
    Workspace s;
    const fs::path fixture = kFixtures / "nanochat_checkpoint";
    fs::create_directories(s.dir.path() / "ordered");
    fs::copy(fixture / "meta_000010.json", s.dir.path() / "ordered" / "meta_000010.json");
    s.python("sd = torch.load('" + (fixture / "model_000010.pt").string() + "')\n"
             "o = collections.OrderedDict(sd)\n"
             "o._metadata = collections.OrderedDict({'': {'version': 1}})\n"
             "torch.save(o, d + '/ordered/model_000010.pt')\n");
    const double reference_bpb = json::parse(test::slurp(fixture / "meta_000010.json"))["val_bpb"];
    const fs::path tmp = s.dir.path() / "tmp";  // where the plain-dict copy is made, and removed
    fs::create_directories(tmp);
    const char* old_tmpdir = std::getenv("TMPDIR");
    const std::string saved = old_tmpdir ? old_tmpdir : "";
    setenv("TMPDIR", tmp.c_str(), 1);
    EXPECT_NEAR(s.first_bpb((s.dir.path() / "ordered").string(), "ordered"), reference_bpb, 1e-5 * reference_bpb);
    if (old_tmpdir) setenv("TMPDIR", saved.c_str(), 1);
    else unsetenv("TMPDIR");
    EXPECT_TRUE(fs::is_empty(tmp)) << "the temporary copy is removed";
    size_t files = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(s.dir.path() / "ordered")) ++files;
    EXPECT_EQ(files, 2u) << "the checkpoint directory is only read";

    // The executable itself, without torch's Python: the trainer's message goes to the process's stderr.
    const std::string log = (s.dir.path() / "ordered.log").string();
    EXPECT_EQ(test::wait_exit(test::spawn_l3lab({"train", s.experiment, "horizon.num_iterations=1", "--init-from",
                                                 (s.dir.path() / "ordered").string(), "--run-dir",
                                                 (s.dir.path() / "run-ordered-no-python").string()},
                                                log, [] { setenv("L3LAB_PYTHON", "/nonexistent/python", 1); })),
              2);
    EXPECT_NE(test::slurp(log).find("holds a collections.OrderedDict (as torch.save(model.state_dict()) writes), which "
                                    "libtorch's unpickler (torch::jit::pickle_load, torch 2.11) reads as None, and no "
                                    "Python with torch at /nonexistent/python (set L3LAB_PYTHON)"),
              std::string::npos)
        << test::slurp(log);
    auto r = test::run_cli({"train", s.experiment, "--init-from", (s.dir.path() / "nowhere").string()});
    EXPECT_EQ(r.code, 2);

    // Another model: refused field by field before any run directory exists.
    r = test::run_cli({"train", s.experiment, "model.depth=3", "model.window_pattern=SL", "--init-from", fixture.string(),
                       "--run-dir", (s.dir.path() / "run-other").string()});
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("meta_000010.json: --init-from: n_layer: the checkpoint has 2, the experiment 3"), std::string::npos)
        << r.err;
    EXPECT_NE(r.err.find("window_pattern: the checkpoint has \"L\", the experiment \"SL\""), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(s.dir.path() / "run-other"));
}

TEST(NanochatCheckpoint, ExportIsWhatTorchLoadReadsAndImportsBackWithTheSameBpb) {
    L3LAB_REQUIRE_PARQUET();
    Workspace s;
    const fs::path run = s.dir.path() / "trained";
    auto r = test::run_cli({"train", s.experiment, "--run-dir", run.string()});
    ASSERT_EQ(r.code, 0) << r.err;
    r = test::run_cli({"export", run.string(), "--output", (s.dir.path() / "base_checkpoints").string()});
    ASSERT_EQ(r.code, 0) << r.err;
    const fs::path out = s.dir.path() / "base_checkpoints" / "d2";
    ASSERT_TRUE(fs::exists(out / "model_000010.pt")) << r.out;
    s.python("from safetensors.torch import load_file\n"
             "sd = torch.load(d + '/base_checkpoints/d2/model_000010.pt', map_location='cpu', weights_only=True)\n"
             "ours = load_file('" + (run / "checkpoints" / "step-00000010" / "model.safetensors").string() + "')\n"
             "assert type(sd) is dict and sorted(sd) == sorted(ours), (list(sd), list(ours))\n"
             "assert all(torch.equal(sd[k], ours[k]) and sd[k].dtype == ours[k].dtype for k in ours)\n"
             "meta = json.load(open(d + '/base_checkpoints/d2/meta_000010.json'))\n"
             "fields = ['sequence_len', 'vocab_size', 'n_layer', 'n_head', 'n_kv_head', 'n_embd', 'window_pattern',\n"
             "          'l3_after_layers', 'l3_n_emb', 'l3_d_up', 'l3_k_max', 'l3_tie_kv']  # GPTConfig at b7629ef\n"
             "assert sorted(meta['model_config']) == sorted(fields), meta['model_config']\n"
             "assert meta['step'] == 10 and meta['max_seq_len'] == 64 and meta['total_batch_size'] == 128\n"
             "assert set(meta['loop_state']) == {'min_val_bpb', 'smooth_train_loss', 'total_training_time'}\n");
    double final_bpb = NAN;
    std::ifstream in(run / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
        const json j = json::parse(line);
        if (j["kind"] == "val" && j["step"] == 10) final_bpb = j["bpb"];
    }
    EXPECT_NEAR(s.first_bpb(out.string(), "reimported"), final_bpb, 1e-6 * final_bpb);
    r = test::run_cli({"export", run.string(), "--output", (s.dir.path() / "x").string(), "--format", "gguf"});
    EXPECT_EQ(r.code, 2);

    // CORE of the trained checkpoint on the synthetic bundle (parity with nanochat: CoreEval.* in
    // l3lab_torch_tests); a missing bundle is exit 2 before anything loads.
    r = test::run_cli({"eval", run.string(), "--core", "--bundle", (kFixtures / "core" / "eval_bundle").string(), "--json"});
    ASSERT_EQ(r.code, 0) << r.err;
    const json core = json::parse(r.out);
    EXPECT_EQ(core["results"].size(), 6u);
    EXPECT_EQ(core["max_per_task"], 500);
    double centered = 0;
    for (const auto& [label, value] : core["centered_results"].items()) centered += value.get<double>();
    EXPECT_NEAR(core["core_metric"].get<double>(), centered / 6, 1e-12);
    r = test::run_cli({"eval", run.string(), "--core", "--bundle", (s.dir.path() / "no-bundle").string()});
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("no-bundle: no CORE bundle here (l3lab never downloads it"), std::string::npos) << r.err;
}
#endif
