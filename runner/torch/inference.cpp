#include "runner/torch/inference.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "runner/data/bpb.h"
#include "runner/data/loader.h"
#include "runner/util/fault.h"
#include "runner/util/stop.h"

namespace l3lab::train {

at::Tensor to_device(const std::vector<int64_t>& values, int64_t rows, int64_t cols, const at::Device& device) {
    at::Tensor source = at::from_blob(const_cast<int64_t*>(values.data()), {rows, cols}, at::kLong);
    if (device.is_cpu()) return source.clone();
    // One copy into page-locked memory (libtorch's caching host allocator, reused once the transfer that
    // read it has finished), then an asynchronous transfer: the host goes on without waiting for it.
    at::Tensor pinned = at::empty({rows, cols}, at::TensorOptions().dtype(at::kLong).pinned_memory(true));
    pinned.copy_(source);
    return pinned.to(device, /*non_blocking=*/true);
}

EvalResult evaluate(modules::GPT& model, std::shared_ptr<const data::ShardSet> val, const data::Tokenizer* tokenizer,
                    int64_t batch, int64_t sequence_len, int64_t tokens, const at::Device& device,
                    const EvalShare& share) {
    torch::NoGradGuard no_grad;
    data::LoaderOptions options;
    options.batch_size = static_cast<int>(batch);
    options.sequence_len = static_cast<int>(sequence_len);
    options.rank = share.rank;
    options.world_size = share.world_size;
    options.row_group_docs = share.row_group_docs;
    data::BestFitLoader loader(std::move(val), options);
    const int64_t steps = tokens / (batch * sequence_len * share.world_size);
    data::BpbSums sums;
    double loss_sum = 0;
    int64_t counted = 0;
    data::Batch b;
    util::Progress progress("evaluation", steps, "batches", share.progress);
    const int64_t stop_every = share.world_size > 1 ? kStopCheckBatches : 1;
    for (int64_t i = 0; i < steps; ++i) {
        if (i > 0 && i % stop_every == 0 && share.stop && share.stop())
            throw util::Interrupted(util::stop_reason() + " during the evaluation (batch " +
                                    std::to_string(i) + " of " + std::to_string(steps) + ")");
        loader.next(b);
        at::Tensor x = to_device(b.inputs, batch, sequence_len, device);
        at::Tensor y = to_device(b.targets, batch, sequence_len, device);
        at::Tensor losses = model->loss(x, y, modules::LossReduction::None).to(at::kCPU).contiguous();
        const float* l = losses.data_ptr<float>();
        for (int64_t k = 0; k < losses.numel(); ++k)
            if (b.targets[k] >= 0) loss_sum += l[k], ++counted;
        if (tokenizer)
            data::accumulate_bpb({l, static_cast<size_t>(losses.numel())}, b.targets, tokenizer->token_bytes(), sums);
        if (i == 0) fault::point("eval:mid");  // test hook (docs/reliability.md)
        progress.advance();
    }
    progress.finish();
    if (share.sum) {  // every rank's totals; int64 counts are exact in a double up to 2^53
        std::vector<double> totals{loss_sum, static_cast<double>(counted), sums.nats, static_cast<double>(sums.bytes)};
        share.sum(totals);
        loss_sum = totals[0];
        counted = static_cast<int64_t>(totals[1]);
        sums.nats = totals[2];
        sums.bytes = static_cast<int64_t>(totals[3]);
    }
    EvalResult r;
    r.tokens = counted;
    r.loss = counted ? loss_sum / static_cast<double>(counted) : NAN;
    if (tokenizer) r.bpb = data::bits_per_byte(sums);
    return r;
}

std::string generate(modules::GPT& model, const data::Tokenizer& tokenizer, const std::string& prompt,
                     const SampleOptions& options, const at::Device& device) {
    torch::NoGradGuard no_grad;
    std::vector<int32_t> encoded = tokenizer.encode(prompt);
    std::vector<int64_t> context{tokenizer.bos_id()};
    context.insert(context.end(), encoded.begin(), encoded.end());
    const int64_t limit = model->options.sequence_len;
    if (static_cast<int64_t>(context.size()) > limit) context.erase(context.begin(), context.end() - limit);
    const int64_t room = std::max<int64_t>(0, std::min<int64_t>(options.max_tokens, limit * 10 - static_cast<int64_t>(context.size())));
    modules::KVCache cache = model->new_cache(1, static_cast<int64_t>(context.size()) + room);
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
    at::Tensor logits = model->forward_cached(to_device(context, 1, static_cast<int64_t>(context.size()), device), cache);
    std::vector<int32_t> generated;
    for (int64_t i = 0; i < room; ++i) {
        at::Tensor last = logits.select(1, logits.size(1) - 1).squeeze(0).to(at::kCPU);  // [V]
        int64_t next;
        if (options.temperature <= 0) {
            next = last.argmax().item<int64_t>();
        } else {
            if (options.top_k > 0 && options.top_k < last.size(0)) {
                at::Tensor kth = std::get<0>(last.topk(options.top_k)).select(0, options.top_k - 1);
                last = last.masked_fill(last < kth, -INFINITY);
            }
            at::Tensor probs = at::softmax(last / options.temperature, -1);
            next = at::multinomial(probs, 1, false, generator).item<int64_t>();
        }
        generated.push_back(static_cast<int32_t>(next));
        if (options.on_token) options.on_token(static_cast<int64_t>(generated.size()));
        if (i + 1 < room) logits = model->forward_cached(to_device({next}, 1, 1, device), cache);
    }
    return prompt + tokenizer.decode(generated);
}

}  // namespace l3lab::train
