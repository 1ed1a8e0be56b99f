// nanochat's checkpoint files (nanochat/checkpoint_manager.py at b7629ef): model_<step:06d>.pt, the
// model's state_dict as torch.save writes it (a zip archive with a pickle and the raw storages), and
// meta_<step:06d>.json. Written and read with libtorch's own serialization (torch::jit::Pickler and
// caffe2's PyTorchStreamWriter; torch::pickle_load), never a hand-written zip or pickle reader. Which
// files: runner/train/nanochat_files.h.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

namespace l3lab::nanochat {

// Writes `tensors` (name -> tensor, in order) as torch.save(dict) would: Python's torch.load, with
// weights_only=True as nanochat calls it, returns a dict of these tensors.
void write_state_dict(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors);

// Reads a torch.save'd state_dict (dict or OrderedDict of tensors): names with the "_orig_mod." prefix of
// a torch.compile'd model stripped, as nanochat's build_model does. An OrderedDict, which libtorch's
// unpickler cannot read, is re-saved as a plain dict in a temporary file by the torch wheel's Python
// ($L3LAB_PYTHON, else the bootstrap's .venv). Throws std::runtime_error naming the file when it is not
// such a file, or is an OrderedDict and that Python cannot re-save it.
std::vector<std::pair<std::string, at::Tensor>> read_state_dict(const std::string& path);

}  // namespace l3lab::nanochat
