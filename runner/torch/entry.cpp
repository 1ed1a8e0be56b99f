// C entry points of libl3lab_torch.so beyond runtime_info (see runner/torch_module.h).
#include <malloc.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "runner/torch/distributed.h"
#include "runner/torch/trainer.h"

namespace {

// A training step allocates and frees the same large tensors every step (the logits alone are batch x T x
// vocabulary floats: 8 MB for the tiny benchmark model, 64 MB for the quickstart). glibc serves blocks
// above its mmap threshold with mmap and unmaps them at free, so every step page-faulted them in again:
// perf put 28% of a tiny-model step in the kernel (page faults, unmapping). Keeping freed memory in the
// heap for reuse (no mmap at all: glibc's threshold cannot exceed 32 MiB, below the quickstart's logits;
// a trim threshold of 1 GiB) made steps 1.6x (tiny) and 1.25x (quickstart) faster (docs/benchmarks.md).
// The cost: up to 1 GiB of freed memory stays with the process. The user's own MALLOC_*_ settings win.
void keep_freed_memory_for_reuse() {
    for (const char* name : {"MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"})
        if (std::getenv(name)) return;
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    mallopt(M_TOP_PAD, 256 << 20);
}

}  // namespace

extern "C" int l3lab_torch_train(const char* request_json) {
    keep_freed_memory_for_reuse();
    try {
        nlohmann::json j = nlohmann::json::parse(request_json);
        l3lab::train::TrainRequest request;
        request.run_dir = j.at("run_dir").get<std::string>();
        request.resume = j.value("resume", false);
        request.init_from = j.value("init_from", "");
        const int code = l3lab::train::run_training(request);
        if (code != 0 && l3lab::dist::active()) {
            // A failed data-parallel run exits at once: its process group may still have collectives
            // blocked on a dead peer, which destroying the group would wait out.
            std::cout.flush();
            std::cerr.flush();
            std::fflush(nullptr);
            std::_Exit(code);
        }
        return code;
    } catch (const std::exception& e) {
        std::cerr << "l3lab: error: bad training request: " << e.what() << "\n";
        return 1;
    }
}
