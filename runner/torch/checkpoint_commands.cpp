// `l3lab eval` and `l3lab sample` on a checkpoint: the model comes from its model.safetensors, the
// architecture and data from the run's frozen config.yaml (two levels up).
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/util/Exception.h>

#include <filesystem>
#include <iostream>
#include <sstream>
#include <nlohmann/json.hpp>

#include "modules/torch/weights.h"
#include "runner/config/experiment.h"
#include "runner/data/shard_set.h"
#include "runner/data/tokenizer.h"
#include "runner/plan/plan.h"
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

Loaded load(const std::string& checkpoint_dir) {
    Loaded l;
    const fs::path run_dir = fs::path(checkpoint_dir).parent_path().parent_path();
    l.config = l3lab::config::load_experiment((run_dir / "config.yaml").string(), {});
    l3lab::plan::Plan plan = l3lab::plan::make_plan(l.config);
    l.model = l3lab::modules::GPT(plan.model);
    l3lab::modules::load_weights(l.model, (fs::path(checkpoint_dir) / "model.safetensors").string());
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

}  // namespace

// {"checkpoint": dir, "tokens": N or 0 (the config's eval.tokens), "json": bool}
extern "C" int l3lab_torch_eval(const char* request_json, void (*emit)(const char*, void*), void* context) {
    const Emitter print{emit, context};
    return guarded([&] {
        json request = json::parse(request_json);
        Loaded l = load(request.at("checkpoint").get<std::string>());
        const auto& c = l.config;
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
        Loaded l = load(request.at("checkpoint").get<std::string>());
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
