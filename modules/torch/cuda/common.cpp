// The parts of modules/torch/cuda.h that need no CUDA headers: built with and without the kernels.
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>

#include "modules/torch/cuda.h"

namespace l3lab::modules {

int cuda_device_count() { return at::hasCUDA() ? static_cast<int>(at::getNumGPUs()) : 0; }

CudaAutocast::CudaAutocast(bool enable) {
    if (!enable || at::autocast::is_autocast_enabled(at::kCUDA)) return;
    active_ = true;
    previous_dtype_ = static_cast<int>(at::autocast::get_autocast_dtype(at::kCUDA));
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::increment_nesting();
}

CudaAutocast::~CudaAutocast() {
    if (!active_) return;
    // As torch.amp.autocast's __exit__: the cache of casted weights lives for the outermost region only.
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(at::kCUDA, false);
    at::autocast::set_autocast_dtype(at::kCUDA, static_cast<at::ScalarType>(previous_dtype_));
}

}  // namespace l3lab::modules
