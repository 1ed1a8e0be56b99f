#include "modules/torch/weights.h"

#include <map>
#include <set>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cstring>
#include <functional>
#include <map>
#include <set>

namespace l3lab::modules {

static at::ScalarType scalar_type(io::DType dtype) {
    switch (dtype) {
        case io::DType::F32: return at::kFloat;
        case io::DType::F64: return at::kDouble;
        case io::DType::F16: return at::kHalf;
        case io::DType::BF16: return at::kBFloat16;
        case io::DType::I64: return at::kLong;
        case io::DType::I32: return at::kInt;
        case io::DType::I16: return at::kShort;
        case io::DType::I8: return at::kChar;
        case io::DType::U8: return at::kByte;
        case io::DType::BOOL: return at::kBool;
        default: throw WeightsError(std::string("unsupported safetensors dtype ") + io::dtype_name(dtype));
    }
}

static io::DType file_dtype(at::ScalarType type) {
    switch (type) {
        case at::kFloat: return io::DType::F32;
        case at::kDouble: return io::DType::F64;
        case at::kHalf: return io::DType::F16;
        case at::kBFloat16: return io::DType::BF16;
        case at::kLong: return io::DType::I64;
        case at::kInt: return io::DType::I32;
        case at::kShort: return io::DType::I16;
        case at::kChar: return io::DType::I8;
        case at::kByte: return io::DType::U8;
        case at::kBool: return io::DType::BOOL;
        default: throw WeightsError(std::string("cannot store dtype ") + c10::toString(type) + " in safetensors");
    }
}

at::Tensor to_tensor(const io::TensorRecord& record) {
    at::Tensor t = at::empty(record.shape, at::TensorOptions().dtype(scalar_type(record.dtype)));
    if (!record.data.empty()) std::memcpy(t.data_ptr(), record.data.data(), record.data.size());
    return t;
}

io::TensorRecord to_record(const std::string& name, const at::Tensor& tensor) {
    at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
    io::TensorRecord r;
    r.name = name;
    r.dtype = file_dtype(t.scalar_type());
    r.shape = t.sizes().vec();
    r.data.resize(t.nbytes());
    if (t.nbytes()) std::memcpy(r.data.data(), t.data_ptr(), t.nbytes());
    return r;
}

std::vector<std::pair<std::string, at::Tensor>> state_dict(const GPT& model) {
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (const auto& item : model->named_parameters(/*recurse=*/true)) out.emplace_back(item.key(), item.value());
    for (const auto& item : model->named_buffers(/*recurse=*/true)) out.emplace_back(item.key(), item.value());
    return out;
}

void save_weights(const GPT& model, const std::string& path, const std::map<std::string, std::string>& metadata) {
    std::vector<io::TensorRecord> records;
    for (const auto& [name, tensor] : state_dict(model)) records.push_back(to_record(name, tensor));
    io::write_safetensors(path, records, metadata);
}

std::vector<std::pair<std::string, std::vector<int64_t>>> expected_weights(const GPT& model) {
    std::vector<std::pair<std::string, std::vector<int64_t>>> expected;
    for (const auto& item : model->named_parameters(true)) expected.emplace_back(item.key(), item.value().sizes().vec());
    for (const auto& item : model->named_buffers(true)) {
        // Bounds are [V+1] once an allocation is set; a fresh layer holds a placeholder.
        expected.emplace_back(item.key(), std::vector<int64_t>{model->options.vocab_size + 1});
    }
    return expected;
}

namespace {

// Every parameter and L3 bounds buffer from `tensor(name)`, once the names and shapes were checked.
void assign_weights(GPT& model, const std::function<at::Tensor(const std::string&)>& tensor) {
    torch::NoGradGuard no_grad;
    for (auto& item : model->named_parameters(true)) item.value().copy_(tensor(item.key()));  // converts dtype, device
    for (const auto& l3 : model->l3_layers->items()) {
        auto layer = l3.second->as<L3LayerImpl>();
        layer->set_bounds(tensor("l3_layers." + l3.first + ".bounds").to(at::kCPU, at::kLong));
    }
}

}  // namespace

void load_weights(GPT& model, const std::string& path) {
    io::SafetensorsFile file = io::read_safetensors(path);
    std::vector<std::string> problems = io::check_names_and_shapes(file, expected_weights(model));
    for (const auto& item : model->named_buffers(true)) {
        const io::TensorRecord* r = file.find(item.key());
        if (r && r->dtype != io::DType::I64) problems.push_back(item.key() + ": expected int64 bounds, file has " +
                                                                io::dtype_name(r->dtype));
    }
    if (!problems.empty()) {
        std::string message = path + ": does not fit this model (" + std::to_string(problems.size()) + " problem" +
                              (problems.size() == 1 ? "" : "s") + "):";
        for (const auto& p : problems) message += "\n  " + p;
        throw WeightsError(message);
    }
    assign_weights(model, [&](const std::string& name) { return to_tensor(*file.find(name)); });
}

void load_state_dict(GPT& model, const std::vector<std::pair<std::string, at::Tensor>>& tensors, const std::string& source) {
    std::map<std::string, at::Tensor> by_name;
    std::vector<std::string> problems;
    for (const auto& [name, t] : tensors)
        if (!by_name.emplace(name, t).second) problems.push_back(name + ": appears twice");
    std::set<std::string> expected_names;
    for (const auto& [name, shape] : expected_weights(model)) {
        expected_names.insert(name);
        auto it = by_name.find(name);
        if (it == by_name.end()) {
            problems.push_back(name + ": missing");
            continue;
        }
        if (it->second.sizes().vec() != shape) {
            std::string want, got;
            for (int64_t d : shape) want += (want.empty() ? "" : ", ") + std::to_string(d);
            for (int64_t d : it->second.sizes()) got += (got.empty() ? "" : ", ") + std::to_string(d);
            problems.push_back(name + ": shape [" + got + "], the model's is [" + want + "]");
        }
    }
    for (const auto& [name, t] : by_name)
        if (!expected_names.count(name)) problems.push_back(name + ": not a tensor of this model");
    if (!problems.empty()) {
        std::string message = source + ": does not fit this model (" + std::to_string(problems.size()) + " problem" +
                              (problems.size() == 1 ? "" : "s") + "):";
        for (const auto& p : problems) message += "\n  " + p;
        throw WeightsError(message);
    }
    assign_weights(model, [&](const std::string& name) { return by_name.at(name); });
}

}  // namespace l3lab::modules
