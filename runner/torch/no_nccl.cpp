// make_nccl_backend() of a build without CUDA or without NCCL's headers (see nccl_backend.cpp).
#include <stdexcept>

#include "runner/torch/backends.h"

namespace l3lab::dist {

c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>&, int, int,
                                                    std::chrono::milliseconds, int) {
    throw std::runtime_error("data-parallel training on CUDA needs NCCL, and this build of l3lab has none "
                             "(libtorch without CUDA, or NCCL's headers not found at configure time)");
}

bool nccl_available() { return false; }

}  // namespace l3lab::dist
