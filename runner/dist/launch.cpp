#include "runner/dist/launch.h"

#include <exception>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "runner/config/errors.h"
#include "runner/run/run_dir.h"
#include "runner/torch_module.h"

using nlohmann::json;

namespace l3lab::dist {

namespace {

void append_reply(const char* text, void* reply) { *static_cast<std::string*>(reply) += text; }

// One request to the torch module's rendezvous (runner/torch/distributed.cpp); its exit code 2 is a
// config error, anything else non-zero a runtime failure.
json call(const json& request) {
    std::string load_error;
    const TorchModule* module = torch_module(&load_error);
    if (!module) throw std::runtime_error("a data-parallel launch needs the libtorch module: " + load_error);
    std::string reply;
    const int code = module->distributed_fn(request.dump().c_str(), append_reply, &reply);
    json j = json::parse(reply.empty() ? "{}" : reply, nullptr, /*allow_exceptions=*/false);
    const std::string error = j.is_object() && j.contains("error") ? j["error"].get<std::string>() : reply;
    if (code == 2) throw config::ConfigException({{{"<distributed>", 0, 0}, "", error}});
    if (code != 0) throw std::runtime_error(error);
    return j;
}

json errors_json(const std::vector<config::ConfigError>& errors) {
    json out = json::array();
    for (const auto& e : errors)
        out.push_back({{"file", e.where.file}, {"line", e.where.line}, {"column", e.where.column}, {"key", e.key},
                       {"message", e.message}});
    return out;
}

// What a failed check on one rank tells the others.
json failure_of(const std::exception_ptr& failure) {
    try {
        std::rethrow_exception(failure);
    } catch (const config::ConfigException& e) {
        return {{"ok", false}, {"config", true}, {"errors", errors_json(e.errors())}};
    } catch (const std::exception& e) {
        return {{"ok", false}, {"config", false}, {"message", e.what()}};
    }
}

[[noreturn]] void throw_remote(int rank, int world_size, const json& failure) {
    const std::string who = "rank " + std::to_string(rank) + " of " + std::to_string(world_size);
    if (failure.value("config", false)) {
        std::vector<config::ConfigError> errors{{{"<distributed>", 0, 0}, "", who + " found these errors:"}};
        for (const auto& e : failure["errors"])
            errors.push_back({{e.at("file").get<std::string>(), e.at("line").get<int>(), e.at("column").get<int>()},
                              e.at("key").get<std::string>(), e.at("message").get<std::string>()});
        throw config::ConfigException(errors);
    }
    throw std::runtime_error(who + ": " + failure.value("message", std::string("failed")));
}

}  // namespace

Launch Launch::join(const std::string& resolved_config, double timeout_s) {
    Launch launch;
    launch.env_ = read_launch_env();
    if (!launch.distributed()) return launch;
    const LaunchEnv& e = launch.env_;
    call({{"op", "init"},
          {"launcher", e.launcher},
          {"rank", e.rank},
          {"world_size", e.world_size},
          {"local_rank", e.local_rank},
          {"master_addr", e.master_addr},
          {"master_port", e.master_port},
          {"agent_store", e.agent_store},
          {"store_prefix", e.store_prefix},
          {"timeout_s", timeout_s},
          {"config_sha256", run::sha256_hex(resolved_config)}});
    return launch;
}

void Launch::agree(const std::function<void()>& check) const {
    if (!distributed()) return check();
    std::exception_ptr local;
    json mine = {{"ok", true}};
    try {
        check();
    } catch (...) {
        local = std::current_exception();
        mine = failure_of(local);
    }
    const json all = call({{"op", "allgather"}, {"value", mine.dump()}}).at("values");
    if (local) std::rethrow_exception(local);
    for (int r = 0; r < world_size(); ++r) {
        const json theirs = json::parse(all[static_cast<size_t>(r)].get<std::string>());
        if (!theirs.value("ok", false)) throw_remote(r, world_size(), theirs);
    }
}

std::string Launch::from_root(const std::function<std::string()>& decide) const {
    if (!distributed()) return decide();
    std::exception_ptr local;
    json mine = {{"ok", true}};
    if (is_root()) {
        try {
            mine["value"] = decide();
        } catch (...) {
            local = std::current_exception();
            mine = failure_of(local);
        }
    }
    const json all = call({{"op", "allgather"}, {"value", mine.dump()}}).at("values");
    if (local) std::rethrow_exception(local);
    const json root = json::parse(all[0].get<std::string>());
    if (!root.value("ok", false)) throw_remote(0, world_size(), root);
    return root.at("value").get<std::string>();
}

}  // namespace l3lab::dist
