// The one translation unit that names c10d::ProcessGroupGloo. The torch wheel compiles Gloo into
// libtorch_cpu.so but ships no gloo headers; ProcessGroupGloo.hpp includes five of them, which come from
// Debian's libgloo-dev (a 2022 gloo, older than the one in libtorch). That is sound because nothing here
// depends on what those headers define (docs/distributed.md, "Why declaring Gloo this way is sound"):
//   - the only functions called are libtorch's own, out of line and exported: Options::create_default()
//     (which builds the transport device inside libtorch) and the ProcessGroupGloo constructor; the object
//     is then used only through c10d::Backend's virtual functions and destroyed through its virtual
//     destructor, all resolved to libtorch's code;
//   - the one size this file computes, sizeof(ProcessGroupGloo) for the allocation, depends only on
//     libtorch's own header: every gloo type in the class sits behind a std::shared_ptr or std::unique_ptr;
//   - no gloo code is emitted or referenced here (nor anywhere in libl3lab_torch.so), and libgloo is not
//     linked, so nothing can take the place of libtorch's gloo.
// tests/dist/check_backend_abi.py checks all three on every build: the symbols of this object and of the
// module, and the allocation size against the one libtorch's own ProcessGroupGloo::split() uses.
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include "runner/torch/backends.h"

namespace l3lab::dist {

c10::intrusive_ptr<c10d::Backend> make_gloo_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                    std::chrono::milliseconds timeout) {
    c10::intrusive_ptr<c10d::ProcessGroupGloo::Options> options = c10d::ProcessGroupGloo::Options::create_default(timeout);
    return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, std::move(options));
}

}  // namespace l3lab::dist
