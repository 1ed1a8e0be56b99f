// nanochat's checkpoint files (nanochat/checkpoint_manager.py at b7629ef): model_<step:06d>.pt, the
// model's state_dict as torch.save writes it (a zip archive with a pickle and the raw storages), and
// meta_<step:06d>.json. Written and read with libtorch's own serialization (torch::jit::Pickler and
// caffe2's PyTorchStreamWriter; torch::pickle_load), never a hand-written zip or pickle reader.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

namespace l3lab::nanochat {

bool is_directory_path(const std::string& path);

// Writes `tensors` (name -> tensor, in order) as torch.save(dict) would: Python's torch.load, with
// weights_only=True as nanochat calls it, returns a dict of these tensors.
void write_state_dict(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors);

// Reads a torch.save'd state_dict (dict or OrderedDict of tensors): names with the "_orig_mod." prefix of
// a torch.compile'd model stripped, as nanochat's build_model does. Throws std::runtime_error naming the
// file when it is not such a file.
std::vector<std::pair<std::string, at::Tensor>> read_state_dict(const std::string& path);

// Whether an --init-from path names a nanochat checkpoint (a directory or a .pt file) rather than
// l3lab's safetensors weights.
inline bool is_checkpoint_path(const std::string& path) {
    return path.size() > 3 && path.compare(path.size() - 3, 3, ".pt") == 0 ? true : is_directory_path(path);
}

// The model_<step>.pt of a nanochat checkpoint directory: `step` < 0 takes the largest step there (as
// nanochat's find_last_step). A path to a model_*.pt file is taken as it is. Throws std::runtime_error.
std::string model_file(const std::string& path_or_directory, long long step = -1);

}  // namespace l3lab::nanochat
