#include "runner/torch/nanochat_checkpoint.h"

#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/csrc/jit/serialization/pickler.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <stdexcept>

namespace fs = std::filesystem;

namespace l3lab::nanochat {

bool is_directory_path(const std::string& path) {
    std::error_code ec;
    return fs::is_directory(path, ec);
}

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

std::string model_file(const std::string& path, long long step) {
    std::error_code ec;
    if (!fs::is_directory(path, ec)) {
        if (!fs::exists(path, ec)) throw std::runtime_error(path + ": no such file or directory");
        return path;
    }
    if (step >= 0) {
        char name[32];
        std::snprintf(name, sizeof name, "model_%06lld.pt", step);
        const fs::path p = fs::path(path) / name;
        if (!fs::exists(p, ec)) throw std::runtime_error(p.string() + ": no such checkpoint");
        return p.string();
    }
    const std::regex pattern(R"(model_(\d+)\.pt)");
    long long best = -1;
    std::string best_path;
    for (const auto& entry : fs::directory_iterator(path, ec)) {
        std::smatch m;
        const std::string name = entry.path().filename().string();
        if (std::regex_match(name, m, pattern) && std::stoll(m[1]) > best) {
            best = std::stoll(m[1]);
            best_path = entry.path().string();
        }
    }
    if (best < 0) throw std::runtime_error(path + ": no model_<step>.pt in this directory (a nanochat checkpoint directory has them)");
    return best_path;
}

}  // namespace l3lab::nanochat
