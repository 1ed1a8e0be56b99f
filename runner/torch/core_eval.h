// The CORE metric on a model: nanochat's evaluate_task / evaluate_core (core_eval.py, base_eval.py at
// b7629ef) over the rows runner/data/core_tasks.h builds. Each example's rows, padded with BOS, go through
// the model once: a multiple-choice or schema example is right when its gold row has the lowest mean loss
// over the scored span (the first of equal means), a language-modeling example when the argmax predicts
// every continuation token. A task's accuracy is the float32 mean of its examples, centred against the
// random baseline; CORE is the mean of the centred accuracies.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <vector>

#include "modules/torch/gpt.h"
#include "runner/data/core_tasks.h"

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

// `progress(task_label, examples_done, examples)` after every example. Throws data::DataError for an
// example longer than the model's rotary table (10 x sequence_len, as nanochat's).
CoreResult evaluate_core(modules::GPT& model, const data::Tokenizer& tokenizer, const std::vector<data::CoreTask>& tasks,
                         int64_t max_per_task, const at::Device& device,
                         const std::function<void(const std::string&, size_t, size_t)>& progress = {});

}  // namespace l3lab::train
