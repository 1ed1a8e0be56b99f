#include "runner/torch_module.h"

#include <dlfcn.h>
#include <limits.h>
#include <unistd.h>

#include <filesystem>
#include <mutex>

namespace l3lab {

static std::filesystem::path executable_dir() {
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return std::filesystem::current_path();
    buf[n] = '\0';
    return std::filesystem::path(buf).parent_path();
}

const TorchModule* torch_module(std::string* error) {
    static TorchModule module{};
    static std::string load_error;
    static std::once_flag once;
    std::call_once(once, [] {
        const char* override_path = std::getenv("L3LAB_TORCH_MODULE");
        std::string path = override_path ? override_path : (executable_dir() / "libl3lab_torch.so").string();
        void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (!handle) {
            load_error = dlerror();
            return;
        }
        module.runtime_info_fn = reinterpret_cast<const char* (*)()>(dlsym(handle, "l3lab_torch_runtime_info"));
        module.train_fn = reinterpret_cast<int (*)(const char*)>(dlsym(handle, "l3lab_torch_train"));
        using Command = int (*)(const char*, void (*)(const char*, void*), void*);
        module.eval_fn = reinterpret_cast<Command>(dlsym(handle, "l3lab_torch_eval"));
        module.sample_fn = reinterpret_cast<Command>(dlsym(handle, "l3lab_torch_sample"));
        module.export_fn = reinterpret_cast<Command>(dlsym(handle, "l3lab_torch_export"));
        module.cuda_devices_fn = reinterpret_cast<int (*)()>(dlsym(handle, "l3lab_torch_cuda_devices"));
        module.distributed_fn = reinterpret_cast<Command>(dlsym(handle, "l3lab_torch_distributed"));
        if (!module.runtime_info_fn || !module.train_fn || !module.eval_fn || !module.sample_fn || !module.export_fn || !module.distributed_fn)
            load_error = path + " lacks the l3lab_torch_* entry points";
    });
    if (!load_error.empty() || !module.runtime_info_fn) {
        if (error) *error = load_error;
        return nullptr;
    }
    return &module;
}

}  // namespace l3lab
