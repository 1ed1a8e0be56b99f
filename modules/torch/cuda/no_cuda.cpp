// modules/torch/cuda.h in a build without l3lab's CUDA kernels (L3LAB_CUDA=OFF, a CPU-only libtorch,
// or no nvcc at configure time): queries say so, kernels throw.
#include <c10/util/Exception.h>

#include "modules/torch/cuda.h"

namespace l3lab::modules {

namespace {
[[noreturn]] void not_built(const char* what) {
    TORCH_CHECK(false, what, ": this l3lab was built without its CUDA kernels (CMake L3LAB_CUDA; docs/cuda.md)");
}
}  // namespace

bool cuda_kernels_built() { return false; }
std::string cuda_device_name(int) { return "cuda"; }
void configure_cuda_training() {}
void cuda_synchronize() {}
int64_t cuda_peak_memory_bytes() { return 0; }
void cuda_reset_peak_memory() {}
void cuda_set_sync_errors(bool) {}

at::Tensor l3_segment_attention_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     const at::Tensor&, int64_t) {
    not_built("L3 segment attention on CUDA");
}

at::Tensor softcap_cross_entropy_cuda(const at::Tensor&, const at::Tensor&, int64_t, double) {
    not_built("soft-capped cross-entropy on CUDA");
}

at::Tensor rotary_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&) { not_built("rotary on CUDA"); }
at::Tensor relu_square_cuda(const at::Tensor&) { not_built("relu^2 on CUDA"); }
void adamw_step_cuda(at::Tensor&, const at::Tensor&, at::Tensor&, at::Tensor&, const AdamWStepScalars&) {
    not_built("the fused AdamW step on CUDA");
}

}  // namespace l3lab::modules
