// The CORE metric on a model: nanochat's evaluate_task / evaluate_core (core_eval.py, base_eval.py at
// b7629ef) over the rows runner/data/core_tasks.h builds. Each example's rows, padded with BOS, go through
// the model once: a multiple-choice or schema example is right when its gold row has the lowest mean loss
// over the scored span (the first of equal means), a language-modeling example when the argmax predicts
// every continuation token. A task's accuracy is the float32 mean of its examples, centred against the
// random baseline; CORE is the mean of the centred accuracies. With several ranks, as nanochat's
// evaluate_task: rank r evaluates examples r, r + world_size, ... and the verdicts are summed across ranks,
// so every rank ends with the same result as one process.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "modules/torch/gpt.h"
#include "runner/data/core_tasks.h"
#include "runner/torch/inference.h"

namespace l3lab::train {

struct CoreTaskResult {
    std::string label;
    double accuracy = 0;
    double centered = 0;
    std::vector<bool> correct;  // per example, in evaluation order
};

struct CoreResult {
    std::vector<CoreTaskResult> tasks;
    double core_metric = 0;
};

// `share`: rank, world_size, sum (the verdicts are summed with it) and stop, asked between examples (every
// kStopCheckBatches rounds of world_size examples with several ranks, the same rounds on every rank; true
// abandons the evaluation with util::Interrupted); its row_group_docs and progress are not used.
// `progress(task_label, examples_done, examples)` after every example (with several ranks: after every
// round, counting the round's examples on all ranks). Throws data::DataError for an example longer than
// the model's rotary table (10 x sequence_len, as nanochat's).
CoreResult evaluate_core(modules::GPT& model, const data::Tokenizer& tokenizer, const std::vector<data::CoreTask>& tasks,
                         int64_t max_per_task, const at::Device& device, const EvalShare& share = {},
                         const std::function<void(const std::string&, size_t, size_t)>& progress = {});

// A progress bar per task ("CORE <task>": examples done, rate) for evaluate_core's `progress`:
// pass std::ref(bars), then finish().
class CoreProgressBars {
public:
    explicit CoreProgressBars(util::ProgressOptions options = {}) : options_(std::move(options)) {}
    void operator()(const std::string& label, size_t done, size_t total);
    void finish();

private:
    util::ProgressOptions options_;
    std::unique_ptr<util::Progress> bar_;
    std::string current_;
};

}  // namespace l3lab::train
