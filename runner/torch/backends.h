// The two c10d backends the trainer uses, each made in its own translation unit so that only
// gloo_backend.cpp sees ProcessGroupGloo.hpp (and Debian's gloo headers) and only nccl_backend.cpp sees
// ProcessGroupNCCL.hpp (and NCCL's). docs/distributed.md explains why declaring them this way is sound.
#pragma once

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>

namespace l3lab::dist {

// libtorch's c10d::ProcessGroupGloo on `store`, over TCP, with its default device (GLOO_SOCKET_IFNAME
// picks the interface); every collective gives up after `timeout`.
c10::intrusive_ptr<c10d::Backend> make_gloo_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                    std::chrono::milliseconds timeout);

// libtorch's c10d::ProcessGroupNCCL on `store` for CUDA device `device_index`; its watchdog ends the
// process when a collective exceeds `timeout`. Throws std::runtime_error when this build has no NCCL.
c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                    std::chrono::milliseconds timeout, int device_index);
bool nccl_available();

}  // namespace l3lab::dist
