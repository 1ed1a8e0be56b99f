#include "modules/torch/registry.h"

#include <stdexcept>

#include "modules/torch/gpt.h"

namespace l3lab::modules {

const std::map<std::string, ModuleBuilder>& module_registry() {
    static const std::map<std::string, ModuleBuilder> registry = {
        {"block", [](const GPTOptions& o, int64_t index) -> std::shared_ptr<torch::nn::Module> {
             return Block(o, index).ptr();
         }},
        {"l3", [](const GPTOptions& o, int64_t index) -> std::shared_ptr<torch::nn::Module> {
             for (const auto& placement : o.l3)
                 if (placement.after_block == index) return L3Layer(placement.options, o.n_embd).ptr();
             throw std::invalid_argument("no L3 layer is placed after block " + std::to_string(index));
         }},
    };
    return registry;
}

const ModuleBuilder& module_builder(const std::string& type) {
    const auto& registry = module_registry();
    auto it = registry.find(type);
    if (it == registry.end()) {
        std::string names;
        for (const auto& [name, _] : registry) names += (names.empty() ? "" : ", ") + name;
        throw std::invalid_argument("unknown module type '" + type + "' (known: " + names + ")");
    }
    return it->second;
}

}  // namespace l3lab::modules
