// Parity with the reference (CPU, float32): the same weights and batch give nanochat's logits, loss and
// gradients. Goldens under tests/fixtures/model/ come from tools/reference/make_model_fixtures.py, which
// runs nanochat b7629ef itself.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "modules/l3/allocation.h"
#include "modules/torch/gpt.h"
#include "modules/torch/weights.h"
#include "test_util.h"

using namespace l3lab;
using namespace l3lab::modules;
using nlohmann::json;

namespace {

const std::filesystem::path kFixtures = test::kSourceDir / "tests" / "fixtures" / "model";

json read_json(const std::filesystem::path& p) {
    std::ifstream in(p);
    return json::parse(in);
}

std::map<std::string, at::Tensor> read_tensors(const std::filesystem::path& p) {
    std::map<std::string, at::Tensor> out;
    for (const auto& r : io::read_safetensors(p.string()).tensors) out[r.name] = to_tensor(r);
    return out;
}

GPTOptions options_from(const json& c) {
    GPTOptions o;
    o.sequence_len = c["sequence_len"];
    o.vocab_size = c["vocab_size"];
    o.n_layer = c["n_layer"];
    o.n_head = c["n_head"];
    o.n_kv_head = c["n_kv_head"];
    o.n_embd = c["n_embd"];
    o.window_pattern = c["window_pattern"];
    std::string layers = c.value("l3_after_layers", "");
    for (size_t pos = 0; pos < layers.size();) {
        size_t comma = layers.find(',', pos);
        std::string item = layers.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        L3LayerOptions l3;
        l3.n_emb = c["l3_n_emb"];
        l3.d_up = c["l3_d_up"].get<int64_t>() > 0 ? c["l3_d_up"].get<int64_t>() : 4 * o.n_embd;
        l3.d_emb = o.n_embd;
        l3.k_max = c["l3_k_max"];
        l3.tie_kv = c["l3_tie_kv"];
        o.l3.push_back({std::stoll(item), l3});
        if (comma == std::string::npos) break;
        pos = comma + 1;
    }
    std::sort(o.l3.begin(), o.l3.end(), [](auto& a, auto& b) { return a.after_block < b.after_block; });
    return o;
}

// Largest absolute difference relative to the largest reference magnitude.
double relative_error(const at::Tensor& actual, const at::Tensor& expected) {
    const double scale = std::max(expected.abs().max().item<double>(), 1e-12);
    return (actual - expected).abs().max().item<double>() / scale;
}

}  // namespace

class ModelParity : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelParity, LogitsLossAndEveryGradientMatchTheReference) {
    const auto dir = kFixtures / GetParam();
    json c = read_json(dir / "case.json");
    GPT model(options_from(c["gpt_config"]));
    load_weights(model, (dir / "weights.safetensors").string());
    auto batch = read_tensors(dir / "batch.safetensors");
    auto expected = read_tensors(dir / "outputs.safetensors");

    at::Tensor logits = model->forward(batch["idx"]);
    EXPECT_LE((logits - expected["logits"]).abs().max().item<double>(), 1e-4);

    at::Tensor losses = model->loss(batch["idx"], batch["targets"], LossReduction::None);
    EXPECT_LE((losses - expected["losses_none"]).abs().max().item<double>(), 1e-5);

    at::Tensor loss = model->loss(batch["idx"], batch["targets"]);
    EXPECT_NEAR(loss.item<double>(), c["loss_mean"].get<double>(), 1e-5);
    loss.backward();
    int checked = 0;
    double worst = 0;
    for (const auto& item : model->named_parameters(true)) {
        SCOPED_TRACE(item.key());
        auto it = expected.find("grad." + item.key());
        ASSERT_NE(it, expected.end()) << "no reference gradient";
        ASSERT_TRUE(item.value().grad().defined());
        const double error = relative_error(item.value().grad(), it->second);
        EXPECT_LE(error, 1e-4);
        worst = std::max(worst, error);
        ++checked;
    }
    std::cout << "[parity] " << GetParam() << ": |loss - reference| = "
              << std::fabs(loss.item<double>() - c["loss_mean"].get<double>()) << ", worst gradient error = " << worst
              << " (relative to the largest reference gradient of each tensor), " << checked << " tensors\n";
    EXPECT_EQ(checked, static_cast<int>(model->named_parameters(true).size()));
}

TEST_P(ModelParity, FrequencyAllocationReproducesTheReferenceBounds) {
    const auto dir = kFixtures / GetParam();
    if (!std::filesystem::exists(dir / "alloc_sample.safetensors")) GTEST_SKIP() << "dense case";
    json c = read_json(dir / "case.json")["gpt_config"];
    at::Tensor sample = read_tensors(dir / "alloc_sample.safetensors").begin()->second.to(at::kInt);
    std::vector<l3::TokenSequence> rows;
    for (int64_t r = 0; r < sample.size(0); ++r)
        rows.emplace_back(sample[r].data_ptr<int32_t>(), sample[r].data_ptr<int32_t>() + sample.size(1));
    auto alloc = l3::frequency_allocation(rows, c["vocab_size"], c["l3_n_emb"], c["l3_k_max"]);
    auto bounds = l3::bounds_from_allocation(alloc.rows);
    auto weights = read_tensors(dir / "weights.safetensors");
    for (const auto& [name, tensor] : weights) {
        if (name.find(".bounds") == std::string::npos) continue;
        std::vector<int64_t> file(tensor.data_ptr<int64_t>(), tensor.data_ptr<int64_t>() + tensor.numel());
        EXPECT_EQ(file, bounds) << name;
    }
}

INSTANTIATE_TEST_SUITE_P(Reference, ModelParity,
                         ::testing::Values("two_l3_tied", "one_l3_untied", "gqa_sl_dense", "gqa_l3_window"));

class L3LayerParity : public ::testing::TestWithParam<std::string> {};

TEST_P(L3LayerParity, OutputAndGradientsMatchTheReferenceLayer) {
    const auto dir = kFixtures / "l3_layer" / GetParam();
    json c = read_json(dir / "case.json");
    auto weights = read_tensors(dir / "weights.safetensors");
    auto inputs = read_tensors(dir / "inputs.safetensors");
    auto expected = read_tensors(dir / "outputs.safetensors");
    const bool tied = weights.count("kv_weight") > 0;
    at::Tensor table = tied ? weights["kv_weight"] : weights["k_weight"];
    L3LayerOptions o;
    o.n_emb = table.size(0);
    o.d_up = weights["w_up.weight"].size(0);
    o.d_emb = tied ? table.size(1) : weights["v_weight"].size(1);
    o.tie_kv = tied;
    const int64_t C = table.size(1);
    L3Layer layer(o, C);
    {
        torch::NoGradGuard no_grad;
        for (auto& item : layer->named_parameters(true)) item.value().copy_(weights.at(item.key()));
    }
    layer->set_bounds(weights["bounds"]);
    at::Tensor x = inputs["x"].clone().requires_grad_(true);
    at::Tensor out = layer->forward(x, inputs["ids"]);
    EXPECT_LE(relative_error(out.detach(), expected["out"]), 1e-5);
    (out * inputs["g"]).sum().backward();
    EXPECT_LE(relative_error(x.grad(), expected["grad.x"]), 1e-4);
    for (const auto& item : layer->named_parameters(true)) {
        SCOPED_TRACE(item.key());
        EXPECT_LE(relative_error(item.value().grad(), expected.at("grad." + item.key())), 1e-4);
    }
    (void)c;
}

INSTANTIATE_TEST_SUITE_P(Reference, L3LayerParity, ::testing::Values("tied", "untied"));

TEST(Weights, SaveLoadRoundTripAndMismatchesAreListed) {
    test::TempDir dir;
    json c = read_json(kFixtures / "two_l3_tied" / "case.json");
    GPT a(options_from(c["gpt_config"]));
    load_weights(a, (kFixtures / "two_l3_tied" / "weights.safetensors").string());
    const std::string path = (dir.path() / "w.safetensors").string();
    save_weights(a, path);
    GPT b(options_from(c["gpt_config"]));
    load_weights(b, path);
    auto sa = state_dict(a), sb = state_dict(b);
    ASSERT_EQ(sa.size(), sb.size());
    for (size_t i = 0; i < sa.size(); ++i) EXPECT_TRUE(at::equal(sa[i].second, sb[i].second)) << sa[i].first;

    // A model of another shape: every mismatch in one error, and the model is left untouched.
    GPTOptions other = options_from(c["gpt_config"]);
    other.n_layer = 3;
    other.l3.pop_back();
    GPT wrong(other);
    const at::Tensor before = wrong->lm_head->weight.clone();
    try {
        load_weights(wrong, path);
        FAIL() << "expected a WeightsError";
    } catch (const WeightsError& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("unexpected"), std::string::npos) << what;
        EXPECT_NE(what.find("transformer.h.3.attn.c_q.weight"), std::string::npos) << what;
        EXPECT_NE(what.find("l3_layers.2.kv_weight"), std::string::npos) << what;
    }
    EXPECT_TRUE(at::equal(before, wrong->lm_head->weight));
}

// The reverse direction: weights written by l3lab, read by Python's safetensors, have exactly the
// reference state_dict's names, shapes and dtypes (what load_state_dict(strict=True) checks), and a
// model initialised by l3lab computes the reference's loss once loaded back.
TEST(Weights, FilesWrittenByL3labReadInPythonAsTheReferenceStateDict) {
    const std::string python = L3LAB_PYTHON;
    if (python.empty() || !std::filesystem::exists(python)) GTEST_SKIP() << "no Python with safetensors at '" << python << "'";
    test::TempDir dir;
    for (const char* name : {"two_l3_tied", "one_l3_untied", "gqa_sl_dense"}) {
        SCOPED_TRACE(name);
        json c = read_json(kFixtures / name / "case.json");
        GPT model(options_from(c["gpt_config"]));
        load_weights(model, (kFixtures / name / "weights.safetensors").string());
        const std::string path = (dir.path() / (std::string(name) + ".safetensors")).string();
        save_weights(model, path);
        const std::string script = dir.write("check.py",
            "import json, sys\n"
            "from safetensors import safe_open\n"
            "ref = json.load(open(sys.argv[2]))['state_dict']\n"
            "names = {'float32': 'F32', 'int64': 'I64', 'bfloat16': 'BF16'}\n"
            "with safe_open(sys.argv[1], 'pt') as f:\n"
            "    got = {k: (str(f.get_slice(k).get_dtype()), list(f.get_slice(k).get_shape())) for k in f.keys()}\n"
            "want = {k: (names[v['dtype']], v['shape']) for k, v in ref.items()}\n"
            "assert got == want, (sorted(set(got) ^ set(want)), [k for k in got if k in want and got[k] != want[k]])\n"
            "print('ok', len(got))\n");
        const std::string cmd = python + " " + script + " " + path + " " + (kFixtures / name / "case.json").string() + " 2>&1";
        FILE* pipe = popen(cmd.c_str(), "r");
        std::string out;
        char buf[512];
        while (fgets(buf, sizeof buf, pipe)) out += buf;
        EXPECT_EQ(pclose(pipe), 0) << out;
        EXPECT_EQ(out.rfind("ok ", 0), 0u) << out;
    }
}

// libtorch shares PyTorch's CPU generator: the same seed and the same init calls in the same order give
// the reference's initial weights bit for bit.
TEST(Init, SeededInitIsTheReferencesBitForBit) {
    const auto dir = kFixtures / "init";
    json c = read_json(dir / "case.json");
    GPT model(options_from(c["gpt_config"]));
    at::manual_seed(c["seed"].get<uint64_t>());
    model->init_weights();
    auto expected = read_tensors(dir / "weights.safetensors");
    int compared = 0;
    for (const auto& item : model->named_parameters(true)) {
        ASSERT_TRUE(expected.count(item.key())) << item.key();
        EXPECT_TRUE(at::equal(item.value(), expected[item.key()])) << item.key();
        ++compared;
    }
    EXPECT_EQ(compared, static_cast<int>(expected.size()));
}
