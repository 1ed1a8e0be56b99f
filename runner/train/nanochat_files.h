// Where a nanochat checkpoint's files are (nanochat/checkpoint_manager.py): model_<step:06d>.pt and
// meta_<step:06d>.json in one directory. Torch-free: the CLI checks a checkpoint's meta before libtorch
// loads, and the torch module reads the model file these name.
#pragma once

#include <string>

namespace l3lab::train {

// Whether an --init-from path names a nanochat checkpoint (a directory or a .pt file) rather than
// l3lab's safetensors weights.
bool nanochat_init_path(const std::string& path);
// Whether `path` is a nanochat checkpoint: a model_*.pt file, or a directory holding one.
bool is_nanochat_checkpoint(const std::string& path);
// The model_<step>.pt of a nanochat checkpoint directory: `step` < 0 takes the largest step there (as
// nanochat's find_last_step). A path to a file is taken as it is. Throws std::runtime_error.
std::string nanochat_model_file(const std::string& path_or_directory, long long step = -1);
// meta_<step>.json beside model_<step>.pt.
std::string nanochat_meta_file(const std::string& model_file);

}  // namespace l3lab::train
