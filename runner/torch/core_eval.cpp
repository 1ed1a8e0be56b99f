#include "runner/torch/core_eval.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cmath>
#include <limits>

#include "runner/data/errors.h"
#include "runner/util/stop.h"

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
                         int64_t max_per_task, const at::Device& device, const EvalShare& share,
                         const std::function<void(const std::string&, size_t, size_t)>& progress) {
    torch::NoGradGuard no_grad;
    model->eval();
    const size_t rank = static_cast<size_t>(share.rank), world = static_cast<size_t>(share.world_size);
    const size_t stop_every = world > 1 ? kStopCheckBatches : 1;
    CoreResult result;
    double centered_sum = 0;
    for (const auto& task : tasks) {
        const std::vector<data::CoreExample> data = data::core_subsample(task.examples, max_per_task);
        // Rounds of world_size examples: every rank runs the same rounds, so the collective stop checks
        // line up even when the ranks' shares differ by one.
        std::vector<double> verdicts(data.size(), 0.0);
        const size_t rounds = (data.size() + world - 1) / world;
        for (size_t round = 0; round < rounds; ++round) {
            if (round > 0 && round % stop_every == 0 && share.stop && share.stop())
                throw util::Interrupted(util::stop_reason() + " during the CORE evaluation (" + task.label + ", example " +
                                        std::to_string(round * world) + " of " + std::to_string(data.size()) + ")");
            const size_t idx = round * world + rank;
            if (idx < data.size()) {
                const data::CoreRows rows = data::core_rows(task, data, idx, tokenizer);
                verdicts[idx] = example_correct(model, task, rows, tokenizer.bos_id(), data[idx].gold, device) ? 1.0 : 0.0;
            }
            if (progress) progress(task.label, std::min(data.size(), (round + 1) * world), data.size());
        }
        if (world > 1 && share.sum) share.sum(verdicts);  // nanochat's all_reduce(correct, SUM)
        CoreTaskResult r;
        r.label = task.label;
        for (const double v : verdicts) r.correct.push_back(v > 0.5);
        // correct.mean().item(): the float32 mean of the 0/1 verdicts, as the reference takes it
        r.accuracy = data.empty() ? 0.0 : static_cast<double>(at::tensor(verdicts).to(at::kFloat).mean().item<float>());
        const double baseline = 0.01 * task.random_baseline;
        r.centered = (r.accuracy - baseline) / (1.0 - baseline);
        centered_sum += r.centered;
        result.tasks.push_back(std::move(r));
    }
    result.core_metric = tasks.empty() ? 0.0 : centered_sum / static_cast<double>(tasks.size());
    return result;
}

void CoreProgressBars::operator()(const std::string& label, size_t done, size_t total) {
    if (label != current_) {
        if (bar_) bar_->finish();
        current_ = label;
        bar_ = std::make_unique<util::Progress>("CORE " + label, static_cast<int64_t>(total), "examples", options_);
    }
    bar_->set(static_cast<int64_t>(done));
}

void CoreProgressBars::finish() {
    if (bar_) bar_->finish();
}

}  // namespace l3lab::train
