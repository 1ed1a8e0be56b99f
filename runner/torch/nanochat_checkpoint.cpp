#include "runner/torch/nanochat_checkpoint.h"

#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/csrc/jit/serialization/pickler.h>

#include <fstream>
#include <stdexcept>


namespace l3lab::nanochat {

void write_state_dict(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
    c10::impl::GenericDict dict(c10::StringType::get(), c10::TensorType::get());
    for (const auto& [name, tensor] : tensors) dict.insert(name, tensor.detach().to(at::kCPU).contiguous());
    std::vector<char> pickle;
    // tag_aggregates off: a plain dict, as torch.save writes it (no TorchScript type tags, which
    // torch.load's weights_only unpickler would refuse).
    torch::jit::Pickler pickler([&](const char* bytes, size_t n) { pickle.insert(pickle.end(), bytes, bytes + n); },
                                nullptr, nullptr, nullptr, nullptr, /*tag_aggregates=*/false);
    pickler.protocol();
    pickler.pushIValue(dict);
    pickler.stop();
    caffe2::serialize::PyTorchStreamWriter writer(path);
    torch::jit::writeArchiveAndTensors("data", pickle.data(), pickle.size(), pickler.tensorData(), writer);
    writer.writeEndOfFile();
    if (!writer.finalized()) throw std::runtime_error(path + ": the archive could not be written");
}

std::vector<std::pair<std::string, at::Tensor>> read_state_dict(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error(path + ": cannot open the file");
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    c10::IValue value;
    try {
        value = torch::jit::pickle_load(bytes);
    } catch (const c10::Error& e) {
        // torch::jit's unpickler reads every collections.OrderedDict as None (it expects one only as a
        // tensor's empty backward hooks), so the SETITEMS of model.state_dict() (an OrderedDict) fail.
        if (std::string(e.what_without_backtrace()).find("Expected GenericDict but got None") != std::string::npos)
            throw std::runtime_error(
                path + ": holds a collections.OrderedDict (as torch.save(model.state_dict()) writes), which libtorch's "
                       "unpickler (torch::jit::pickle_load, torch 2.11) reads as None; save the state_dict as a plain dict to "
                       "load it here: python -c \"import torch, sys; torch.save(dict(torch.load(sys.argv[1])), sys.argv[1])\" " +
                path);
        throw std::runtime_error(path + ": not a torch.save'd state_dict that libtorch can read (" +
                                 e.what_without_backtrace() + ")");
    }
    if (!value.isGenericDict()) throw std::runtime_error(path + ": holds a " + value.tagKind() + ", not a state_dict (a dict of tensors)");
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (const auto& item : value.toGenericDict()) {
        if (!item.key().isString() || !item.value().isTensor())
            throw std::runtime_error(path + ": the state_dict has an entry that is not a name and a tensor");
        std::string name = item.key().toStringRef();
        if (name.rfind("_orig_mod.", 0) == 0) name = name.substr(10);
        out.emplace_back(name, item.value().toTensor());
    }
    return out;
}

}  // namespace l3lab::nanochat
