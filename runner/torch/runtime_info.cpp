// Entry points of libl3lab_torch.so, the part of l3lab that links libtorch (see runner/torch_module.h).
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <c10/core/DeviceType.h>
#include <torch/version.h>

#include <string>

extern "C" const char* l3lab_torch_runtime_info() {
    static const std::string info = [] {
        std::string out = std::string("libtorch (loaded): ") + TORCH_VERSION + "\n";
        const bool cuda = at::hasCUDA();
        out += std::string("CUDA: ") + (cuda ? "available" : "not available") + "\n";
        if (cuda) {
            out += "CUDA devices: " + std::to_string(at::getNumGPUs()) + "\n";
            const bool cudnn = at::detail::getCUDAHooks().hasCuDNN();
            out += std::string("cuDNN: ") +
                   (cudnn ? std::to_string(at::detail::getCUDAHooks().versionCuDNN()) : std::string("not available")) + "\n";
        }
        out += "CPU threads: " + std::to_string(at::get_num_threads()) + "\n";
        return out;
    }();
    return info.c_str();
}
