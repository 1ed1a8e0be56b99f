#include "runner/torch/nanochat_checkpoint.h"

#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/csrc/jit/serialization/pickler.h>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <optional>
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

namespace {

std::vector<char> read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error(path + ": cannot open the file");
    return std::vector<char>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The Python of the torch wheel this libtorch came from (the bootstrap's .venv), or $L3LAB_PYTHON.
std::string torch_python() {
    if (const char* p = std::getenv("L3LAB_PYTHON"); p && *p) return p;
    return L3LAB_TORCH_PYTHON;
}

// nanochat saves model.state_dict(), a collections.OrderedDict, and torch::jit's unpickler reads every
// OrderedDict as None (it expects one only as a tensor's empty backward hooks). The torch package that
// ships this libtorch reads it: it loads the file with weights_only=True (no code in the file runs) and
// saves the same tensors as a plain dict into a temporary file, which is read and removed. The path goes
// to Python as an argument, never through a shell. Returns the bytes, or nothing with `why` set.
std::optional<std::vector<char>> resaved_as_plain_dict(const std::string& path, std::string& why) {
    const std::string python = torch_python();
    if (::access(python.c_str(), X_OK) != 0) {
        why = "no Python with torch at " + python + " (set L3LAB_PYTHON)";
        return std::nullopt;
    }
    const char* tmpdir = std::getenv("TMPDIR");
    std::string tmp = std::string(tmpdir && *tmpdir ? tmpdir : "/tmp") + "/l3lab-state-dict-XXXXXX";
    const int fd = ::mkstemp(tmp.data());
    if (fd < 0) {
        why = "cannot create a temporary file in " + tmp;
        return std::nullopt;
    }
    ::close(fd);
    const char* script =
        "import sys, torch\n"
        "state = torch.load(sys.argv[1], map_location='cpu', weights_only=True)\n"
        "torch.save(dict(state), sys.argv[2])\n";
    const std::string log = tmp + ".log";
    // posix_spawn, not fork + exec by hand: libtorch's thread pools are running in this process.
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    const char* argv[] = {python.c_str(), "-c", script, path.c_str(), tmp.c_str(), nullptr};
    pid_t pid = -1;
    const int rc = ::posix_spawn(&pid, python.c_str(), &actions, nullptr, const_cast<char* const*>(argv), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) pid = -1;
    int status = 0;
    while (pid > 0 && ::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    std::optional<std::vector<char>> bytes;
    if (pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        bytes = read_bytes(tmp);
    } else {
        std::ifstream in(log);
        std::string line, last;
        while (std::getline(in, line))
            if (!line.empty()) last = line;
        why = python + " could not re-save it" + (last.empty() ? std::string() : ": " + last);
    }
    ::unlink(tmp.c_str());
    ::unlink(log.c_str());
    return bytes;
}

}  // namespace

std::vector<std::pair<std::string, at::Tensor>> read_state_dict(const std::string& path) {
    c10::IValue value;
    try {
        value = torch::jit::pickle_load(read_bytes(path));
    } catch (const c10::Error& e) {
        if (std::string(e.what_without_backtrace()).find("Expected GenericDict but got None") == std::string::npos)
            throw std::runtime_error(path + ": not a torch.save'd state_dict that libtorch can read (" +
                                     e.what_without_backtrace() + ")");
        // An OrderedDict (see resaved_as_plain_dict): torch's Python package reads it for us.
        std::string why;
        const auto bytes = resaved_as_plain_dict(path, why);
        if (!bytes)
            throw std::runtime_error(
                path + ": holds a collections.OrderedDict (as torch.save(model.state_dict()) writes), which libtorch's "
                       "unpickler (torch::jit::pickle_load, torch 2.11) reads as None, and " + why +
                "; save the state_dict as a plain dict to load it here: python -c \"import torch, sys; "
                "torch.save(dict(torch.load(sys.argv[1])), sys.argv[1])\" " + path);
        value = torch::jit::pickle_load(*bytes);
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
