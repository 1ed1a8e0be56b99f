#include "runner/plan/plan.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdio>

#include "modules/shapes/size_check.h"
#include "runner/config/model_options.h"
#include "runner/config/schema.h"
#include "runner/util/format.h"

namespace l3lab::plan {

int64_t python_round(double x) {
    // Outside int64 (or NaN) the conversion would be undefined; saturate instead. Callers check ranges.
    if (!(std::fabs(x) < 9.2e18)) return x > 0 ? INT64_MAX : INT64_MIN;
    // The default floating-point environment rounds to nearest, ties to even, like Python's round().
    return static_cast<int64_t>(std::nearbyint(x));
}


// Evaluation and samples are forward passes next to training's forward + backward (3 forwards per token).
// When they are more work than the training itself (an evaluation of 163,840 batches before a 1-step run),
// say so with the key to change: the run would otherwise spend its time where nobody looks.
static void warn_about_side_work(const config::Experiment& e, Plan& p, int world_size) {
    const int64_t N = p.num_iterations;
    const double training = 3.0 * static_cast<double>(N) * static_cast<double>(p.total_batch_size);
    // Steps 0 and N, and every multiple of `every` between them (the loop's schedule).
    const int64_t evals = N == 0 ? 1 : 2 + (e.eval_every > 0 ? (N - 1) / e.eval_every : 0);
    const int64_t eval_batch = e.batch.device_batch_size * e.model.sequence_len * world_size;
    const int64_t batches = e.eval_tokens / eval_batch;  // per evaluation, per rank
    const double evaluation = static_cast<double>(evals) * static_cast<double>(batches) * static_cast<double>(eval_batch);
    if (evaluation > training)
        p.warnings.push_back(fmt::format(
            "evaluation is {}x the training's own work: {} evaluation{} of {} batches ({} tokens, eval.tokens) for {} "
            "step{} of {} tokens; lower eval.tokens{}",
            training > 0 ? util::group_digits(static_cast<int64_t>(std::ceil(evaluation / training))) : std::string("infinitely"),
            util::group_digits(evals), evals == 1 ? "" : "s", util::group_digits(batches),
            util::group_digits(batches * eval_batch), util::group_digits(N), N == 1 ? "" : "s",
            util::group_digits(p.total_batch_size), evals > 2 ? " or raise eval.every" : ""));
    // Samples: steps N and every multiple of sample.every before it; a token per forward, at most 10 x T.
    const int64_t sample_events = N == 0 ? 1 : 1 + (e.sample_every > 0 ? (N - 1) / e.sample_every : 0);
    const int64_t per_prompt = std::min<int64_t>(e.sample_max_tokens, 10 * e.model.sequence_len);
    const double sampling = static_cast<double>(sample_events) * static_cast<double>(e.sample_prompts.size()) *
                            static_cast<double>(per_prompt);
    if (sampling > training)
        p.warnings.push_back(fmt::format(
            "sampling is {}x the training's own work: {} round{} of {} prompt{} x {} tokens (sample.max_tokens) for {} "
            "step{}; lower sample.max_tokens or raise sample.every",
            training > 0 ? util::group_digits(static_cast<int64_t>(std::ceil(sampling / training))) : std::string("infinitely"),
            util::group_digits(sample_events), sample_events == 1 ? "" : "s", e.sample_prompts.size(),
            e.sample_prompts.size() == 1 ? "" : "s", util::group_digits(per_prompt), util::group_digits(N), N == 1 ? "" : "s"));
}

Plan make_plan(const config::Experiment& e, int world_size) {
    using config::ErrorList;
    ErrorList errors;
    Plan p;
    p.world_size = world_size;
    p.model = config::model_options(e);
    p.shape = modules::describe(p.model);
    if (!p.model.l3.empty()) {
        const auto& l3 = p.model.l3.front().options;
        p.l3_n_emb = l3.n_emb;
        p.l3_d_up = l3.d_up;
        // The reference accepts this silently; the rows past k_max x V are never allocated to a token.
        if (l3.n_emb / l3.k_max >= p.model.vocab_size && l3.n_emb > p.model.vocab_size * l3.k_max)
            p.warnings.push_back("L3 n_emb " + util::group_digits(l3.n_emb) + " exceeds k_max x V = " +
                                 util::group_digits(p.model.vocab_size * l3.k_max) +
                                 ": the extra rows can never be allocated (raise model.l3.k_max or lower n_emb)");
    }
    const auto& counts = p.shape.counts;
    const int64_t flops_per_token = p.shape.flops_per_token;

    // 1) Token horizon of the ratio rule, and the reference-depth horizon D_ref.
    const double ratio = e.horizon.target_param_data_ratio;
    p.scaling_params = counts.transformer_matrices + counts.lm_head;
    // Counts past 2^62 would overflow the int64 arithmetic below; no run comes near them.
    auto too_many = [&](double value, const std::vector<std::string>& keys, const std::string& key,
                        const std::string& what) {
        if (std::fabs(value) < modules::kMaxCount) return;
        char text[64];
        std::snprintf(text, sizeof text, "%.3g", value);
        errors.add(e.where_any(keys), key, what + " would be " + text + ", more than l3lab can count (2^62)");
        errors.throw_if_any();
    };
    too_many(ratio * static_cast<double>(p.scaling_params), {"horizon.target_param_data_ratio"},
             "horizon.target_param_data_ratio", "ratio x scaling params (the ratio rule's tokens)");
    p.target_tokens = static_cast<int64_t>(ratio * static_cast<double>(p.scaling_params));
    const auto reference_options = config::reference_model_options(e, e.batch.reference_depth);
    if (std::string problem = modules::size_problem(reference_options); !problem.empty()) {
        errors.add(e.where_any({"batch.reference_depth", "model.aspect_ratio"}), "batch.reference_depth",
                   "the reference-depth model: " + problem);
        errors.throw_if_any();
    }
    const auto reference = modules::describe(reference_options).counts;
    p.reference_scaling_params = reference.transformer_matrices + reference.lm_head;
    p.reference_tokens = ratio * static_cast<double>(p.reference_scaling_params);
    if (p.target_tokens == 0) {
        errors.add(e.where("horizon.target_param_data_ratio"), "horizon.target_param_data_ratio",
                   "too small: ratio x scaling params rounds to 0 tokens, and batch size and weight decay divide by it");
        errors.throw_if_any();
    }

    // 2) Batch size: Power Lines (B_opt ~ D^0.383) relative to the reference, rounded to a power of 2.
    const double b_ref = static_cast<double>(e.batch.reference_batch_size);
    if (e.batch.total_batch_size) {
        p.total_batch_size = *e.batch.total_batch_size;
        p.batch_rule = "given";
    } else {
        double batch_size_ratio = static_cast<double>(p.target_tokens) / p.reference_tokens;
        double predicted = b_ref * std::pow(batch_size_ratio, 0.383);
        double exponent = static_cast<double>(python_round(std::log2(predicted)));
        if (!(exponent >= 0 && exponent < 62)) {
            errors.add(e.where("batch.total_batch_size"), "batch.total_batch_size",
                       "auto batch size is out of range (2^" + std::to_string(exponent) + "); give one explicitly");
            errors.throw_if_any();
        }
        p.total_batch_size = int64_t{1} << static_cast<int>(exponent);
        p.batch_rule = "auto: 2^round(log2(" + util::group_digits(e.batch.reference_batch_size) + " x (D/D_ref)^0.383))";
    }

    // 3) LR scale sqrt(B/B_ref); 4) weight decay x sqrt(B/B_ref) x D_ref/D.
    const double batch_ratio = static_cast<double>(p.total_batch_size) / b_ref;
    p.batch_lr_scale = batch_ratio != 1.0 ? std::pow(batch_ratio, 0.5) : 1.0;
    p.weight_decay_scaled = e.optimizer.weight_decay * std::sqrt(static_cast<double>(p.total_batch_size) / b_ref) *
                            (p.reference_tokens / static_cast<double>(p.target_tokens));

    // Horizon, in the reference's order of precedence.
    if (e.horizon.num_iterations > 0) {
        p.num_iterations = e.horizon.num_iterations;
        p.horizon_rule = "num_iterations";
        p.horizon_detail = "given";
    } else if (e.horizon.target_flops > 0) {
        const double iterations =
            e.horizon.target_flops / (static_cast<double>(flops_per_token) * static_cast<double>(p.total_batch_size));
        too_many(iterations, {"horizon.target_flops"}, "horizon.target_flops", "the number of iterations");
        p.num_iterations = python_round(iterations);
        p.horizon_rule = "target_flops";
        p.horizon_detail = "from target_flops " + config::format_float(e.horizon.target_flops);
    } else {
        p.num_iterations = p.target_tokens / p.total_batch_size;
        p.horizon_rule = "target_param_data_ratio";
        p.horizon_detail = "from target_param_data_ratio " + config::format_float(ratio);
    }
    if (p.num_iterations == 0)
        p.warnings.push_back("the horizon rounds to 0 optimizer steps: nothing would be trained");

    too_many(static_cast<double>(p.total_batch_size) * static_cast<double>(p.num_iterations),
             {"horizon.num_iterations", "horizon.target_flops", "horizon.target_param_data_ratio",
              "batch.total_batch_size"},
             "horizon", "the run's tokens (total_batch_size x iterations)");
    p.total_tokens = p.total_batch_size * p.num_iterations;
    p.tokens_per_scaling_param = static_cast<double>(p.total_tokens) / static_cast<double>(p.scaling_params);
    p.total_flops = static_cast<double>(flops_per_token) * static_cast<double>(p.total_tokens);

    // Gradient accumulation: the total batch must be a whole number of micro-batches on all ranks.
    too_many(static_cast<double>(e.batch.device_batch_size) * static_cast<double>(e.model.sequence_len) * world_size,
             {"batch.device_batch_size", "model.sequence_len"}, "batch.device_batch_size",
             "device_batch_size x sequence_len x world_size");
    p.tokens_per_micro_batch = e.batch.device_batch_size * e.model.sequence_len * world_size;
    if (p.total_batch_size % p.tokens_per_micro_batch != 0) {
        errors.add(e.where("batch.total_batch_size"), "batch.total_batch_size",
                   util::group_digits(p.total_batch_size) + " tokens (" + p.batch_rule +
                       ") is not a multiple of device_batch_size x sequence_len x world_size = " +
                       std::to_string(e.batch.device_batch_size) + " x " + std::to_string(e.model.sequence_len) +
                       " x " + std::to_string(world_size) + " = " + util::group_digits(p.tokens_per_micro_batch));
        errors.throw_if_any();
    }
    p.grad_accum_steps = p.total_batch_size / p.tokens_per_micro_batch;
    const int64_t eval_batch = e.batch.device_batch_size * e.model.sequence_len * world_size;
    if (e.eval_tokens < eval_batch) {
        errors.add(e.where("eval.tokens"), "eval.tokens",
                   util::group_digits(e.eval_tokens) + " tokens is less than one evaluation batch (device_batch_size x "
                   "sequence_len x world_size = " + util::group_digits(eval_batch) + ")");
        errors.throw_if_any();
    }
    warn_about_side_work(e, p, world_size);
    p.optimizer_groups = plan_optimizer(e, p.model, p.shape.params, p.batch_lr_scale, p.weight_decay_scaled);
    return p;
}

}  // namespace l3lab::plan
