// `l3lab eval` and `l3lab sample` on a checkpoint: the model comes from its model.safetensors, the
// architecture and data from the run's frozen config.yaml (two levels up).
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/util/Exception.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <nlohmann/json.hpp>

#include "modules/torch/weights.h"
#include "runner/torch/nanochat_checkpoint.h"
#include "runner/train/nanochat_files.h"
#include "runner/config/experiment.h"
#include "runner/data/errors.h"
#include "runner/data/shard_set.h"
#include "runner/data/tokenizer.h"
#include "runner/plan/plan.h"
#include "runner/torch/core_eval.h"
#include "runner/torch/inference.h"
#include "runner/util/progress.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct Loaded {
    l3lab::config::Experiment config;
    l3lab::modules::GPT model{nullptr};
    at::Device device{at::kCPU};
};

// A nanochat checkpoint (model_<step>.pt + meta_<step>.json): the model from its meta's model_config (GPTConfig),
// the evaluation settings from the meta (device_batch_size, max_seq_len, base_train's eval_tokens) and the
// request (the tokenizer and validation shards, which a nanochat checkpoint does not name).
Loaded load_nanochat(const json& request) {
    const json& n = request.at("nanochat");
    const std::string file = l3lab::train::nanochat_model_file(n.at("dir").get<std::string>());
    const fs::path meta_path = l3lab::train::nanochat_meta_file(file);
    json meta;
    try {
        meta = json::parse(std::ifstream(meta_path));
    } catch (const std::exception& e) {
        throw l3lab::data::DataError(meta_path.string(), std::string("cannot read it: ") + e.what());
    }
    const json& mc = meta.at("model_config");
    Loaded l;
    l3lab::modules::GPTOptions o;
    o.sequence_len = mc.at("sequence_len");
    o.vocab_size = mc.at("vocab_size");
    o.n_layer = mc.at("n_layer");
    o.n_head = mc.at("n_head");
    o.n_kv_head = mc.at("n_kv_head");
    o.n_embd = mc.at("n_embd");
    o.window_pattern = mc.value("window_pattern", "L");  // checkpoint_manager's patch for old checkpoints
    std::stringstream after(mc.value("l3_after_layers", ""));
    for (std::string item; std::getline(after, item, ',');) {
        if (item.empty()) continue;
        l3lab::modules::L3Placement p;
        p.after_block = std::stoll(item);
        p.options.n_emb = mc.at("l3_n_emb");
        p.options.d_up = mc.value("l3_d_up", 0) > 0 ? mc["l3_d_up"].get<int64_t>() : 4 * o.n_embd;
        p.options.d_emb = o.n_embd;
        p.options.k_max = mc.value("l3_k_max", 512);
        p.options.tie_kv = mc.value("l3_tie_kv", true);
        o.l3.push_back(p);
    }
    if (const auto problems = o.validate(); !problems.empty())
        throw l3lab::data::DataError(meta_path.string(), "model_config: " + problems.front().field + ": " + problems.front().message);
    l.model = l3lab::modules::GPT(o);
    l3lab::modules::load_state_dict(l.model, l3lab::nanochat::read_state_dict(file), file);
    l.model->to(l.device);
    auto& c = l.config;
    c.model.sequence_len = meta.value("max_seq_len", o.sequence_len);
    c.batch.device_batch_size = meta.value("device_batch_size", 32);
    c.eval_tokens = meta.contains("user_config") ? meta["user_config"].value("eval_tokens", 20971520LL) : 20971520LL;
    c.data_tokenizer = n.value("tokenizer", "");
    c.data_val = n.value("val", "");
    return l;
}

Loaded load(const json& request) {
    if (request.contains("nanochat")) return load_nanochat(request);
    const std::string checkpoint_dir = request.at("checkpoint").get<std::string>();
    Loaded l;
    const fs::path run_dir = fs::path(checkpoint_dir).parent_path().parent_path();
    l.config = l3lab::config::load_experiment((run_dir / "config.yaml").string(), {});
    l3lab::plan::Plan plan = l3lab::plan::make_plan(l.config);
    l.model = l3lab::modules::GPT(plan.model);
    l3lab::modules::load_weights(l.model, (fs::path(checkpoint_dir) / "model.safetensors").string());
    l.model->set_cpu_bf16(l.config.precision == "bf16");  // evaluated as it was trained
    l.model->to(l.device);  // the CPU: the CUDA path is not built yet (see the trainer)
    return l;
}

// Where a command's output goes: the caller's stream, through a C callback across the module boundary.
struct Emitter {
    void (*emit)(const char*, void*);
    void* context;
    void operator()(const std::string& text) const { emit(text.c_str(), context); }
};

// Runs `body`, mapping failures to exit codes: 2 for config/data problems, 1 otherwise.
template <typename Body>
int guarded(Body body) {
    try {
        return body();
    } catch (const l3lab::config::ConfigException& e) {
        for (const auto& err : e.errors()) std::cerr << err.str() << "\n";
        return 2;
    } catch (const c10::Error& e) {
        std::cerr << "l3lab: error: " << e.what_without_backtrace() << "\n";
        return 1;
    } catch (const std::exception& e) {
        std::cerr << "l3lab: error: " << e.what() << "\n";
        return 1;
    }
}

// `eval --core`: nanochat's evaluate_core on the checkpoint, printed as base_eval prints it.
int eval_core(Loaded& l, const json& request, const Emitter& print) {
    const auto& c = l.config;
    if (!fs::exists(c.data_tokenizer))
        throw l3lab::config::ConfigException({{c.where("data.tokenizer"), "data.tokenizer",
                                               "CORE needs the tokenizer, and " + c.data_tokenizer + " does not exist"}});
    auto tokenizer = l3lab::data::load_tokenizer(c.data_tokenizer);
    const auto tasks = l3lab::data::read_core_bundle(request["core"]["bundle"].get<std::string>());
    const int64_t max_per_task = request["core"]["max_per_task"].get<int64_t>();
    l3lab::train::CoreProgressBars bars;
    const auto result = l3lab::train::evaluate_core(l.model, *tokenizer, tasks, max_per_task, l.device, {}, std::ref(bars));
    bars.finish();
    if (request.value("json", false)) {
        json out = {{"checkpoint", request["checkpoint"]}, {"core_metric", result.core_metric}, {"max_per_task", max_per_task}};
        for (const auto& t : result.tasks) {
            out["results"][t.label] = t.accuracy;
            out["centered_results"][t.label] = t.centered;
        }
        print(out.dump(2) + "\n");
        return 0;
    }
    static const char* kinds[] = {"multiple_choice", "schema", "language_modeling"};
    for (size_t i = 0; i < tasks.size(); ++i) {
        char line[512];
        std::snprintf(line, sizeof line, "%s (%lld-shot, type: %s): accuracy: %.4f | centered: %.4f\n", tasks[i].label.c_str(),
                      static_cast<long long>(tasks[i].num_fewshot), kinds[static_cast<int>(tasks[i].type)],
                      result.tasks[i].accuracy, result.tasks[i].centered);
        print(line);
    }
    char line[64];
    std::snprintf(line, sizeof line, "CORE metric: %.4f\n", result.core_metric);
    print(line);
    return 0;
}

}  // namespace

// {"checkpoint": dir, "tokens": N or 0 (the config's eval.tokens), "json": bool, "core": {bundle, max_per_task}}
extern "C" int l3lab_torch_eval(const char* request_json, void (*emit)(const char*, void*), void* context) {
    const Emitter print{emit, context};
    return guarded([&] {
        json request = json::parse(request_json);
        Loaded l = load(request);
        const auto& c = l.config;
        if (request.contains("core")) return eval_core(l, request, print);
        std::unique_ptr<l3lab::data::Tokenizer> tokenizer;
        l3lab::data::ShardSetOptions options;
        options.split = "val";
        if (fs::exists(c.data_tokenizer)) {
            tokenizer = l3lab::data::load_tokenizer(c.data_tokenizer);
            options.tokenizer_sha256 = tokenizer->sha256();
            options.vocab_size = tokenizer->vocab_size();
            options.bos_id = tokenizer->bos_id();
        }
        auto val = l3lab::data::ShardSet::open(c.data_val, options);
        const int64_t tokens = request.value("tokens", int64_t{0}) > 0 ? request["tokens"].get<int64_t>() : c.eval_tokens;
        l3lab::train::EvalShare share;  // one process, reading the run's row groups
        share.row_group_docs = static_cast<int>(c.data_row_group_docs);
        share.progress.enabled = true;  // stderr: a bar on a terminal, a line every 10 s otherwise
        auto r = l3lab::train::evaluate(l.model, val, tokenizer.get(), c.batch.device_batch_size, c.model.sequence_len,
                                        tokens, l.device, share);
        if (request.value("json", false)) {
            json out = {{"checkpoint", request["checkpoint"]}, {"tokens", r.tokens},
                        {"bpb", std::isnan(r.bpb) ? json(nullptr) : json(r.bpb)}, {"loss", r.loss}};
            print(out.dump(2) + "\n");
        } else {
            std::ostringstream line;
            line << "validation: " << r.tokens << " tokens, loss " << r.loss;
            if (!std::isnan(r.bpb)) line << ", " << r.bpb << " bits per byte";
            print(line.str() + "\n");
        }
        return 0;
    });
}

// {"checkpoint": dir, "prompts": [...], "max_tokens": N, "temperature": T, "top_k": K, "seed": S}
extern "C" int l3lab_torch_sample(const char* request_json, void (*emit)(const char*, void*), void* context) {
    const Emitter print{emit, context};
    return guarded([&] {
        json request = json::parse(request_json);
        Loaded l = load(request);
        if (!fs::exists(l.config.data_tokenizer))
            throw l3lab::config::ConfigException({{l.config.where("data.tokenizer"), "data.tokenizer",
                                                   "sampling needs the tokenizer, and " + l.config.data_tokenizer +
                                                       " does not exist"}});
        auto tokenizer = l3lab::data::load_tokenizer(l.config.data_tokenizer);
        l3lab::train::SampleOptions options;
        options.max_tokens = request.value("max_tokens", int64_t{32});
        options.temperature = request.value("temperature", 0.0);
        options.top_k = request.value("top_k", int64_t{0});
        options.seed = request.value("seed", uint64_t{42});
        const auto& prompts = request.at("prompts");
        for (size_t i = 0; i < prompts.size(); ++i) {
            // One report per prompt: its line ends before the prompt's text is printed.
            l3lab::util::Progress progress("sampling prompt " + std::to_string(i + 1) + " of " + std::to_string(prompts.size()),
                                           options.max_tokens, "tokens");
            options.on_token = [&progress](int64_t) { progress.advance(); };
            const std::string text = l3lab::train::generate(l.model, *tokenizer, prompts[i].get<std::string>(), options, l.device);
            progress.finish();
            print(text + "\n");
        }
        return 0;
    });
}

// {"checkpoint": dir, "output": dir}: the checkpoint as nanochat's model_<step>.pt + meta_<step>.json.
extern "C" int l3lab_torch_export(const char* request_json, void (*emit)(const char*, void*), void* context) {
    const Emitter print{emit, context};
    return guarded([&] {
        json request = json::parse(request_json);
        const std::string checkpoint = request.at("checkpoint").get<std::string>();
        const fs::path output = request.at("output").get<std::string>();
        Loaded l = load(json{{"checkpoint", checkpoint}});
        const auto& c = l.config;
        const l3lab::plan::Plan plan = l3lab::plan::make_plan(c);
        const auto& m = plan.model;
        // What nanochat's GPTConfig cannot say is refused, naming the key.
        std::vector<l3lab::config::ConfigError> errors;
        auto refuse = [&](const std::string& key, const std::string& why) { errors.push_back({c.where(key), key, why}); };
        if (m.softcap != 15.0) refuse("model.softcap", "nanochat's GPT has a logit softcap of 15");
        if (m.pad_vocab_to != 64) refuse("model.pad_vocab_to", "nanochat's GPT pads the vocabulary to a multiple of 64");
        std::string after_layers;
        for (const auto& p : m.l3) {
            after_layers += (after_layers.empty() ? "" : ",") + std::to_string(p.after_block);
            const auto& o = p.options, &first = m.l3.front().options;
            if (o.n_emb != first.n_emb || o.d_up != first.d_up || o.k_max != first.k_max || o.tie_kv != first.tie_kv)
                refuse("model.l3", "nanochat's GPTConfig gives every L3 layer the same n_emb, d_up, k_max and tie_kv");
            if (o.d_emb != m.n_embd) refuse("model.l3.d_emb", "nanochat's L3 values are n_embd wide");
        }
        if (!errors.empty()) throw l3lab::config::ConfigException(errors);
        const json state = json::parse(std::ifstream(fs::path(checkpoint) / "state.json"));
        const json& loop = state.at("loop");
        const long long step = state.at("step").get<long long>();
        const auto* l3 = m.l3.empty() ? nullptr : &m.l3.front().options;
        const json model_config = {{"sequence_len", m.sequence_len},
                                   {"vocab_size", m.vocab_size},
                                   {"n_layer", m.n_layer},
                                   {"n_head", m.n_head},
                                   {"n_kv_head", m.n_kv_head},
                                   {"n_embd", m.n_embd},
                                   {"window_pattern", m.window_pattern},
                                   {"l3_after_layers", after_layers},
                                   {"l3_n_emb", l3 ? l3->n_emb : 0},
                                   {"l3_d_up", l3 ? l3->d_up : 0},
                                   {"l3_k_max", l3 ? l3->k_max : c.model.l3.k_max},
                                   {"l3_tie_kv", l3 ? l3->tie_kv : true}};
        const long long total_batch = plan.total_batch_size;
        const json meta = {
            {"step", step},
            {"val_bpb", loop.at("val_bpb")},
            {"model_config", model_config},
            {"user_config", {{"run", c.name}, {"depth", m.n_layer}, {"max_seq_len", m.sequence_len},
                             {"window_pattern", m.window_pattern}, {"l3_after_layers", after_layers},
                             {"device_batch_size", c.batch.device_batch_size}, {"total_batch_size", total_batch},
                             {"num_iterations", plan.num_iterations},
                             {"exported_by", "l3lab export"}, {"l3lab_checkpoint", checkpoint}}},
            {"device_batch_size", c.batch.device_batch_size},
            {"max_seq_len", m.sequence_len},
            {"total_batch_size", total_batch},
            {"dataloader_state_dict", nullptr},  // l3lab's loader state has no (pq_idx, rg_idx) form
            {"loop_state", {{"min_val_bpb", loop.at("min_val_bpb")},
                            {"smooth_train_loss", loop.at("smooth_train_loss")},
                            {"total_training_time", loop.at("total_training_time")}}}};
        char stem[32];
        std::snprintf(stem, sizeof stem, "%06lld", step);
        fs::create_directories(output);
        const fs::path model_path = output / ("model_" + std::string(stem) + ".pt");
        const fs::path meta_path = output / ("meta_" + std::string(stem) + ".json");
        const std::string tmp_suffix = ".tmp-export";
        l3lab::nanochat::write_state_dict(model_path.string() + tmp_suffix, l3lab::modules::state_dict(l.model));
        {
            std::ofstream o(meta_path.string() + tmp_suffix);
            o << meta.dump(2);
            if (!o) throw std::runtime_error(meta_path.string() + ": cannot write");
        }
        fs::rename(model_path.string() + tmp_suffix, model_path);
        fs::rename(meta_path.string() + tmp_suffix, meta_path);
        print("wrote " + model_path.string() + " (" + std::to_string(fs::file_size(model_path)) + " bytes)\n");
        print("wrote " + meta_path.string() + "\n");
        return 0;
    });
}
