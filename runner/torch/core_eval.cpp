#include "runner/torch/core_eval.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cmath>
#include <limits>

#include "runner/data/errors.h"

namespace l3lab::train {

namespace {

// evaluate_example after the rows are built: one forward of the padded batch.
bool example_correct(modules::GPT& model, const data::CoreTask& task, const data::CoreRows& rows, int64_t bos, int64_t gold,
                     const at::Device& device) {
    size_t longest = 0;
    for (const auto& t : rows.tokens) longest = std::max(longest, t.size());
    const int64_t limit = model->options.sequence_len * 10;
    if (static_cast<int64_t>(longest) > limit)
        throw data::DataError(task.label, "an example of " + std::to_string(longest) + " tokens is longer than the model's " +
                                              std::to_string(limit) + "-position rotary table (10 x sequence_len)");
    const int64_t B = static_cast<int64_t>(rows.tokens.size()), T = static_cast<int64_t>(longest);
    at::Tensor input = at::full({B, T}, bos, at::kLong);
    auto acc = input.accessor<int64_t, 2>();
    for (int64_t i = 0; i < B; ++i)
        for (size_t j = 0; j < rows.tokens[static_cast<size_t>(i)].size(); ++j) acc[i][static_cast<int64_t>(j)] = rows.tokens[static_cast<size_t>(i)][j];
    at::Tensor ids = input.to(device);
    at::Tensor logits = model->forward(ids).to(at::kFloat);  // [B, T, V], soft-capped
    at::Tensor targets = at::roll(ids, {-1}, {1});
    at::Tensor losses = at::cross_entropy_loss(logits.view({B * T, -1}), targets.view({B * T}), {}, at::Reduction::None)
                            .view({B, T})
                            .cpu();
    losses.select(1, T - 1).fill_(std::numeric_limits<float>::quiet_NaN());
    if (task.type == data::CoreTaskType::LanguageModeling) {
        const int64_t si = rows.starts[0], ei = rows.ends[0];
        at::Tensor predicted = logits.argmax(-1).cpu().select(0, 0).slice(0, si - 1, ei - 1);
        at::Tensor actual = input.select(0, 0).slice(0, si, ei);
        return at::equal(predicted, actual);
    }
    int64_t best = 0;
    double best_loss = 0;
    for (int64_t i = 0; i < B; ++i) {
        // losses[i, si-1:ei-1].mean().item(): a float32 mean, as the reference takes it
        const double mean = losses.select(0, i).slice(0, rows.starts[static_cast<size_t>(i)] - 1, rows.ends[static_cast<size_t>(i)] - 1)
                                .mean()
                                .item<float>();
        if (i == 0 || mean < best_loss) best = i, best_loss = mean;  // list.index(min(...)): the first minimum
    }
    return best == gold;
}

}  // namespace

CoreResult evaluate_core(modules::GPT& model, const data::Tokenizer& tokenizer, const std::vector<data::CoreTask>& tasks,
                         int64_t max_per_task, const at::Device& device,
                         const std::function<void(const std::string&, size_t, size_t)>& progress) {
    torch::NoGradGuard no_grad;
    model->eval();
    CoreResult result;
    double centered_sum = 0;
    for (const auto& task : tasks) {
        const std::vector<data::CoreExample> data = data::core_subsample(task.examples, max_per_task);
        CoreTaskResult r;
        r.label = task.label;
        at::Tensor correct = at::zeros({static_cast<int64_t>(data.size())}, at::kFloat);
        for (size_t idx = 0; idx < data.size(); ++idx) {
            const data::CoreRows rows = data::core_rows(task, data, idx, tokenizer);
            const bool ok = example_correct(model, task, rows, tokenizer.bos_id(), data[idx].gold, device);
            r.correct.push_back(ok);
            correct[static_cast<int64_t>(idx)] = ok ? 1.0f : 0.0f;
            if (progress) progress(task.label, idx + 1, data.size());
        }
        r.accuracy = data.empty() ? 0.0 : static_cast<double>(correct.mean().item<float>());
        const double baseline = 0.01 * task.random_baseline;
        r.centered = (r.accuracy - baseline) / (1.0 - baseline);
        centered_sum += r.centered;
        result.tasks.push_back(std::move(r));
    }
    result.core_metric = tasks.empty() ? 0.0 : centered_sum / static_cast<double>(tasks.size());
    return result;
}

}  // namespace l3lab::train
