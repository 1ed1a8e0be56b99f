// The torch side of the module registry: the same type names as modules/shapes/shapes.h's
// shape_registry() ("block", "l3"), each building the libtorch module for one graph entry.
#pragma once

#include <torch/nn/module.h>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "modules/shapes/gpt_options.h"

namespace l3lab::modules {

// Builds the module for the entry at `index` (block index; for "l3", the block it follows).
using ModuleBuilder = std::function<std::shared_ptr<torch::nn::Module>(const GPTOptions&, int64_t index)>;

const std::map<std::string, ModuleBuilder>& module_registry();
// Throws std::invalid_argument listing the known names on a miss.
const ModuleBuilder& module_builder(const std::string& type);

}  // namespace l3lab::modules
