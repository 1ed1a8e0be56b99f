// The one translation unit that names c10d::ProcessGroupNCCL; built when libtorch has CUDA and NCCL's
// headers are found (the nvidia-nccl wheel torch depends on, so the ncclConfig_t inside
// ProcessGroupNCCL::Options has libtorch's layout; tests/dist/check_backend_abi.py compares the sizes).
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include "runner/torch/backends.h"

namespace l3lab::dist {

c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                    std::chrono::milliseconds timeout, int device_index) {
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(device_index));  // the reference's torch.cuda.set_device
    c10::intrusive_ptr<c10d::ProcessGroupNCCL::Options> options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = timeout;
    return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, std::move(options));
}

bool nccl_available() { return true; }

}  // namespace l3lab::dist
