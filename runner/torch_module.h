// libtorch lives in a separately loaded module (libl3lab_torch.so next to the executable) so that the
// torch-free commands - config, plan, sweep plan - start in milliseconds instead of loading ~1 GB of
// shared libraries. Commands that need torch ask for the module here; it is loaded once, on demand.
#pragma once

#include <string>

namespace l3lab {

// The module's C entry points, resolved with dlsym.
struct TorchModule {
    const char* (*runtime_info_fn)();            // multi-line "key: value" text
    int (*train_fn)(const char* request_json);   // train::run_training; returns the exit code
    // Output goes through emit(text, context); errors to stderr. Both return the exit code.
    int (*eval_fn)(const char* request_json, void (*emit)(const char*, void*), void* context);
    int (*sample_fn)(const char* request_json, void (*emit)(const char*, void*), void* context);
    // {"checkpoint": dir, "output": dir}: nanochat's model_<step>.pt + meta_<step>.json
    int (*export_fn)(const char* request_json, void (*emit)(const char*, void*), void* context);
    // The rendezvous of a data-parallel launch (runner/dist/launch.h); emits one JSON reply.
    int (*distributed_fn)(const char* request_json, void (*emit)(const char*, void*), void* context);

    // CUDA devices the module can train on: -1 when it was built without its CUDA kernels (docs/cuda.md).
    int (*cuda_devices_fn)();

    std::string runtime_info() const { return runtime_info_fn(); }
    int cuda_devices() const { return cuda_devices_fn ? cuda_devices_fn() : -1; }
    // {"run_dir": ..., "resume": bool, "init_from": ...}
    int train(const std::string& request_json) const { return train_fn(request_json.c_str()); }
};

// nullptr (and a reason in *error) when the module is missing or cannot be loaded.
const TorchModule* torch_module(std::string* error);

}  // namespace l3lab
