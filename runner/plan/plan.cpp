#include "runner/plan/plan.h"

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
    p.optimizer_groups = plan_optimizer(e, p.model, p.shape.params, p.batch_lr_scale, p.weight_decay_scaled);
    return p;
}

}  // namespace l3lab::plan
