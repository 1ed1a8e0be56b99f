// The parts of modules/torch/cuda.h that need no CUDA headers: built with and without the kernels.
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>

#include "modules/torch/cuda.h"

namespace l3lab::modules {

int cuda_device_count() { return at::hasCUDA() ? static_cast<int>(at::getNumGPUs()) : 0; }

Bf16Autocast::Bf16Autocast(c10::DeviceType device, bool enable) : device_(device) {
    if (!enable || at::autocast::is_autocast_enabled(device)) return;
    active_ = true;
    previous_dtype_ = static_cast<int>(at::autocast::get_autocast_dtype(device));
    at::autocast::set_autocast_dtype(device, at::kBFloat16);
    at::autocast::set_autocast_enabled(device, true);
    at::autocast::increment_nesting();
}

Bf16Autocast::~Bf16Autocast() {
    if (!active_) return;
    // As torch.amp.autocast's __exit__: the cache of casted weights lives for the outermost region only.
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(device_, false);
    at::autocast::set_autocast_dtype(device_, static_cast<at::ScalarType>(previous_dtype_));
}

}  // namespace l3lab::modules
