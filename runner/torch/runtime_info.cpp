// Entry points of libl3lab_torch.so, the part of l3lab that links libtorch (see runner/torch_module.h).
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <c10/core/DeviceType.h>
#include <torch/version.h>

#include <sstream>
#include <string>

#include "modules/torch/cuda.h"

extern "C" const char* l3lab_torch_runtime_info() {
    static const std::string info = [] {
        // An ostringstream rather than string +: GCC 12 flags the latter with a spurious -Warray-bounds.
        std::ostringstream out;
        out << "libtorch (loaded): " << TORCH_VERSION << "\n";
        const bool cuda = at::hasCUDA();
        out << "CUDA: " << (cuda ? "available" : "not available") << "\n";
        if (cuda) {
            out << "CUDA devices: " << at::getNumGPUs() << "\n";
            if (at::detail::getCUDAHooks().hasCuDNN())
                out << "cuDNN: " << at::detail::getCUDAHooks().versionCuDNN() << "\n";
            else
                out << "cuDNN: not available\n";
        }
        out << "l3lab CUDA kernels: "
            << (l3lab::modules::cuda_kernels_built() ? "built (docs/cuda.md)" : "not built") << "\n";
        out << "CPU threads: " << at::get_num_threads() << "\n";
        return out.str();
    }();
    return info.c_str();
}

// -1: built without the CUDA kernels; otherwise the CUDA devices libtorch sees (0 without driver or GPU).
extern "C" int l3lab_torch_cuda_devices() {
    return l3lab::modules::cuda_kernels_built() ? l3lab::modules::cuda_device_count() : -1;
}
