// `l3lab train` / `l3lab resume`, the part that needs libtorch: nanochat's base_train.py loop over an
// initialised run directory. Lives in libl3lab_torch.so; the executable prepares the run directory.
#pragma once

#include <string>

namespace l3lab::train {

struct TrainRequest {
    std::string run_dir;    // initialised: config.yaml, provenance.json, STATUS
    bool resume = false;    // continue from the newest complete checkpoint (from step 0 if none)
    std::string init_from;  // reference-named safetensors to start from (all tensors, L3 bounds included)
};

// Exit codes as PRODUCT.md §2: 0 done, 1 runtime failure, 2 config/data error, 3 interrupted after a
// checkpoint. Never throws; STATUS records the outcome.
int run_training(const TrainRequest& request);

}  // namespace l3lab::train
