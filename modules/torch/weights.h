// Model weights as safetensors files with the reference's state_dict names, so a model saved by l3lab
// loads into nanochat (load_state_dict(strict=True)) and nanochat's weights load into l3lab.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "modules/torch/gpt.h"
#include "runner/io/safetensors.h"

namespace l3lab::modules {

at::Tensor to_tensor(const io::TensorRecord& record);             // a new CPU tensor (copy)
io::TensorRecord to_record(const std::string& name, const at::Tensor& tensor);  // contiguous CPU bytes

// The model's state_dict: every parameter and the L3 bounds buffers, in the reference's order.
std::vector<std::pair<std::string, at::Tensor>> state_dict(const GPT& model);

void save_weights(const GPT& model, const std::string& path, const std::map<std::string, std::string>& metadata = {});

// Loads every tensor of `path` into `model` (L3 bounds included, any previous bounds replaced). Names
// and shapes must match exactly; otherwise nothing is changed and the error lists every mismatch.
// Values are converted to each parameter's dtype and device (bf16 embeddings on CUDA, for example).
void load_weights(GPT& model, const std::string& path);

// The same from named tensors (a nanochat model_<step>.pt's state_dict); `source` names them in errors.
void load_state_dict(GPT& model, const std::vector<std::pair<std::string, at::Tensor>>& tensors, const std::string& source);

// What a well-formed file for `model` must contain: names and shapes (bounds: [vocab_size + 1]).
std::vector<std::pair<std::string, std::vector<int64_t>>> expected_weights(const GPT& model);

struct WeightsError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

}  // namespace l3lab::modules
