// Evaluation and generation shared by the trainer and the eval / sample commands.
#pragma once

#include <ATen/core/Tensor.h>

#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "modules/torch/gpt.h"
#include "runner/data/shard_set.h"
#include "runner/data/tokenizer.h"
#include "runner/util/progress.h"

namespace l3lab::train {

struct EvalResult {
    double bpb = NAN;   // bits per byte (NaN without a tokenizer)
    double loss = NAN;  // mean per-token loss in nats
    int64_t tokens = 0;
};

// Which part of the evaluation this process does. Data parallelism: rank `rank` of `world_size` reads its
// own row groups, as the training loader does, and `sum` adds the float64 totals of every rank in place
// (nanochat's all_reduce of total_nats and total_bytes).
struct EvalShare {
    int rank = 0;
    int world_size = 1;
    int row_group_docs = 1024;
    std::function<void(std::vector<double>&)> sum;  // empty: one process
    // Asked between batches (every batch with one process, every kStopCheckBatches with several, the same
    // batches on every rank): true abandons the evaluation with util::Interrupted. Empty: never asked.
    std::function<bool()> stop;
    util::ProgressOptions progress{.enabled = false, .plain_line = {}};  // `l3lab eval` and the trainer show it
};

// With several ranks the stop check is a collective: asked every this many batches.
constexpr int64_t kStopCheckBatches = 4;

// nanochat's evaluate_bpb: tokens // (batch x sequence_len x world_size) batches per rank of a fresh
// best-fit loader over the validation shards.
EvalResult evaluate(modules::GPT& model, std::shared_ptr<const data::ShardSet> val, const data::Tokenizer* tokenizer,
                    int64_t batch, int64_t sequence_len, int64_t tokens, const at::Device& device,
                    const EvalShare& share = {});

struct SampleOptions {
    int64_t max_tokens = 16;
    double temperature = 0.0;  // 0: greedy
    int64_t top_k = 0;         // 0: no top-k filter
    uint64_t seed = 42;
    // Called after each generated token with the count so far; may throw (util::Interrupted) to stop.
    std::function<void(int64_t)> on_token;
};

// BOS + the prompt's tokens, then up to max_tokens tokens decoded with a KV cache (the prompt's context
// is cut to the model's sequence length). Returns the prompt followed by the generated text.
std::string generate(modules::GPT& model, const data::Tokenizer& tokenizer, const std::string& prompt,
                     const SampleOptions& options, const at::Device& device);

at::Tensor to_device(const std::vector<int64_t>& values, int64_t rows, int64_t cols, const at::Device& device);

}  // namespace l3lab::train
