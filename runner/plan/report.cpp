#include "runner/plan/report.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "runner/config/schema.h"
#include "runner/data/core_tasks.h"
#include "runner/util/format.h"

namespace l3lab::plan {


namespace {
struct Table {
    std::ostringstream out;
    void section(const std::string& title) { out << "\n" << title << "\n"; }
    void row(const std::string& key, const std::string& value, const std::string& note = "") {
        out << fmt::format("  {:<26} {:>20}", key, value);
        if (!note.empty()) out << "   " << note;
        out << "\n";
    }
};
}  // namespace

std::string plan_table(const config::Experiment& e, const Plan& p) {
    const auto& m = p.model;
    const auto& c = p.shape.counts;
    Table t;
    t.out << "plan for " << e.source << " (name: " << e.name << ", world size " << p.world_size << ")\n";

    t.section("model");
    t.row("depth (n_layer)", std::to_string(m.n_layer));
    t.row("model_dim (n_embd)", std::to_string(m.n_embd),
          fmt::format("ceil({} x {} / {}) x {}", m.n_layer, e.model.aspect_ratio, e.model.head_dim, e.model.head_dim));
    t.row("heads (q / kv)", fmt::format("{} / {}", m.n_head, m.n_kv_head), fmt::format("head_dim {}", m.head_dim()));
    t.row("vocab (padded)", fmt::format("{} ({})", m.vocab_size, m.padded_vocab_size()));
    t.row("sequence_len", std::to_string(m.sequence_len), "window pattern " + m.window_pattern);
    if (m.l3.empty()) {
        t.row("L3 layers", "none");
    } else {
        std::string blocks;
        for (const auto& l : m.l3) blocks += (blocks.empty() ? "" : ",") + std::to_string(l.after_block);
        const auto& l3 = m.l3.front().options;
        t.row("L3 after blocks", blocks, l3.tie_kv ? "tied K=V" : "untied K, V");
        t.row("L3 n_emb", util::group_digits(p.l3_n_emb),
              fmt::format("{} ({:.1f} rows/token on average)", e.model.l3.n_emb ? "given" : "auto: max(V, params // 1000)",
                          static_cast<double>(p.l3_n_emb) / static_cast<double>(m.vocab_size)));
        t.row("L3 d_up", util::group_digits(p.l3_d_up), e.model.l3.d_up ? "given" : "auto: 4 x model_dim");
        t.row("L3 k_max", util::group_digits(l3.k_max), "allocation " + e.model.l3.allocation);
    }

    t.section("parameters");
    t.row("wte", util::group_digits(c.wte));
    t.row("value_embeds", util::group_digits(c.value_embeds));
    t.row("lm_head", util::group_digits(c.lm_head));
    t.row("transformer_matrices", util::group_digits(c.transformer_matrices));
    t.row("l3_embeds", util::group_digits(c.l3_embeds));
    t.row("l3_matrices", util::group_digits(c.l3_matrices));
    t.row("scalars", util::group_digits(c.scalars));
    t.row("total", util::group_digits(c.total));
    t.row("scaling params", util::group_digits(p.scaling_params), "transformer_matrices + lm_head");
    t.row("FLOPs / token", fmt::format("{:e}", static_cast<double>(p.shape.flops_per_token)), "reference estimate_flops()");

    t.section("horizon and batch");
    t.row("num_iterations", util::group_digits(p.num_iterations), p.horizon_detail);
    t.row("total_batch_size", util::group_digits(p.total_batch_size), p.batch_rule);
    t.row("micro-batch tokens", util::group_digits(p.tokens_per_micro_batch),
          fmt::format("{} x {} x world {}", e.batch.device_batch_size, m.sequence_len, p.world_size));
    t.row("grad_accum_steps", util::group_digits(p.grad_accum_steps));
    t.row("precision", e.precision == "bf16" ? "bf16" : "auto",
          e.precision == "bf16" ? "bfloat16 autocast on CUDA and on the CPU" : "bfloat16 autocast on CUDA, float32 on the CPU");
    t.row("total tokens", util::group_digits(p.total_tokens));
    t.row("tokens : scaling params", fmt::format("{:.2f}", p.tokens_per_scaling_param));
    t.row("total FLOPs", fmt::format("{:e}", p.total_flops));
    t.row("D_ref tokens", fmt::format("{:e}", p.reference_tokens),
          fmt::format("ratio x scaling params of depth {} ({})", e.batch.reference_depth, util::group_digits(p.reference_scaling_params)));
    if (e.core_every > 0)
        t.row("CORE", fmt::format("every {} + end", util::group_digits(e.core_every)),
              fmt::format("{} per task, bundle {}", e.core_max_per_task > 0 ? util::group_digits(e.core_max_per_task) : "all",
                          e.core_bundle.empty() ? data::default_core_bundle() : e.core_bundle));
    else
        t.row("CORE", "off", "eval.core_every -1");

    t.section("scaling");
    t.row("batch LR scale", fmt::format("{:.6f}", p.batch_lr_scale),
          fmt::format("sqrt(B / {})", util::group_digits(e.batch.reference_batch_size)));
    t.row("weight decay", fmt::format("{:.6f}", p.weight_decay_scaled),
          fmt::format("{} x sqrt(B/B_ref) x D_ref/D", config::format_float(e.optimizer.weight_decay)));
    t.row("AdamW dmodel LR scale", fmt::format("{:.6f}", std::pow(static_cast<double>(m.n_embd) / 768.0, -0.5)),
          "(model_dim / 768)^-0.5");

    t.section("optimizer groups");
    for (const auto& g : p.optimizer_groups) {
        std::string note = fmt::format("{} {}, {} tensor{}", g.kind, util::group_digits(g.numel), g.params.size(),
                                       g.params.size() == 1 ? "" : "s");
        if (g.weight_decay != 0 || g.weight_decay_scaled)
            note += fmt::format(", wd {:.6f}{}", g.weight_decay, g.weight_decay_scaled ? " (scaled)" : "");
        t.row(g.name, fmt::format("lr {:.6g}", g.lr), note);
    }
    for (const auto& w : p.warnings) t.out << "\nwarning: " << w << "\n";
    return t.out.str();
}

std::string plan_json(const config::Experiment& e, const Plan& p) {
    const auto& m = p.model;
    const auto& c = p.shape.counts;
    nlohmann::ordered_json j;
    j["name"] = e.name;
    j["world_size"] = p.world_size;
    j["n_layer"] = m.n_layer;
    j["n_embd"] = m.n_embd;
    j["n_head"] = m.n_head;
    j["n_kv_head"] = m.n_kv_head;
    j["head_dim"] = m.head_dim();
    j["vocab_size"] = m.vocab_size;
    j["padded_vocab_size"] = m.padded_vocab_size();
    j["params"] = {{"wte", c.wte},
                   {"value_embeds", c.value_embeds},
                   {"lm_head", c.lm_head},
                   {"transformer_matrices", c.transformer_matrices},
                   {"l3_embeds", c.l3_embeds},
                   {"l3_matrices", c.l3_matrices},
                   {"scalars", c.scalars},
                   {"total", c.total}};
    j["scaling_params"] = p.scaling_params;
    j["flops_per_token"] = p.shape.flops_per_token;
    j["num_iterations"] = p.num_iterations;
    j["horizon_rule"] = p.horizon_rule;
    j["total_batch_size"] = p.total_batch_size;
    j["grad_accum_steps"] = p.grad_accum_steps;
    j["total_tokens"] = p.total_tokens;
    j["tokens_per_scaling_param"] = p.tokens_per_scaling_param;
    j["total_flops"] = p.total_flops;
    j["batch_lr_scale"] = p.batch_lr_scale;
    j["weight_decay_scaled"] = p.weight_decay_scaled;
    j["l3_n_emb"] = p.l3_n_emb;
    j["l3_d_up"] = p.l3_d_up;
    j["reference_tokens"] = p.reference_tokens;
    j["optimizer_groups"] = nlohmann::ordered_json::array();
    for (const auto& g : p.optimizer_groups)
        j["optimizer_groups"].push_back({{"name", g.name}, {"kind", g.kind}, {"lr", g.lr}, {"beta1", g.beta1},
                                         {"beta2", g.beta2}, {"eps", g.eps}, {"weight_decay", g.weight_decay},
                                         {"ns_steps", g.ns_steps}, {"tensors", g.params.size()}, {"numel", g.numel}});
    j["warnings"] = p.warnings;
    return j.dump(2) + "\n";
}

}  // namespace l3lab::plan
